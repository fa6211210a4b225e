"""Shared timing and result-writing helpers for the benchmark scripts.

Every benchmark writes ``benchmarks/results/<name>.json``: a list of records with at least
``benchmark, batch, items_per_s, compile_s, device`` (and ``load_avg_1min``, the machine's load when the
record was taken). Compile time is measured apart (first call), then the
function is timed over repeated calls, blocking on the results.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_name() -> str:
    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", dev.platform)
    if dev.platform == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {jax.device_count()} device)"
    return f"{dev.platform} ({kind})"


def time_jax(fn: Callable[..., Any], *args, min_time: float = 1.0, max_reps: int = 1000) -> tuple[float, float]:
    """Returns (compile_s, seconds_per_call). The first call (tracing + compilation) is timed apart."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    reps, elapsed = 0, 0.0
    t0 = time.perf_counter()
    while elapsed < min_time and reps < max_reps:
        jax.block_until_ready(fn(*args))
        reps += 1
        elapsed = time.perf_counter() - t0
    return compile_s, elapsed / reps


def time_host(fn: Callable[[], Any], min_time: float = 1.0, max_reps: int = 1000) -> float:
    """Seconds per call of a plain Python function (no compilation)."""
    reps, elapsed = 0, 0.0
    t0 = time.perf_counter()
    while elapsed < min_time and reps < max_reps:
        fn()
        reps += 1
        elapsed = time.perf_counter() - t0
    return elapsed / reps


def record(benchmark: str, batch: int, seconds_per_call: float, compile_s: float, **extra) -> dict:
    rec = {
        "benchmark": benchmark,
        "batch": int(batch),
        "items_per_s": float(batch / seconds_per_call),
        "compile_s": float(compile_s),
        "device": device_name(),
        "seconds_per_call": float(seconds_per_call),
        "load_avg_1min": float(os.getloadavg()[0]),  # other work on the machine while this ran
    }
    rec.update(extra)
    print(json.dumps(rec))
    return rec


def write_results(name: str, records: list[dict]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(records, indent=2) + "\n")
    print(f"wrote {path} ({len(records)} records)")
    return path
