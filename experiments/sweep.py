"""Seeds x learning-rate sweeps in ONE compiled program (purejaxrl style: ``train(rng, lr, lr_z)`` is pure, so it
is vmapped over the grid).

    python -m experiments.sweep --exp hypergrid --seeds 0,1,2 --lr 1e-3,3e-3 --lr-z 0.1

Writes ``<workdir>/sweep.json`` (final loss, log Z, mean log-reward per grid point; per-iteration curves in
``sweep_curves.npz``) and a plot of the loss curves ``sweep_loss.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import PRESETS, available, get_config
from experiments.train import apply_overrides


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x]


def run_sweep(cfg, seeds: list[int], lrs: list[float], lr_zs: list[float], devices: int | None = None):
    """Every (seed, lr, lr_z) of the grid trained in one vmapped program; ``devices`` > 1 splits the grid over that
    many devices (independent runs on different devices; the grid size must be a multiple)."""
    from experiments.tasks import build_task
    from hgfn_jax.gflownet.sharding import check_divisible, data_mesh, split_leading
    from hgfn_jax.gflownet.train import make_train

    task = build_task(cfg)
    _, _, _, train, _ = make_train(cfg, task, record_visited=False)  # no per-state arrays in a vmapped sweep
    grid = list(itertools.product(seeds, lrs, lr_zs))
    rngs = jnp.stack([jax.random.PRNGKey(s) for s, _, _ in grid])
    lr_arr = jnp.asarray([g[1] for g in grid], jnp.float32)
    lrz_arr = jnp.asarray([g[2] for g in grid], jnp.float32)
    mesh = data_mesh(devices)
    check_divisible(len(grid), mesh, "the sweep grid (seeds x lr x lr_z)")
    rngs, lr_arr, lrz_arr = split_leading((rngs, lr_arr, lrz_arr), mesh)
    t0 = time.perf_counter()
    ts, metrics = jax.block_until_ready(jax.jit(jax.vmap(train))(rngs, lr_arr, lrz_arr))
    seconds = time.perf_counter() - t0
    metrics = jax.device_get(metrics)
    tail = max(1, metrics["loss"].shape[1] // 10)
    results = [
        {
            "seed": s, "lr": lr, "lr_z": lrz,
            "final_loss": float(np.mean(metrics["loss"][i, -tail:])),
            "final_log_z": float(metrics["log_z"][i, -1]),
            "final_log_reward_mean": float(np.mean(metrics["log_reward_mean"][i, -tail:])),
        }
        for i, (s, lr, lrz) in enumerate(grid)
    ]
    return results, metrics, seconds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp", default="hypergrid", help=f"one of: {', '.join(available())}")
    ap.add_argument("--preset", default="default", choices=PRESETS)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--lr", default=None, help="comma-separated policy learning rates (default: the config's)")
    ap.add_argument("--lr-z", default=None, help="comma-separated log Z learning rates (default: the config's)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--devices", type=int, default=None, help="split the grid over N devices")
    args = ap.parse_args(argv)

    cfg = apply_overrides(get_config(args.exp, args.preset), args.overrides)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    lrs = _floats(args.lr) if args.lr else [float(cfg.train.lr)]
    lr_zs = _floats(args.lr_z) if args.lr_z else [float(cfg.train.lr_z)]
    results, metrics, seconds = run_sweep(cfg, seeds, lrs, lr_zs, args.devices)

    workdir = Path(args.workdir or f"runs/sweep-{args.exp}-{args.preset}")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "sweep.json").write_text(json.dumps({"seconds": seconds, "runs": results}, indent=2) + "\n")
    np.savez_compressed(workdir / "sweep_curves.npz", **{k.replace("/", "__"): v for k, v in metrics.items()})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, r in enumerate(results):
        ax.plot(metrics["loss"][i], lw=0.8, label=f"seed {r['seed']} lr {r['lr']:g} lr_z {r['lr_z']:g}")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("TB loss")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(workdir / "sweep_loss.png", dpi=120)
    for r in results:
        print(json.dumps(r))
    print(f"{len(results)} runs in {seconds:.1f} s (one compiled, vmapped program); results in {workdir}")


if __name__ == "__main__":
    main()
