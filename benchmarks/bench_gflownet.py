"""Throughput of the shared rollout + trajectory-balance update on the hypergrid toy (machinery overhead)."""

from __future__ import annotations

import jax

from benchmarks.common import record, time_jax, write_results
from experiments.configs import get_config
from experiments.tasks import build_task
from hgfn_jax.gflownet.env import Exploration
from hgfn_jax.gflownet.rollout import init_states, rollout
from hgfn_jax.gflownet.train import make_train


def main(quick: bool = False):
    records = []
    cfg = get_config("hypergrid", "default")
    task = build_task(cfg)
    params = task.policy.init(jax.random.PRNGKey(0), init_states(task.env, 2))
    explore = Exploration.make(0.0, 1.0)
    for batch in ([1, 64, 1024] if quick else [1, 16, 256, 1024, 4096]):
        fn = jax.jit(lambda k, b=batch: rollout(k, task.env, task.policy.apply, params, b, explore).final)
        compile_s, sec = time_jax(fn, jax.random.PRNGKey(1), min_time=0.5 if quick else 2.0)
        records.append(record("hypergrid_rollout", batch, sec, compile_s, unit="trajectories",
                              env="hypergrid(2, 8)", policy="MLP 64x64", max_steps=task.env.max_steps))
    for batch in ([64] if quick else [16, 64, 256]):
        cfg.train.batch_size = batch
        init, update, _, _, _ = make_train(cfg, task)
        ts = init(jax.random.PRNGKey(0))
        step = jax.jit(lambda s, upd=update: upd(s)[0])
        compile_s, sec = time_jax(step, ts, min_time=0.5 if quick else 2.0)
        records.append(record("hypergrid_tb_update", batch, sec, compile_s, unit="trajectories"))
    write_results("gflownet", records)


if __name__ == "__main__":
    main()
