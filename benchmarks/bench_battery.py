"""End-to-end throughput of the battery experiments WITH the energy model (M3GNet: host callback or in-graph).

For CHGFlowNet, SHAFT and the flat baseline (their ``default`` configs: encoder, T, reward as trained):

- ``<exp>_sample_and_reward``: one jitted call that samples ``batch`` trajectories with the policy and
  evaluates the full composite reward (M3GNet formation energy on the host) on the terminal crystals;
- ``<exp>_train_update``: one trajectory-balance update of ``batch`` trajectories (rollout, reward, gradient,
  Adam), the unit of training; ``items_per_s`` counts trajectories.

Each twice: with the energy through the host callback (``reward.energy_backend=host``, the reference; record names
as above) and computed in-graph by the JAX model (``energy_backend=jax``, ``hgfn_jax.models.in_graph``; names with
the suffix ``_jax_energy``), in the same run, so the two rates are comparable.

The energy-excluded sampler rates are in ``bench_hierarchical.py``. Results: ``benchmarks/results/battery.json``.
Run: ``python -m benchmarks.bench_battery [--quick] [--batches=32,256] [exp ...]`` (default: all three at batch
32 and 256 (issue 13's target batch); ``--quick``: batch 32 only).
The in-graph records also carry the batch's ``energy_valid`` share and ``energy_over_capacity`` (cells refused
by the site buckets of ``hgfn_jax.crystal.site_buckets``).
"""

from __future__ import annotations

import json

import jax

from benchmarks.common import RESULTS_DIR, record, time_jax, write_results

EXPERIMENTS = ("chgflownet_battery", "shaft_battery", "gfn_flat_battery")


def main(quick: bool = False, experiments=EXPERIMENTS, batches=None):
    from experiments.configs import get_config
    from experiments.tasks import build_task
    from hgfn_jax.gflownet.env import Exploration
    from hgfn_jax.gflownet.rollout import rollout
    from hgfn_jax.gflownet.train import make_train

    batches = tuple(batches or ((32,) if quick else (32, 256)))
    records = []
    for exp in experiments:
        for backend in ("host", "jax"):
            cfg = get_config(exp, "default")
            cfg.reward.energy_backend = backend
            suffix = "" if backend == "host" else "_jax_energy"
            task = build_task(cfg)
            v_reward = jax.vmap(task.log_reward)
            info = dict(energy_model=cfg.reward.energy_model, energy_backend=backend, encoder=cfg.policy.encoder,
                        num_steps=cfg.env.num_steps)
            for b in batches:
                cfg.train.batch_size = b
                init, update, *_ = make_train(cfg, task)
                ts = init(jax.random.PRNGKey(0))

                def sample_and_reward(params, key, b=b, task=task, v_reward=v_reward):
                    final = rollout(key, task.env, task.policy.apply, params["policy"], b,
                                    Exploration.make(0.0)).final
                    return v_reward(final)[0]

                c, s = time_jax(jax.jit(sample_and_reward), ts.params, jax.random.PRNGKey(1), min_time=5.0,
                                max_reps=20)
                records.append(record(f"{exp}_sample_and_reward{suffix}", b, s, c, unit="trajectories", **info))
                step = jax.jit(update)
                c, s = time_jax(step, ts, min_time=5.0, max_reps=20)
                metrics = step(ts)[1]  # the energy's valid share (and, in-graph, the bucket refusals) of one batch
                shares = {k.removeprefix("reward/"): float(metrics[k]) for k in
                          ("reward/energy_valid", "reward/energy_over_capacity") if k in metrics}
                records.append(record(f"{exp}_train_update{suffix}", b, s, c, unit="trajectories",
                                      updates_per_s=1.0 / s, **shares, **info))
                print(records[-2]["benchmark"], b, f"{records[-2]['items_per_s']:.1f}/s;",
                      records[-1]["benchmark"], f"{records[-1]['updates_per_s']:.2f} updates/s", flush=True)
    # records of experiments / batches not run this time are kept (a partial run updates its own rows)
    path = RESULTS_DIR / "battery.json"
    done = {(r["benchmark"], r["batch"]) for r in records}
    old = json.loads(path.read_text()) if path.exists() else []
    kept = [r for r in old if (r["benchmark"], r["batch"]) not in done]
    write_results("battery", kept + records)
    return records


if __name__ == "__main__":
    import sys

    args = [a for a in sys.argv[1:] if a != "--quick" and not a.startswith("--batches=")]
    sizes = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--batches=")]
    main(quick="--quick" in sys.argv[1:], experiments=tuple(args) or EXPERIMENTS,
         batches=tuple(int(b) for b in sizes[0].split(",")) if sizes else None)
