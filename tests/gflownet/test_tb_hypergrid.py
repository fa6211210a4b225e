"""The shared rollout + trajectory balance + training loop learn an exactly enumerable target (hypergrid)."""

from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hgfn_jax.envs.toy.hypergrid import HyperGrid, hypergrid_log_reward
from hgfn_jax.gflownet.env import Exploration
from hgfn_jax.gflownet.rollout import rollout
from hgfn_jax.gflownet.train import Task, make_train
from hgfn_jax.policies.mlp import make_mlp_policy


def _config(iters=1500, batch=64):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.train = ml_collections.ConfigDict(
        dict(batch_size=batch, lr=3e-3, lr_z=0.1, num_iterations=iters, epsilon=0.1, temperature=1.0,
             steps_per_call=iters, checkpoint_every=iters)
    )
    return c


def _reference_reward(pos, side, r0=1e-2, r1=0.5, r2=2.0):
    """Independent exact-arithmetic hypergrid reward (Bengio et al. 2021)."""
    ax = [abs(Fraction(int(p), side - 1) - Fraction(1, 2)) for p in pos]
    band1 = all(Fraction(1, 4) < a <= Fraction(1, 2) for a in ax)
    band2 = all(Fraction(3, 10) < a < Fraction(2, 5) for a in ax)
    return r0 + r1 * band1 + r2 * band2


def _task(env):
    def log_reward(state):
        return hypergrid_log_reward(state.pos, env.side), {}

    return Task("hypergrid", env, make_mlp_policy(env, hidden=(64, 64)), log_reward)


def test_random_policy_rollouts_terminate_and_respect_masks(rng):
    env = HyperGrid(ndim=3, side=5)
    policy = make_mlp_policy(env, hidden=(16,))
    params = policy.init(rng(), jax.tree.map(lambda x: x[None], env.init()))
    traj = rollout(rng(), env, policy.apply, params, 512, Exploration.make(0.5, 1.0))
    assert bool(jnp.all(traj.done))
    assert int(jnp.max(traj.final.pos)) <= env.side - 1 and int(jnp.min(traj.final.pos)) >= 0
    # every taken step has finite log-probabilities (no masked action was ever chosen)
    assert bool(jnp.all(jnp.isfinite(traj.log_pf))) and float(jnp.min(jnp.where(traj.step_mask, traj.log_pf, 0))) > -50
    # trajectory length = sum of coordinates + the STOP step
    np.testing.assert_array_equal(np.asarray(traj.length), np.asarray(traj.final.pos.sum(-1) + 1))


def test_trajectory_balance_matches_enumerated_target():
    env = HyperGrid(ndim=2, side=8)
    cfg = _config()
    task = _task(env)
    _, _, _, train, sample = make_train(cfg, task)
    ts, metrics = jax.jit(train)(jax.random.PRNGKey(0))
    assert float(metrics["loss"][-50:].mean()) < 0.05

    pos = env.all_terminal_positions()
    log_r = np.log([_reference_reward(p, env.side) for p in pos])
    target = np.exp(log_r - log_r.max())
    target /= target.sum()
    np.testing.assert_allclose(float(ts.params["log_z"]), np.log(np.exp(log_r).sum()), atol=0.1)

    n = 20_000
    traj = jax.jit(sample, static_argnums=2)(ts.params, jax.random.PRNGKey(1), n)
    idx = np.asarray(env.index(traj.final.pos))
    emp = np.bincount(idx, minlength=len(target)) / n
    tv = 0.5 * np.abs(emp - target).sum()
    assert tv < 0.05, f"total variation {tv:.3f}"


def test_update_does_not_retrace():
    env = HyperGrid(ndim=2, side=4)
    cfg = _config(iters=3, batch=16)
    init, update, _, _, _ = make_train(cfg, _task(env))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(ts):
        return update(ts)

    ts = init(jax.random.PRNGKey(0))
    for _ in range(3):
        ts, _ = step(ts)
    assert int(ts.step) == 3


def test_off_policy_log_pf_ignores_exploration(rng):
    """log P_F is that of the untempered policy, whatever the exploration used to sample."""
    env = HyperGrid(ndim=2, side=4)
    s = env.init()
    logits = jnp.array([2.0, -1.0, 0.5])
    expected = jax.nn.log_softmax(logits)
    for a in range(3):
        assert float(env.log_pf(logits, s, jnp.asarray(a))) == pytest.approx(float(expected[a]), abs=1e-6)
    # with epsilon = 1 the sample is uniform over valid actions
    keys = jax.random.split(rng(), 6000)
    acts = jax.vmap(lambda k: env.sample_action(k, logits, s, Exploration.make(1.0, 1.0)))(keys)
    freq = np.bincount(np.asarray(acts), minlength=3) / 6000
    np.testing.assert_allclose(freq, [1 / 3] * 3, atol=0.03)
