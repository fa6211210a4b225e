"""``benchmarks.bench_gfnx_reference`` where gfnx is not installed (the usual case: gfnx lives in its own venv): it
says why, exits 0 and writes no results, so ``run_all`` and a fresh checkout never fail or lose the committed
numbers over a missing optional library. Needs neither gfnx nor its baselines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import bench_gfnx_reference as bench

ROOT = Path(__file__).resolve().parents[1]


def test_missing_gfnx_python_exits_cleanly_without_writing(tmp_path):
    results = ROOT / "benchmarks" / "results" / "gfnx_reference.json"
    before = results.stat().st_mtime_ns if results.exists() else None
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_gfnx_reference", "--gfnx-python",
                          str(tmp_path / "no_such_python")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cannot run" in out.stdout and "nothing written" in out.stdout
    assert (results.stat().st_mtime_ns if results.exists() else None) == before


def test_python_without_gfnx_is_skipped(capsys):
    # this venv has no gfnx: the probe fails on the import and main returns before building anything
    assert bench.main((sys.executable,)) == []
    out = capsys.readouterr().out
    assert "cannot import gfnx" in out and "nothing written" in out
