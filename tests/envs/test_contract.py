"""The environment contract (``hgfn_jax.gflownet.env.Environment``), checked on EVERY environment the library
ships, with one state-dependent random policy, so a new environment is held to the same rules as the old ones:

- ``init`` is not terminal and ``encode`` gives a finite ``[obs_dim]`` vector;
- a rollout (jit, vmap over the batch) terminates within ``max_steps``; every transition it takes has a finite
  forward AND backward log-probability (P_B gives the actual parent positive mass: a -inf / -1e30 there would
  make trajectory balance ill-defined);
- the batched entry points the rollout calls equal the vmapped per-state methods, bit for bit;
- the rollout compiles once for any key and is a pure function of its key.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.envs.crystal_gfn import CrystalGFN
from hgfn_jax.envs.flat import FlatEnv
from hgfn_jax.envs.hierarchical import HierarchicalConfig, HierarchicalEnv
from hgfn_jax.envs.toy.hypergrid import HyperGrid
from hgfn_jax.gflownet.env import Exploration
from hgfn_jax.gflownet.rollout import rollout

SMALL_CRYSTAL = HierarchicalConfig(num_steps=2, spacegroups=(1, 14, 99, 166, 191, 221),
                                   elements=("Li", "Na", "O", "S"), required_elements=("Li", "Na"),
                                   max_distinct_elements=2, n_max=48, learn_backward_group=True)

ENVIRONMENTS = {
    "hypergrid": lambda: HyperGrid(ndim=3, side=5),
    # chain composition mode (the default's rule) and a learned P_B; exact mode on a 2-element space
    "crystal_gfn_chain": lambda: CrystalGFN(elements=("Li", "Mn", "O", "Fe", "S", "Cl"),
                                            spacegroups=(1, 14, 166, 221, 225), max_per_element=4, max_atoms=12,
                                            composition_mode="chain", learn_pb=True),
    "crystal_gfn_exact_fixed_pb": lambda: CrystalGFN(elements=("Fe", "O"), spacegroups=(2, 62, 194, 225),
                                                     max_per_element=4, composition_mode="exact", learn_pb=False),
    "hierarchical": lambda: HierarchicalEnv(SMALL_CRYSTAL),
    "flat": lambda: FlatEnv(SMALL_CRYSTAL),
}
BATCH = 16


def _random_policy(env, key):
    """A fixed random affine map of ``encode(state)``: outputs depend on the state, as a real policy's do."""
    k1, k2, k3 = jax.random.split(key, 3)
    w_f = jax.random.normal(k1, (env.obs_dim, env.fwd_dim)) / np.sqrt(env.obs_dim)
    w_b = jax.random.normal(k2, (env.obs_dim, env.bwd_dim)) / np.sqrt(env.obs_dim)
    b_f = 0.5 * jax.random.normal(k3, (env.fwd_dim,))

    def apply(params, states):
        x = jax.vmap(env.encode)(states)
        return x @ params[0] + params[2], x @ params[1]

    return apply, (w_f, w_b, b_f)


@pytest.fixture(scope="module", params=list(ENVIRONMENTS))
def rolled(request):
    env = ENVIRONMENTS[request.param]()
    apply, params = _random_policy(env, jax.random.PRNGKey(3))
    explore = Exploration.make(0.2, 1.0)  # exploration visits states the policy alone rarely reaches

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(key):
        return rollout(key, env, apply, params, BATCH, explore, return_states=True)

    chex.clear_trace_counter()
    return request.param, env, apply, params, run


def test_initial_state_and_encoding(rolled):
    _, env, *_ = rolled
    s0 = env.init()
    assert not bool(env.is_done(s0))
    x = np.asarray(env.encode(s0))
    assert x.shape == (env.obs_dim,) and np.all(np.isfinite(x))


def test_rollout_terminates_with_finite_log_probabilities(rolled):
    name, env, _, _, run = rolled
    traj = jax.device_get(run(jax.random.PRNGKey(0)))
    assert np.all(traj.done), f"{name}: some trajectories not terminal after max_steps={env.max_steps}"
    live = traj.step_mask
    assert live[:, 0].all() and np.all(traj.length <= env.max_steps)
    for what, lp in (("log P_F", traj.log_pf), ("log P_B", traj.log_pb)):
        vals = lp[live]
        assert np.all(np.isfinite(vals)) and np.all(vals > -1e4), (
            f"{name}: {what} of a taken transition is {vals.min()} (no mass on what actually happened)")
    assert np.all(traj.log_pf[~live] == 0.0) and np.all(traj.log_pb[~live] == 0.0)


def test_rollout_is_pure_and_traced_once(rolled):
    _, _, _, _, run = rolled
    a, b = run(jax.random.PRNGKey(1)), run(jax.random.PRNGKey(1))
    c = run(jax.random.PRNGKey(2))  # a second key: no retrace (assert_max_traces)
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)
    assert not np.array_equal(np.asarray(a.log_pf), np.asarray(c.log_pf))


def test_batched_entry_points_equal_vmapped_methods(rolled):
    _, env, apply, params, run = rolled
    traj = run(jax.random.PRNGKey(4))
    idx = np.nonzero(np.asarray(traj.step_mask).ravel())[0]  # the transitions that happened
    take = lambda x: jnp.reshape(x, (-1,) + x.shape[2:])[idx]
    s, a = jax.tree.map(take, traj.states), jax.tree.map(take, traj.actions)
    fwd, _ = apply(params, s)
    nxt = jax.jit(jax.vmap(env.step))(s, a)
    _, bwd = apply(params, nxt)
    ex = Exploration.make(0.3, 1.5)
    keys = jax.random.split(jax.random.PRNGKey(5), len(idx))
    eq = lambda x, y: jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), x, y)
    eq(jax.jit(env.sample_action_batch)(keys, fwd, s, ex),
       jax.jit(jax.vmap(env.sample_action, in_axes=(0, 0, 0, None)))(keys, fwd, s, ex))
    eq(jax.jit(env.log_pf_batch)(fwd, s, a), jax.jit(jax.vmap(env.log_pf))(fwd, s, a))
    eq(jax.jit(env.step_batch)(s, a), nxt)
    eq(jax.jit(env.log_pb_batch)(bwd, nxt, a, s), jax.jit(jax.vmap(env.log_pb))(bwd, nxt, a, s))
