"""Modes found vs states visited on the battery task, with and without a replay buffer (issue 15).

CHGFlowNet on the battery task (``experiments/configs/chgflownet_battery.py``, ``default`` preset: GCN policy,
lr 1e-3, lr_z 0.1, 5 % uniform exploration, M3GNet Eform on the host) trains with the training loop of
``python -m experiments.train`` (:func:`hgfn_jax.gflownet.train.train_and_evaluate`, stopped after ``--iters``
updates, so no end-of-run sampling or evaluation suite runs) once per seed and variant:

- ``off``: on-policy TB, ``--batch`` fresh trajectories per update;
- ``uniform``: half of each update's batch replayed uniformly from a buffer (``train.replay``, capacity
  ``--capacity``), the batch doubled so that every update still draws ``--batch`` FRESH trajectories (the same
  number of reward calls per update as ``off``; replayed trajectories carry their stored log-reward, no new call);
- ``prioritized``: the same, drawn in proportion to reward (``prioritized=True``, ``beta=1``);
- ``ls``: local search (LS-GFN, greedy, K = 2: the last placement and the group choice before it are destroyed
  with P_B and rebuilt with P_F, ``envs/hierarchical/backward.py``), one search per fresh trajectory, with HALF the
  fresh batch so that an update again makes ``--batch`` reward calls (fresh + proposals). ``visited.jsonl``
  records the fresh and the KEPT searched states; a rejected proposal was evaluated but is not recorded (the kept
  state, its start, is recorded again), so local search's distinct modes are a slight undercount.

Every run records the terminal states it visits (``train.record_visited`` -> ``RUN_DIR/visited.jsonl``: fresh
states only, replayed ones are not re-counted), and :mod:`hgfn_jax.metrics.modes` counts the distinct states with
log-reward >= each of ``--thresholds`` by the number of states visited: 0 (R >= 1) is the evaluation report's
``--mode-threshold`` default, but ~80 % of the states the default-preset policy visits reach it, so 0.25 and 0.5
(about the top 15 % and the top 1 % of the no-replay seed-0 run's visits; the reward is capped at log 10 = 2.3)
are reported too.

Writes ``benchmarks/results/modes_replay_battery.json`` and ``docs/modes_replay_battery.png``.

    python -m benchmarks.modes_replay_battery [--quick] [--seeds 2] [--iters 100] [--variants off uniform]

The committed results: ``--seeds 2 --iters 120 --batch 16 --variants off uniform prioritized --workdir DIR``
(off and uniform trained first, prioritized added later with ``--reuse``, which re-reads the finished runs; ~50 min
of training on the shared 2-core CPU; --quick takes ~3 min, mostly compilation).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import device_name, record, write_results
from hgfn_jax.metrics.modes import modes_at, modes_curve, read_visited

DOCS = Path(__file__).resolve().parent.parent / "docs"
EXP = "chgflownet_battery"
VARIANTS = {  # name -> (replay overrides, fraction of the batch replayed)
    "off": {},
    "uniform": {"fraction": 0.5, "prioritized": False},
    "prioritized": {"fraction": 0.5, "prioritized": True, "beta": 1.0},
    "ls": {},
}
LOCAL_SEARCH = {"ls": {"enabled": True, "k": 2, "n_iters": 1, "accept": "greedy"}}


def overrides(variant: str, batch: int, iters: int, capacity: int, chunk: int) -> list[str]:
    """``--set`` items of one run: ``batch`` fresh trajectories per update whatever the replayed fraction."""
    rp = VARIANTS[variant]
    frac = float(rp.get("fraction", 0.0))
    total = int(round(batch / (1.0 - frac)))
    if variant in LOCAL_SEARCH:  # fresh + one proposal each: half the fresh batch, the same reward calls
        total = batch // 2
    # num_iterations beyond --iters: train_and_evaluate(stop_after=iters) then returns before the sampling /
    # evaluation and before any checkpoint (checkpoint_every = num_iterations; host-only fields, no recompile)
    n_total = chunk * (iters // chunk + 1)
    items = [f"train.batch_size={total}", f"train.steps_per_call={chunk}", f"train.num_iterations={n_total}",
             f"train.checkpoint_every={n_total}", "train.record_visited=True"]
    if rp:
        items += [f"train.replay.capacity={capacity}"] + [f"train.replay.{k}={v}" for k, v in rp.items()]
    items += [f"train.local_search.{k}={v}" for k, v in LOCAL_SEARCH.get(variant, {}).items()]
    return items


def local_search_refusal(cfg, env) -> str:
    """The loop's one-line refusal of local search on this environment ('' if it were accepted)."""
    from hgfn_jax.gflownet.offpolicy import settings

    tc = cfg.train.copy_and_resolve_references()
    tc.local_search.enabled = True
    try:
        settings(tc, env)
    except ValueError as exc:
        return str(exc)
    return ""


def run_one(task, variant: str, seed: int, args, root: Path) -> dict:
    from experiments.configs import get_config
    from experiments.train import apply_overrides
    from hgfn_jax.gflownet.train import train_and_evaluate
    from hgfn_jax.rundir.checkpoint import config_json

    items = overrides(variant, args.batch, args.iters, args.capacity, args.chunk) + [f"seed={seed}"]
    cfg = apply_overrides(get_config(EXP, args.preset), items)
    workdir = root / f"{variant}-seed{seed}"
    done = workdir / "bench_run.json"  # this script's note of a finished run: its training wall time
    if args.reuse and done.exists() and (workdir / "config.json").read_text() == config_json(cfg):
        note = json.loads(done.read_text())
        wall, load_end = float(note["wall_s"]), float(note["load_avg_1min_end"])
        print(f"{variant:>12} seed {seed}: reusing {workdir} (same config, {args.iters} updates)")
    else:
        t0 = time.perf_counter()
        out = train_and_evaluate(cfg, task, workdir, stop_after=args.iters, progress=False)
        wall = time.perf_counter() - t0
        assert out["summary"]["iterations"] == args.iters, out["summary"]
        load_end = os.getloadavg()[0]
        done.write_text(json.dumps({"wall_s": wall, "load_avg_1min_end": load_end}) + "\n")
    stream = read_visited(workdir / "visited.jsonl")
    if len(stream) != args.iters:
        raise RuntimeError(f"{workdir}: {len(stream)} iterations in visited.jsonl, expected {args.iters}")
    curves = {t: modes_curve(stream, t) for t in args.thresholds}
    curve = curves[args.thresholds[0]]
    log_r = np.concatenate([np.asarray(r, float) for _, r in stream])
    print(f"{variant:>12} seed {seed}: {int(curve['states_visited'][-1])} states visited, modes "
          + ", ".join(f"{int(c['modes'][-1])} (log R >= {t:g})" for t, c in curves.items())
          + f", {int(curve['distinct_states'][-1])} distinct, mean log R {log_r.mean():.3f}, {wall:.0f} s "
          f"(load {load_end:.2f} at its end)", flush=True)
    return {"variant": variant, "seed": seed, "set": items, "wall_s": wall,
            "states_visited": curve["states_visited"].tolist(),
            "modes": {f"{t:g}": c["modes"].tolist() for t, c in curves.items()},
            "distinct_states": curve["distinct_states"].tolist(), "mean_log_reward": float(log_r.mean()),
            "max_log_reward": float(log_r.max()),
            "log_reward_quantiles": dict(zip(("q10", "q50", "q90", "q99"),
                                             np.quantile(log_r, [0.1, 0.5, 0.9, 0.99]).tolist(), strict=True)),
            "load_avg_1min_end": load_end}


def summarise(runs: list[dict], variant: str, at: list[int], thresholds: list[float]) -> dict:
    """Per threshold: modes at the visited-state counts ``at``, mean and (population) std over seeds."""
    mine = [r for r in runs if r["variant"] == variant]
    per_t = {}
    for t in thresholds:
        curves = [{"states_visited": np.asarray(r["states_visited"]), "modes": np.asarray(r["modes"][f"{t:g}"])}
                  for r in mine]
        m = np.stack([modes_at(c, at) for c in curves]).astype(float)  # [seeds, points]
        per_t[f"{t:g}"] = {"modes_mean": m.mean(0).tolist(), "modes_std": m.std(0).tolist(),
                           "modes_per_seed": m.tolist(), "final_mean": float(m[:, -1].mean()),
                           "final_std": float(m[:, -1].std())}
    final_d = np.array([r["distinct_states"][-1] for r in mine], float)
    return {"seed_list": [r["seed"] for r in mine], "states": at, "by_threshold": per_t,
            "final_distinct_mean": float(final_d.mean()),
            "mean_log_reward": float(np.mean([r["mean_log_reward"] for r in mine])),
            "wall_s_per_seed": [r["wall_s"] for r in mine]}


def plot(summary: dict, meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = meta["thresholds"]
    fig, axes = plt.subplots(1, len(thresholds), figsize=(4.6 * len(thresholds), 4.0), squeeze=False)
    for ax, t in zip(axes[0], thresholds, strict=True):
        for name, s in summary.items():
            x = np.concatenate([[0], s["curve_states"]])
            m = np.concatenate([[0], s["curve_by_threshold"][f"{t:g}"]["mean"]])
            sd = np.concatenate([[0], s["curve_by_threshold"][f"{t:g}"]["std"]])
            label = {"off": "no replay", "uniform": "uniform replay (1/2 of batch)",
                     "prioritized": "prioritised replay (1/2 of batch)",
                     "ls": "local search (greedy, K = 2)"}[name]
            ax.plot(x, m, label=f"{label}, {len(s['seed_list'])} seeds")
            ax.fill_between(x, m - sd, m + sd, alpha=0.2)
        ax.set_xlabel("terminal states visited (fresh = reward evaluations)")
        ax.set_ylabel(f"distinct modes (log R >= {t:g})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"CHGFlowNet battery ({meta['preset']} preset), {meta['batch']} fresh states per update, "
                 f"{meta['iters']} updates; mean +- std over seeds. {meta['device']}, "
                 f"{meta['cpu_count']} cores, 1-min load {meta['run_load_range'][0]:.1f}-"
                 f"{meta['run_load_range'][1]:.1f} at the runs' ends, "
                 f"training {meta['train_seconds_sum'] / 60:.0f} min in all", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 4 updates of 8 (results not written)")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--iters", type=int, default=100, help="updates per run (a multiple of --chunk)")
    ap.add_argument("--batch", type=int, default=32, help="FRESH trajectories per update in every variant")
    ap.add_argument("--capacity", type=int, default=1000, help="replay buffer capacity (trajectories)")
    ap.add_argument("--chunk", type=int, default=5, help="updates per jitted call (train.steps_per_call)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.25, 0.5],
                    help="log-rewards of a mode (hgfn_jax.metrics.modes; 0 = the evaluation report's default)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--variants", nargs="*", default=["off", "uniform"], choices=list(VARIANTS))
    ap.add_argument("--points", type=int, default=5, help="visited-state counts summarised in the JSON")
    ap.add_argument("--workdir", default=None, help="keep the run directories here (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true",
                    help="with --workdir: re-read the finished runs of the same config there instead of training "
                         "them again (e.g. to summarise at other --thresholds)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.iters, args.batch, args.chunk, args.capacity = 1, 4, 8, 2, 64
    if args.iters % args.chunk:
        ap.error("--iters must be a multiple of --chunk")

    from experiments.configs import get_config
    from experiments.tasks import build_task
    from experiments.train import apply_overrides

    load_start = list(os.getloadavg())
    t0 = time.perf_counter()
    base = apply_overrides(get_config(EXP, args.preset), overrides("off", args.batch, args.iters, args.capacity,
                                                                    args.chunk))
    task = build_task(base)  # the replay settings do not change the task: one task, its compiled steps cached
    refusal = local_search_refusal(base, task.env)
    print(f"local search on {type(task.env).__name__}: {refusal or 'accepted'}")
    with tempfile.TemporaryDirectory(prefix="modes_replay_") as tmp:
        root = Path(args.workdir) if args.workdir else Path(tmp)
        # seeds outermost: an interrupted run still has every variant at the seeds it finished
        runs = [run_one(task, v, s, args, root) for s in range(args.seeds) for v in args.variants]
    total = time.perf_counter() - t0
    n_states = args.iters * args.batch
    at = sorted({int(round(f * n_states / args.batch)) * args.batch for f in np.linspace(0, 1, args.points + 1)[1:]})
    summary = {v: summarise(runs, v, at, args.thresholds) for v in args.variants}
    for v, s in summary.items():  # the whole curve (per update), mean and std over seeds, for the figure
        mine = [r for r in runs if r["variant"] == v]
        s["curve_states"] = mine[0]["states_visited"]
        s["curve_by_threshold"] = {k: {"mean": np.mean([r["modes"][k] for r in mine], 0).tolist(),
                                       "std": np.std([r["modes"][k] for r in mine], 0).tolist()}
                                   for k in mine[0]["modes"]}
    loads = [r["load_avg_1min_end"] for r in runs]  # 1-min load average at the end of each run
    meta = {"exp": EXP, "preset": args.preset, "batch": args.batch, "iters": args.iters, "n_seeds": args.seeds,
            "thresholds": args.thresholds, "capacity": args.capacity, "device": device_name(),
            "cpu_count": os.cpu_count(), "load_avg_start": load_start, "load_avg_end": list(os.getloadavg()),
            "total_seconds": total, "train_seconds_sum": float(sum(r["wall_s"] for r in runs)),
            "reused_runs": bool(args.reuse),
            "run_load_range": [min(loads), max(loads)], "local_search": refusal or "accepted"}
    records = []
    for v, s in summary.items():
        walls = s["wall_s_per_seed"]
        for t, b in s["by_threshold"].items():
            print(f"{v:>12}: modes (log R >= {t}) at {at} states = "
                  + ", ".join(f"{m:.1f} +- {sd:.1f}" for m, sd in zip(b["modes_mean"], b["modes_std"], strict=True)))
        # items/s: fresh states per second of training (the first seed's wall includes the compilation)
        records.append(record(f"modes_replay_battery/{v}", args.batch, float(np.mean(walls)) / args.iters, 0.0,
                              variant=v, set=overrides(v, args.batch, args.iters, args.capacity, args.chunk),
                              compile_note="compile_s not separated: the first seed's wall time includes it",
                              **s, config=meta))
    records.append({"benchmark": "modes_replay_battery/runs", "runs": runs, **meta})
    if args.quick:  # the figure goes to the temporary directory; nothing under benchmarks/ or docs/ is touched
        plot(summary, meta, Path(tempfile.gettempdir()) / "modes_replay_battery_quick.png")
        print("quick run: results not written")
        return {"summary": summary, "meta": meta}
    write_results("modes_replay_battery", records)
    plot(summary, meta, DOCS / "modes_replay_battery.png")
    print(f"total {total:.0f} s, load {load_start} -> {meta['load_avg_end']}")
    return {"summary": summary, "meta": meta}


if __name__ == "__main__":
    main()
