"""Mode discovery with and without local search (LS-GFN, Kim et al. 2024) and a replay buffer, on a hypergrid.

The hypergrid (``--ndim`` x ``--side``, reward with ``r0 = --r0``): its "modes" here are the distinct states of
maximal reward (``r0 + r1 + r2``: one coordinate value per side of each dimension, ``2**ndim`` states). Four
variants train TB through the one training loop (``make_train``), all with the same number of terminal states
VISITED (reward evaluations) per update, ``--visits``:

- ``plain``: ``batch_size = visits`` on-policy trajectories;
- ``ls``: ``visits / 2`` on-policy trajectories + their local-search refinements (greedy, ``k``, one iteration);
- ``replay``: ``visits`` on-policy + ``visits`` replayed (prioritised ∝ R), ``batch_size = 2 visits``;
- ``ls+replay``: ``visits / 2`` on-policy + their refinements + ``visits / 2`` replayed.

A mode counts as found at the first update whose fresh or searched (accepted) trajectories reach it (the loop's
per-term reward metrics; replayed states were found earlier; a rejected proposal is not counted, which can only
undercount local search). Seeds run in one ``vmap`` of ``train``. Writes ``benchmarks/results/local_search.json``:
per variant the modes found after each visit budget (mean, std over seeds) and the wall time.

    python -m benchmarks.bench_local_search [--iters 1500 --seeds 3 --ndim 4 --side 12 --r0 1e-3]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from benchmarks.common import RESULTS_DIR, device_name
from hgfn_jax.envs.toy.hypergrid import HyperGrid, hypergrid_log_reward
from hgfn_jax.gflownet.train import Task, make_train
from hgfn_jax.policies.mlp import make_mlp_policy


def max_reward_states(env: HyperGrid, r0: float) -> np.ndarray:
    """``[M, D]`` the states of maximal reward, by enumeration of the reward over the grid."""
    pos = env.all_terminal_positions()
    log_r = np.asarray(jax.jit(jax.vmap(lambda p: hypergrid_log_reward(p, env.side, r0=r0)))(jnp.asarray(pos)))
    return pos[log_r >= log_r.max() - 1e-6]


def make_task(env: HyperGrid, r0: float, modes: np.ndarray, hidden) -> Task:
    modes_j = jnp.asarray(modes, jnp.int32)

    def log_reward(state):
        hit = jnp.all(state.pos[None, :] == modes_j, axis=1)  # [M]
        return hypergrid_log_reward(state.pos, env.side, r0=r0), {f"mode{j:02d}": hit[j] for j in range(len(modes))}

    return Task("hypergrid", env, make_mlp_policy(env, hidden=hidden), log_reward)


# name: (replay, local search)
VARIANTS = {"plain": (False, False), "ls": (False, True), "replay": (True, False), "ls+replay": (True, True)}


def config(variant: str, visits: int, iters: int, k: int, lr: float, capacity: int) -> ml_collections.ConfigDict:
    rep, ls = VARIANTS[variant]
    fresh = visits // 2 if ls else visits  # with local search each fresh trajectory adds one searched one
    n_replay = fresh if rep else 0  # batch_size - round(fraction * batch_size) = fresh
    batch = fresh + n_replay
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.train = ml_collections.ConfigDict(dict(
        batch_size=batch, lr=lr, lr_z=0.1, num_iterations=iters, epsilon=0.05, temperature=1.0, loss="tb",
        replay=dict(capacity=capacity if rep else 0, fraction=n_replay / batch, prioritized=True, beta=1.0),
        local_search=dict(enabled=ls, k=k, n_iters=1, accept="greedy")))
    return c


def run_variant(variant, env, task, args):
    cfg = config(variant, args.visits, args.iters, args.k, args.lr, args.capacity)
    fns = make_train(cfg, task)
    keys = jax.random.split(jax.random.PRNGKey(args.seed0), args.seeds)
    t0 = time.perf_counter()
    _, metrics = jax.block_until_ready(jax.jit(jax.vmap(fns.train))(keys))
    wall = time.perf_counter() - t0
    names = sorted(k for k in metrics if k.startswith("reward/mode"))
    hit = np.stack([np.asarray(metrics[k]) > 0 for k in names], axis=-1)  # [seeds, iters, M]
    found = np.cumsum(hit, axis=1) > 0  # [seeds, iters, M]
    n_found = found.sum(-1)  # [seeds, iters]
    checkpoints = sorted({max(1, int(f * args.iters / 20)) for f in range(1, 21)})
    rows = []
    for it in checkpoints:
        x = n_found[:, it - 1]
        rows.append({"updates": it, "states_visited": it * args.visits, "modes_found_mean": float(x.mean()),
                     "modes_found_std": float(x.std()), "per_seed": x.tolist()})
    # states visited until half / all of the modes were found (per seed; None: not within the run)
    def first(need):
        out = []
        for seed_n in n_found:
            at = np.nonzero(seed_n >= need)[0]
            out.append(int((at[0] + 1) * args.visits) if at.size else None)
        return out

    m = hit.shape[-1]
    extra = {"states_to_half_modes": first((m + 1) // 2), "states_to_all_modes": first(m)}
    if "ls/accept_rate" in metrics:
        extra["ls_accept_rate_mean"] = float(np.mean(metrics["ls/accept_rate"]))
    return {"variant": variant, "batch_size": int(cfg.train.batch_size),
            "replay_fraction": float(cfg.train.replay.fraction), "curve": rows,
            "log_reward_mean_last100": float(np.mean(np.asarray(metrics["log_reward_mean"])[:, -100:])),
            "wall_s_all_seeds": wall, **extra}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ndim", type=int, default=4)
    ap.add_argument("--side", type=int, default=12)
    ap.add_argument("--r0", type=float, default=1e-3)
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed0", type=int, default=0)
    ap.add_argument("--visits", type=int, default=32, help="terminal states visited per update (every variant)")
    ap.add_argument("--k", type=int, default=8, help="local search: destroyed steps")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    ap.add_argument("--capacity", type=int, default=4096)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--out", default=str(RESULTS_DIR / "local_search.json"))
    args = ap.parse_args(argv)

    env = HyperGrid(args.ndim, args.side)
    modes = max_reward_states(env, args.r0)
    task = make_task(env, args.r0, modes, tuple(args.hidden))
    load = os.getloadavg()
    results = []
    for variant in args.variants:
        res = run_variant(variant, env, task, args)
        last = res["curve"][-1]
        print(f"{variant:10s} modes found {last['modes_found_mean']:.2f} +- {last['modes_found_std']:.2f} of "
              f"{len(modes)} after {last['states_visited']} states ({res['wall_s_all_seeds']:.0f} s)", flush=True)
        results.append(res)
    out = {"benchmark": "local_search_mode_discovery", "device": device_name(),
           "load_avg_1_5_15_at_start": list(load), "cpu_count": os.cpu_count(),
           "settings": {**vars(args), "num_modes": int(len(modes)), "modes": modes.tolist()}, "results": results}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
