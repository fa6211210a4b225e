"""Learning curves of the training objectives on the hypergrid, by EXACT total variation (issue 15).

TB, DB, SubTB(0.9), FL-DB, MDB (every grid point's reward as the intermediate energy / the stop reward),
TB + replay (prioritised, half of each batch replayed) and TB + local search (greedy, K = 2, 2 iterations) train
on the 2-D side-8 hypergrid (the setting of ``tests/gflownet/test_objectives_hypergrid.py``: batch 64, MLP
64x64, lr 3e-3, lr_z 0.1, epsilon 0.1; 1,500 updates) and on the 4-D side-8 one (4,096 states, same
hyper-parameters, 2,000 updates), three seeds each, the seeds vmapped through the pure ``make_train`` functions.
Every ``--every`` updates the exact terminal distribution of each seed's P_F (``gflownet.diagnostics``, dynamic
programming over the grid: no sampling noise) is compared with R / Z.
Wall time counts the training chunks only (compiled ahead of time; the TV evaluations are not timed) and is the
time of the three vmapped seeds together.

Writes ``benchmarks/results/objective_curves.json`` and ``docs/objective_curves.png``.

    python -m benchmarks.objective_curves [--quick] [--seeds 3] [--variants TB DB ...]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks.common import RESULTS_DIR, device_name
from hgfn_jax.envs.toy.hypergrid import HyperGrid, hypergrid_enumerable, hypergrid_log_reward
from hgfn_jax.gflownet.diagnostics import total_variation
from hgfn_jax.gflownet.train import Task, make_train
from hgfn_jax.policies.mlp import make_mlp_policy

DOCS = Path(__file__).resolve().parent.parent / "docs"

VARIANTS = {  # name -> train-config overrides
    "TB": dict(loss="tb"),
    "DB": dict(loss="db"),
    "SubTB(0.9)": dict(loss="subtb", subtb_lambda=0.9),
    "FL-DB": dict(loss="fldb"),
    "MDB": dict(loss="mdb"),
    "TB + replay": dict(loss="tb", replay=dict(capacity=1000, fraction=0.5, prioritized=True)),
    "TB + local search": dict(loss="tb", local_search=dict(enabled=True, k=2, n_iters=2, accept="greedy")),
}


def _config(overrides: dict, iters: int) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.train = ml_collections.ConfigDict(dict(batch_size=64, lr=3e-3, lr_z=0.1, num_iterations=iters, epsilon=0.1,
                                             temperature=1.0, **overrides))
    return c


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run_variant(name: str, env: HyperGrid, task: Task, iters: int, every: int, seeds: int) -> dict:
    fns = make_train(_config(VARIANTS[name], iters), task)
    target = task.enumerable
    keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(seeds))
    ts = jax.jit(jax.vmap(fns.init))(keys)
    chunk = jax.jit(jax.vmap(lambda s: fns.run_chunk(s, every)[0])).lower(ts).compile()  # compile apart
    tv_fn = jax.jit(jax.vmap(lambda p: total_variation(target.terminal_distribution(p["policy"]), target.target)))
    log_z_err = lambda s: np.asarray(s.params["log_z"]) - float(target.log_z)  # noqa: E731
    steps, wall, tvs, zerr = [0], [0.0], [np.asarray(tv_fn(ts.params))], [log_z_err(ts)]
    elapsed = 0.0
    for step in range(every, iters + 1, every):
        t0 = time.perf_counter()
        ts = jax.block_until_ready(chunk(ts))
        elapsed += time.perf_counter() - t0
        steps.append(step)
        wall.append(elapsed)
        tvs.append(np.asarray(tv_fn(ts.params)))
        zerr.append(log_z_err(ts))
    tvs, zerr = np.stack(tvs, 1), np.stack(zerr, 1)  # [seeds, points]
    print(f"{name:>18}: final TV {tvs[:, -1].mean():.4f} +- {tvs[:, -1].std():.4f}, {elapsed:.1f} s "
          f"for {iters} updates x {seeds} seeds")
    return {"variant": name, "overrides": VARIANTS[name], "steps": steps, "wall_s": wall,
            "tv_per_seed": tvs.tolist(), "tv_mean": tvs.mean(0).tolist(), "tv_std": tvs.std(0).tolist(),
            "log_z_error_per_seed": zerr.tolist(), "train_seconds": elapsed}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["settings"]
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 3.8 * len(rows)), squeeze=False)
    for row, res in zip(axes, rows, strict=True):
        c = res["setting"]
        for r in res["curves"]:
            m, s = np.asarray(r["tv_mean"]), np.asarray(r["tv_std"])
            for ax, x in zip(row, (r["steps"], r["wall_s"]), strict=True):
                ax.plot(x, m, label=r["variant"])
                ax.fill_between(x, np.maximum(m - s, 1e-4), m + s, alpha=0.2)
        row[0].set_xlabel("updates")
        row[1].set_xlabel(f"training wall time of {c['seeds']} vmapped seeds (s)")
        row[0].set_ylabel("exact TV(P_F terminal, R/Z)")
        for ax in row:
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            ax.set_title(f"hypergrid {c['ndim']}-D side {c['side']} ({c['side'] ** c['ndim']} states), batch 64",
                         fontsize=9)
        row[0].legend(fontsize=8)
    load = results["load_avg_start"]
    fig.suptitle(f"mean +- std over seeds; {results['device']}, {results['cpu_count']} cores, "
                 f"load {load[0] if load else '?'} at start", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


SETTINGS = ((2, 8, 1500, 50), (4, 8, 2000, 100))  # (ndim, side, updates, evaluate every)


def main(settings=SETTINGS, seeds: int = 3, variants: list[str] | None = None) -> dict:
    results = {"device": device_name(), "cpu_count": os.cpu_count(), "load_avg_start": _load(), "settings": []}
    t0 = time.perf_counter()
    for ndim, side, iters, every in settings:
        env = HyperGrid(ndim=ndim, side=side)
        policy = make_mlp_policy(env, hidden=(64, 64))
        log_reward = lambda s, env=env: (hypergrid_log_reward(s.pos, env.side), {})  # noqa: E731
        task = Task("hypergrid", env, policy, log_reward,
                    enumerable=hypergrid_enumerable(env, policy.apply, log_reward),
                    state_log_reward=lambda s, env=env: hypergrid_log_reward(s.pos, env.side))
        print(f"hypergrid {ndim}-D side {side}, {iters} updates, {seeds} seeds")
        res = {"setting": dict(ndim=ndim, side=side, iters=iters, every=every, seeds=seeds, batch_size=64,
                               hidden=[64, 64], lr=3e-3, lr_z=0.1, epsilon=0.1, log_z=float(task.enumerable.log_z)),
               "curves": [run_variant(name, env, task, iters, every, seeds) for name in variants or list(VARIANTS)]}
        results["settings"].append(res)
    results["load_avg_end"] = _load()
    results["total_seconds"] = time.perf_counter() - t0
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "objective_curves.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, DOCS / "objective_curves.png")
    print(f"total {results['total_seconds']:.0f} s, load {results['load_avg_start']} -> {results['load_avg_end']}")
    return results


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 / 200 updates (a smoke run)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", nargs="*", default=None, help=f"subset of {list(VARIANTS)}")
    a = ap.parse_args()
    main(((2, 8, 100, 50), (4, 8, 200, 100)) if a.quick else SETTINGS, a.seeds, a.variants)
