"""Crystal-GFN rollout throughput: trajectories per second of the full environment (space group ->
composition -> lattice) with a random policy (uniform logits, zero network cost) and with an untrained
3 x 256 MLP policy (paper 001 App. B), at several batch sizes. Compile time is measured apart.

Profile (kept in the output, record ``crystal_gfn_rollout_parts``): the random-policy rollout's batched
environment entry points (``sample_action_batch``, ``log_pf_batch``, ``step_batch``, ``log_pb_batch``) timed
one by one on the states of every step of one batch of trajectories, summed over the steps: where a rollout's
time goes (the sum leaves out the scan's own overhead and the fusion across parts).

Run: ``python -m benchmarks.bench_crystal_gfn`` (``main(quick=True)`` for a short run). Writes
``benchmarks/results/crystal_gfn.json``. Reference: the Mila gflownet implementation samples ~140 trajectories/s.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.common import record, time_jax, write_results
from hgfn_jax.envs.crystal_gfn import CrystalGFN
from hgfn_jax.gflownet.env import Exploration
from hgfn_jax.gflownet.rollout import init_states, rollout


class _MLP(nn.Module):
    fwd_dim: int
    bwd_dim: int

    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(self.fwd_dim)(x), nn.Dense(self.bwd_dim)(x)


def profile_parts(env: CrystalGFN, batch: int, explore: Exploration, reps: int = 5) -> dict:
    """Milliseconds per rollout spent in each batched entry point (random policy), summed over the steps."""
    import time

    def zero(params, states):
        b = states.stage.shape[0]
        return jnp.zeros((b, env.fwd_dim)), jnp.zeros((b, env.bwd_dim))

    traj = jax.jit(lambda k: rollout(k, env, zero, None, batch, explore, return_states=True))(jax.random.PRNGKey(3))
    fwd, bwd = zero(None, traj.final)
    keys = jax.random.split(jax.random.PRNGKey(0), batch)
    parts = {
        "sample_action_batch": jax.jit(lambda s, a, s1: env.sample_action_batch(keys, fwd, s, explore)),
        "log_pf_batch": jax.jit(lambda s, a, s1: env.log_pf_batch(fwd, s, a)),
        "step_batch": jax.jit(lambda s, a, s1: env.step_batch(s, a)),
        "log_pb_batch": jax.jit(lambda s, a, s1: env.log_pb_batch(bwd, s1, a, s)),
    }
    n_steps = int(jnp.max(traj.length))
    out = {name: 0.0 for name in parts}
    for t in range(n_steps):
        s = jax.tree.map(lambda x, t=t: x[:, t], traj.states)
        a = jax.tree.map(lambda x, t=t: x[:, t], traj.actions)
        s1 = traj.final if t + 1 >= traj.step_mask.shape[1] else jax.tree.map(lambda x, t=t: x[:, t + 1], traj.states)
        for name, fn in parts.items():
            jax.block_until_ready(fn(s, a, s1))
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(s, a, s1))
                best = min(best, time.perf_counter() - t0)
            out[name] += 1e3 * best
    stages = jnp.asarray(traj.states.stage[:, :n_steps])
    return {"ms_per_rollout": out, "steps_with_work": n_steps,
            "states_per_stage": {k: int(jnp.sum((stages == i) & traj.step_mask[:, :n_steps]))
                                 for i, k in enumerate(("spacegroup", "composition", "lattice"))}}


def policy_floor(task, params, batch: int, n_calls: int = 50) -> dict:
    """What the two 3 x 256 MLPs alone cost per TB update, to read the training rate against: the policy runs on
    the batch once per live scan step (``policy_step_ms`` per call; at most ``T + 1`` calls, fewer once every
    trajectory is done), then with its gradient on all ``(T + 1) * B`` visited states (the replay of
    ``gflownet.rollout``: ``policy_replay_ms``). Timed as ``n_calls`` evaluations inside one jitted scan (weights
    varied per call so nothing is hoisted). ``policy_replay_gflop``: 2 flops per weight and state forward, 4
    backward."""
    env, apply = task.env, task.policy.apply
    n_states = (env.max_steps + 1) * batch
    states = init_states(env, n_states)  # the MLPs' cost does not depend on the values
    small = jax.tree.map(lambda x: x[:batch], states)
    n_weights = sum(x.size for x in jax.tree.leaves(params) if x.ndim == 2)

    def perturb(p, i):
        return jax.tree.map(lambda x: x * (1.0 + 1e-7 * i), p)

    def step_calls(p):
        return jax.lax.scan(lambda c, i: (c + sum(o.sum() for o in apply(perturb(p, i), small)), None), 0.0,
                            jnp.arange(n_calls, dtype=jnp.float32))[0]

    def replay_calls(p):
        loss = lambda q: sum(o.sum() for o in apply(q, states))
        body = lambda c, i: (c + sum(g.sum() for g in jax.tree.leaves(jax.grad(loss)(perturb(p, i)))), None)
        return jax.lax.scan(body, 0.0, jnp.arange(n_calls, dtype=jnp.float32))[0]

    _, t_step = time_jax(jax.jit(step_calls), params, min_time=1.0, max_reps=5)
    _, t_replay = time_jax(jax.jit(replay_calls), params, min_time=1.0, max_reps=5)
    return {"policy_step_ms": 1e3 * t_step / n_calls, "policy_replay_ms": 1e3 * t_replay / n_calls,
            "policy_replay_gflop": 6 * n_weights * n_states / 1e9, "policy_weights": int(n_weights)}


def main(quick: bool = False) -> list[dict]:
    env = CrystalGFN()
    explore = Exploration.make(0.1, 1.0)
    batches = (1, 16, 256, 1024) if quick else (1, 16, 256, 1024, 4096)

    def random_apply(params, states):
        b = states.stage.shape[0]
        return jnp.zeros((b, env.fwd_dim)), jnp.zeros((b, env.bwd_dim))

    mlp = _MLP(env.fwd_dim, env.bwd_dim)
    mlp_params = mlp.init(jax.random.PRNGKey(0), jnp.zeros(env.obs_dim))

    def mlp_apply(params, states):
        return mlp.apply(params, jax.vmap(env.encode)(states))

    records = []
    # A trained policy costs exactly what the untrained 3 x 256 MLP costs (same network, other weights).
    # Two outputs per policy: the terminal states only (XLA then drops the log-probabilities from the program:
    # what a pure sampler costs), and the whole trajectory with per-step log P_F / log P_B and actions (what
    # training needs, and what the Mila sampler computes and stores: the like-for-like comparison).
    outputs = {"final_only": lambda t: t.final, "full_trajectory": lambda t: t}
    for name, apply, params in (("random_policy", random_apply, None), ("mlp_3x256", mlp_apply, mlp_params)):
        for out_name, out in outputs.items():
            for batch in batches:
                fn = jax.jit(lambda k, p, apply=apply, batch=batch, out=out:
                             out(rollout(k, env, apply, p, batch, explore)))
                compile_s, per_call = time_jax(fn, jax.random.PRNGKey(1), params, min_time=0.5 if quick else 2.0)
                suffix = "" if out_name == "final_only" else "_full_trajectory"
                records.append(record(f"crystal_gfn_rollout_{name}{suffix}", batch, per_call, compile_s,
                                      unit="trajectories", output=out_name, max_steps=env.max_steps))
    prof_batch = 1024
    prof = profile_parts(env, prof_batch, explore, reps=2 if quick else 5)
    records.append(record("crystal_gfn_rollout_parts", prof_batch, sum(prof["ms_per_rollout"].values()) / 1e3, 0.0,
                          unit="trajectories (sum of the parts timed apart)", **prof))
    # Training throughput of the paper preset (10 trajectories per iteration, 3 x 256 MLPs, TB update):
    # the paper's 50,000 iterations = 500,000 trajectories.
    from experiments.configs import get_config
    from experiments.tasks import build_task
    from hgfn_jax.gflownet.train import make_train

    cfg = get_config("crystal_gfn_density", "paper")  # density: exact reward, no proxy training needed
    task = build_task(cfg)
    init, _, run_chunk, _, _ = make_train(cfg, task)
    n_iter = 50 if quick else 200
    chunk = jax.jit(lambda ts: run_chunk(ts, n_iter)[0])
    compile_s, per_call = time_jax(chunk, init(jax.random.PRNGKey(0)), min_time=1.0, max_reps=3)
    rec = record("crystal_gfn_train_paper_preset", int(cfg.train.batch_size) * n_iter, per_call, compile_s,
                 unit="trajectories (TB updates of 10)", iterations_per_s=n_iter / per_call)
    rec["paper_preset_minutes_estimate"] = 50_000 / rec["iterations_per_s"] / 60
    rec.update(policy_floor(task, init(jax.random.PRNGKey(0)).params["policy"], int(cfg.train.batch_size)))
    records.append(rec)
    write_results("crystal_gfn", records)
    return records


if __name__ == "__main__":
    main()
