"""The fast paths of Crystal-GFN against straightforward references.

- the batched entry points the rollout uses (``*_batch``: each subspace's work under a batch-level ``lax.cond``)
  return exactly what the vmapped per-state methods return, also on batches where some stage is absent;
- the two-level inverse-CDF sampler of the discrete heads draws from softmax(logits / T) over the mask (and
  uniformly under exploration), never a masked entry;
- the discrete forward log-probability (one categorical over the active head) equals a numpy log-softmax over the
  active head's valid actions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.envs.crystal_gfn import STAGE_COMPOSITION, STAGE_LATTICE, STAGE_SPACEGROUP, CrystalGFN
from hgfn_jax.gflownet.distributions import sample_masked_icdf
from hgfn_jax.gflownet.env import Exploration
from hgfn_jax.gflownet.rollout import rollout


@pytest.fixture(scope="module")
def visited():
    """States visited by a rollout under random (non-uniform) policy outputs, with their actions and outputs."""
    env = CrystalGFN()

    def apply(params, states):
        k = jax.random.fold_in(params, jnp.sum(jax.vmap(env.encode)(states) * 1000.0).astype(jnp.int32))
        b = states.stage.shape[0]
        return (2.0 * jax.random.normal(k, (b, env.fwd_dim)),
                jax.random.normal(jax.random.fold_in(k, 1), (b, env.bwd_dim)))

    traj = jax.jit(lambda k: rollout(k, env, apply, jax.random.PRNGKey(3), 48, Exploration.make(0.2, 1.0),
                                     return_states=True))(jax.random.PRNGKey(0))
    live = np.asarray(traj.step_mask).reshape(-1)
    flat = lambda x: np.asarray(x).reshape((-1,) + x.shape[2:])[live]
    states = jax.tree.map(flat, traj.states)
    actions = jax.tree.map(flat, traj.actions)
    n = states.stage.shape[0]
    rng = np.random.default_rng(0)
    fwd = jnp.asarray(rng.normal(0.0, 2.0, (n, env.fwd_dim)), jnp.float32)
    bwd = jnp.asarray(rng.normal(0.0, 1.0, (n, env.bwd_dim)), jnp.float32)
    # jitted once for the module: every stage subset below is resized to the same batch length, so each function
    # compiles once (the stage mix is a runtime value, which is what the batch-level lax.cond switches on)
    fns = dict(sample_batch=jax.jit(env.sample_action_batch),
               sample=jax.jit(jax.vmap(env.sample_action, in_axes=(0, 0, 0, None))),
               log_pf_batch=jax.jit(env.log_pf_batch), log_pf=jax.jit(jax.vmap(env.log_pf)),
               step_batch=jax.jit(env.step_batch), step=jax.jit(jax.vmap(env.step)),
               log_pb_batch=jax.jit(env.log_pb_batch), log_pb=jax.jit(jax.vmap(env.log_pb)))
    return env, states, actions, fwd, bwd, fns


def _subset(tree, idx):
    return jax.tree.map(lambda x: x[idx], tree)


@pytest.mark.parametrize("stages", [None, (STAGE_SPACEGROUP,), (STAGE_COMPOSITION,), (STAGE_LATTICE,),
                                    (STAGE_SPACEGROUP, STAGE_LATTICE)])
def test_batched_entry_points_equal_vmapped_methods(visited, stages):
    env, states, actions, fwd, bwd, fn = visited
    st = np.asarray(states.stage)
    idx = np.arange(len(st)) if stages is None else np.nonzero(np.isin(st, stages))[0]
    assert len(idx) > 0
    idx = np.resize(idx, len(st))  # repeat the subset up to the full length: one compiled shape for all subsets
    assert set(np.unique(st[idx])) == set(np.unique(st) if stages is None else stages)
    s, a, f, b = _subset(states, idx), _subset(actions, idx), fwd[idx], bwd[idx]
    ex = Exploration.make(0.3, 1.5)
    keys = jax.random.split(jax.random.PRNGKey(5), len(idx))
    eq = lambda x, y: jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), x, y)
    eq(fn["sample_batch"](keys, f, s, ex), fn["sample"](keys, f, s, ex))
    eq(fn["log_pf_batch"](f, s, a), fn["log_pf"](f, s, a))
    nxt = fn["step"](s, a)
    eq(fn["step_batch"](s, a), nxt)
    eq(fn["log_pb_batch"](b, nxt, a, s), fn["log_pb"](b, nxt, a, s))


def test_discrete_log_pf_matches_numpy_reference(visited):
    env, states, actions, fwd, _, fn = visited
    lp = np.asarray(fn["log_pf"](fwd, states, actions), np.float64)
    m_sg, m_comp = (np.asarray(m) for m in jax.jit(jax.vmap(env.masks))(states))
    f = np.asarray(fwd, np.float64)
    st, idx = np.asarray(states.stage), np.asarray(actions.index)
    n_sg, n_comp = env.n_sg_actions, env.n_comp_actions
    checked = 0
    for i in np.nonzero(st < STAGE_LATTICE)[0]:
        logits, mask = ((f[i, :n_sg], m_sg[i]) if st[i] == STAGE_SPACEGROUP
                        else (f[i, n_sg:n_sg + n_comp], m_comp[i]))
        assert mask[idx[i]]
        ref = logits[idx[i]] - np.logaddexp.reduce(logits[mask])
        np.testing.assert_allclose(lp[i], ref, atol=2e-5)
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("n,width,epsilon,temperature", [(353, 16, 0.0, 1.0), (127, 16, 0.0, 0.7),
                                                         (353, 16, 1.0, 1.0), (37, 8, 0.3, 2.0)])
def test_two_level_sampler_distribution(n, width, epsilon, temperature):
    rng = np.random.default_rng(n)
    logits = rng.normal(0.0, 1.5, n).astype(np.float32)
    mask = rng.random(n) < 0.3
    mask[rng.integers(n)] = True
    mask[: width] = False  # a whole empty row
    ex = Exploration.make(epsilon, temperature)
    n_draws = 200_000
    u = jax.random.uniform(jax.random.PRNGKey(n), (n_draws, 2))
    draws = np.asarray(jax.jit(jax.vmap(lambda u2: sample_masked_icdf(u2, jnp.asarray(logits), jnp.asarray(mask),
                                                                       ex, width)))(u))
    assert mask[draws].all()
    z = np.where(mask, logits.astype(np.float64) / temperature, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    p = (1 - epsilon) * p + epsilon * mask / mask.sum()
    emp = np.bincount(draws, minlength=n) / n_draws
    assert 0.5 * np.abs(emp - p).sum() < 0.01
    # per-entry binomial check: every count within 5 standard deviations of its expectation
    assert np.all(np.abs(emp - p) * n_draws <= 5.0 * np.sqrt(n_draws * p * (1 - p)) + 1.0)


def _reference_rollout(key, env, policy_apply, params, batch_size, explore):
    """The straightforward rollout: vmapped per-state methods in a scan differentiated step by step."""
    from hgfn_jax.gflownet.env import tree_where
    from hgfn_jax.gflownet.rollout import init_states

    states = init_states(env, batch_size)
    fwd, _ = policy_apply(params, states)

    def body(carry, key_t):
        s, fwd_s = carry
        done = jax.vmap(env.is_done)(s)
        keys = jax.random.split(key_t, batch_size)
        action = jax.vmap(env.sample_action, in_axes=(0, 0, 0, None))(keys, jax.lax.stop_gradient(fwd_s), s, explore)
        s_next = tree_where(done, s, jax.vmap(env.step)(s, action))
        fwd_next, bwd_next = policy_apply(params, s_next)
        lpf = jnp.where(done, 0.0, jax.vmap(env.log_pf)(fwd_s, s, action))
        lpb = jnp.where(done, 0.0, jax.vmap(env.log_pb)(bwd_next, s_next, action, s))
        return (s_next, fwd_next), (lpf, lpb, ~done, action)

    (final, _), (lpf, lpb, live, actions) = jax.lax.scan(body, (states, fwd), jax.random.split(key, env.max_steps))
    return final, lpf.T, lpb.T, live.T, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), actions)


def test_rollout_values_and_gradients_match_reference():
    from hgfn_jax.policies.mlp import make_mlp_policy

    env = CrystalGFN(elements=("Li", "Mn", "O", "Fe"), spacegroups=(1, 14, 221, 225), max_per_element=4,
                     max_distinct=3, n_comp=2, min_incr=0.2)
    policy = make_mlp_policy(env, hidden=(32, 32))
    params = policy.init(jax.random.PRNGKey(0), jax.tree.map(lambda x: x[None], env.init()))
    params = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(1), x.shape), params)
    ex = Exploration.make(0.2, 1.0)
    key = jax.random.PRNGKey(2)

    def tb(p, fn):
        out = fn(p)
        return jnp.sum(jnp.square(jnp.sum(out[0], axis=1) - 0.7 * jnp.sum(out[1], axis=1)))

    new = lambda p: (lambda t: (t.log_pf, t.log_pb, t.step_mask, t.actions, t.final))(
        rollout(key, env, policy.apply, p, 16, ex))
    ref = lambda p: (lambda r: (r[1], r[2], r[3], r[4], r[0]))(_reference_rollout(key, env, policy.apply, p, 16, ex))
    v_new, v_ref = jax.jit(new)(params), jax.jit(ref)(params)
    live = np.asarray(v_ref[2])
    np.testing.assert_array_equal(np.asarray(v_new[2]), live)
    np.testing.assert_allclose(np.asarray(v_new[0]), np.asarray(v_ref[0]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(v_new[1]), np.asarray(v_ref[1]), atol=1e-5)
    for a, b in zip(jax.tree.leaves(v_new[3]), jax.tree.leaves(v_ref[3]), strict=True):
        np.testing.assert_array_equal(np.asarray(a)[live], np.asarray(b)[live])
    for a, b in zip(jax.tree.leaves(v_new[4]), jax.tree.leaves(v_ref[4]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    g_new = jax.jit(jax.grad(lambda p: tb(p, new)))(params)
    g_ref = jax.jit(jax.grad(lambda p: tb(p, ref)))(params)
    for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
