"""Updates per second of each training objective through the one training loop: TB, DB, SubTB, FL-DB and MDB on
the hypergrid 8x8x8x8 (batch 64, MLP 64x64; every grid point has a reward, so FL-DB and MDB apply), TB, DB and
SubTB on the Crystal-GFN paper preset (10 trajectories per update, 3 x 256 MLPs, learned P_B, density reward; no
intermediate energies and not every state can stop, so FL-DB and MDB are refused there).
One record per (task, objective); compile time is measured apart (first call), the timed calls run a jitted chunk
of updates and block on the resulting state, round-robin over the objectives (median of ``rounds``); the machine
load at the start of the timing is recorded.

    python -m benchmarks.bench_objectives [--quick]
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from benchmarks.common import record, write_results
from experiments.configs import get_config
from experiments.tasks import build_task
from hgfn_jax.gflownet.train import make_train

OBJECTIVES = ("tb", "db", "subtb", "fldb", "mdb")


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"loadavg {one:.2f} / {five:.2f} (1 / 5 min) on {os.cpu_count()} cores at start"
    except OSError:
        return "unknown"


def compile_objectives(cfg, n_updates: int, objectives=OBJECTIVES) -> tuple[dict, dict, dict]:
    """One jitted chunk of ``n_updates`` updates per objective, from a fixed initial state (every call restarts from
    it), each compiled by a first call that is timed apart. Returns (fns, states, compile_s), keyed by objective;
    ``fns[loss](states[loss])`` runs one chunk (also used by ``bench_gfnx_reference``)."""
    task = build_task(cfg)
    fns, states, compile_s = {}, {}, {}
    for loss in objectives:
        cfg.train.loss = loss
        cfg.train.subtb_lambda = 0.9
        init, _, run_chunk, _, _ = make_train(cfg, task)
        fns[loss] = jax.jit(lambda ts, rc=run_chunk: rc(ts, n_updates)[0])
        states[loss] = init(jax.random.PRNGKey(0))
        t0 = time.perf_counter()
        jax.block_until_ready(fns[loss](states[loss]))  # first call: tracing + compilation (+ one chunk)
        compile_s[loss] = time.perf_counter() - t0
    return fns, states, compile_s


def hypergrid_8x8x8x8_config():
    """The hypergrid default preset (batch 64, MLP 64x64, uniform P_B) on 8x8x8x8: 4096 terminal states,
    trajectories of up to 29 steps."""
    cfg = get_config("hypergrid", "default")
    cfg.env.ndim, cfg.env.side = 4, 8
    return cfg


def _bench(cfg, task_name: str, n_updates: int, rounds: int, objectives=OBJECTIVES) -> list[dict]:
    """Compiles the objectives' chunks first (timed apart), then times them round-robin ``rounds`` times and
    keeps the median per objective: on a machine shared with other jobs, load drifts over minutes, and timing one
    objective after the other would turn that drift into a difference between objectives."""
    fns, states, compile_s = compile_objectives(cfg, n_updates, objectives)
    load = _load()
    times = {loss: [] for loss in objectives}
    for _ in range(rounds):
        for loss in objectives:
            t0 = time.perf_counter()
            jax.block_until_ready(fns[loss](states[loss]))
            times[loss].append(time.perf_counter() - t0)
    records = []
    for loss in objectives:
        per_call = float(np.median(times[loss]))
        records.append(record(f"objectives_{task_name}_{loss}", int(cfg.train.batch_size), per_call / n_updates,
                              compile_s[loss], unit="trajectories (one update = batch trajectories)", objective=loss,
                              updates_per_s=n_updates / per_call, updates_per_call=n_updates, rounds=rounds,
                              seconds_per_call_all=times[loss], machine_load=load,
                              subtb_lambda=0.9 if loss == "subtb" else None))
    return records


def main(quick: bool = False) -> list[dict]:
    records = []
    records += _bench(hypergrid_8x8x8x8_config(), "hypergrid_8x8x8x8", 20 if quick else 200, 2 if quick else 5)
    cfg = get_config("crystal_gfn_density", "paper")  # density: exact reward, no proxy training needed
    records += _bench(cfg, "crystal_gfn_paper", 20 if quick else 100, 2 if quick else 5, ("tb", "db", "subtb"))
    write_results("objectives", records)
    return records


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    main(quick=ap.parse_args().quick)
