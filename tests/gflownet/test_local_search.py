"""Back-and-forth local search (gflownet.local_search) on the hypergrid, and training with it.

References: the hypergrid's closed-form P_B (uniform over the parents), the environment's own forward ``step``
replayed from s_0 (a searched trajectory must be a real trajectory), a reward TABLE and its R / Z for the
Metropolis-Hastings chain, and the exact terminal distribution of the trained policy by dynamic programming
(tests/gflownet/hypergrid_reference.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypergrid_reference import exact_terminal_distribution, target_distribution

from hgfn_jax.envs.toy.hypergrid import GridState, HyperGrid, hypergrid_log_reward
from hgfn_jax.gflownet import replay as rb
from hgfn_jax.gflownet.env import ON_POLICY, Exploration
from hgfn_jax.gflownet.local_search import backward_walk, check_backward_support, local_search
from hgfn_jax.gflownet.rollout import rollout
from hgfn_jax.gflownet.train import Task, make_train
from hgfn_jax.policies.mlp import make_mlp_policy


def _random_policy(env, rng, scale=1.0, hidden=(16,)):
    policy = make_mlp_policy(env, hidden=hidden)
    params = policy.init(rng(), jax.tree.map(lambda x: x[None], env.init()))
    return policy, jax.tree.map(lambda p: p + scale * jax.random.normal(rng(), p.shape), params)  # non-uniform P_F


def test_backward_step_draws_a_uniform_parent_and_inverts_step(rng):
    env = HyperGrid(ndim=3, side=4)
    n = 6000
    for pos, done in [((2, 0, 3), False), ((1, 1, 1), False), ((0, 3, 0), False), ((2, 0, 3), True)]:
        s = GridState(pos=jnp.asarray(pos, jnp.int32), done=jnp.asarray(done))
        assert not bool(env.is_initial(s))
        prev, act = jax.vmap(env.sample_backward, in_axes=(0, None, None))(jax.random.split(rng(), n), jnp.zeros(0), s)
        back = jax.vmap(env.step)(prev, act)
        np.testing.assert_array_equal(np.asarray(back.pos), np.broadcast_to(pos, (n, 3)))
        np.testing.assert_array_equal(np.asarray(back.done), np.full(n, done))
        freq = np.bincount(np.asarray(act), minlength=4) / n
        if done:  # the only parent of a terminal state is the same point before STOP
            np.testing.assert_array_equal(freq, [0, 0, 0, 1])
        else:
            positive = np.asarray(pos) > 0
            expected = np.concatenate([positive / positive.sum(), [0.0]])
            np.testing.assert_allclose(freq, expected, atol=0.03)
    assert bool(env.is_initial(env.init()))


def test_backward_walk_reaches_s0_and_replays_forward(rng):
    env = HyperGrid(ndim=2, side=6)
    policy, params = _random_policy(env, rng)
    traj = rollout(rng(), env, policy.apply, params, 256, Exploration.make(0.5, 1.0))
    bw = backward_walk(rng(), env, policy.apply, params, traj.final)
    pos_x = np.asarray(traj.final.pos)
    np.testing.assert_array_equal(np.asarray(bw.length), pos_x.sum(1) + 1)  # STOP undone, then one unit a step
    last = np.asarray(bw.length) - 1
    np.testing.assert_array_equal(np.asarray(bw.prev.pos)[np.arange(256), last], 0)
    # the walk's last states are s_0; its log P_B is the closed form: sum over the walk of -log(#parents)
    cur = np.concatenate([pos_x[:, None], np.asarray(bw.prev.pos)[:, :-1]], axis=1)  # state before each back step
    first = np.arange(env.max_steps)[None] == 0
    expected = np.where(first, 0.0, -np.log(np.maximum((cur > 0).sum(-1), 1)))
    np.testing.assert_allclose(np.asarray(bw.log_pb), np.where(np.asarray(bw.live), expected, 0.0), atol=1e-6)


def _replay_forward(env, stored):
    """Replays the stored actions from s_0 with env.step; asserts the stored states along the way."""
    n_b, n_t = stored.step_mask.shape
    s = jax.tree.map(lambda x: jnp.broadcast_to(x, (n_b,) + x.shape), env.init())
    mask = np.asarray(stored.step_mask)
    for t in range(n_t):
        live = mask[:, t]
        np.testing.assert_array_equal(np.asarray(stored.states.pos[:, t])[live], np.asarray(s.pos)[live])
        s = jax.vmap(env.step)(s, stored.actions[:, t])
    return s


@pytest.mark.parametrize("accept", ["greedy", "mh"])
def test_searched_trajectories_are_valid_trajectories(rng, accept):
    env = HyperGrid(ndim=2, side=8)
    policy, params = _random_policy(env, rng)
    log_reward = jax.vmap(lambda s: (hypergrid_log_reward(s.pos, env.side), {}))
    traj = rollout(rng(), env, policy.apply, params, 512, Exploration.make(0.2, 1.0), return_states=True)
    start = rb.stored_from(traj, log_reward(traj.final)[0])
    end, stats = local_search(rng(), env, policy.apply, params, start, log_reward, k=3, n_iters=4, accept=accept)
    final = _replay_forward(env, end)
    np.testing.assert_array_equal(np.asarray(final.pos), np.asarray(end.final.pos))
    assert bool(jnp.all(final.done)) and bool(jnp.all(end.done))
    pos = np.asarray(end.final.pos)
    assert pos.min() >= 0 and pos.max() <= env.side - 1
    np.testing.assert_array_equal(np.asarray(end.step_mask).sum(1), pos.sum(1) + 1)
    np.testing.assert_allclose(np.asarray(end.log_r), np.asarray(log_reward(end.final)[0]), atol=1e-6)
    assert 0.0 < float(stats.accept_rate) < 1.0
    moved = np.any(np.asarray(end.final.pos) != np.asarray(start.final.pos), axis=1)
    assert moved.sum() >= 5  # the checks above cover trajectories that the search changed
    if accept == "greedy":  # a hill climb: the reward never decreases, and it increases somewhere
        gain = np.asarray(end.log_r) - np.asarray(start.log_r)
        assert gain.min() >= 0.0 and gain.max() > 0.0


def test_metropolis_hastings_chain_keeps_r_over_z_and_greedy_does_not():
    """Stationarity of the MH variant for a fixed, random, non-uniform P_F (random reward table): 16,384 chains
    started from EXACT draws of R / Z are still distributed as R / Z after 60 iterations (K = 4). Measured: TV
    0.014 (sampling noise of 16,384 draws over 36 states ~0.015); with the destroy-length term q(m) / q(k) left out
    of the acceptance the same run ends at TV 0.048, without P_F(s -> x) at 0.65, so the bound 0.03 separates
    them. The greedy variant is a hill climb: its chains pile up on local maxima (TV 0.71-0.78).

    Fixed keys, not the order-dependent ``rng`` fixture: over 16 random policies the MH TV was 0.014-0.019, the
    acceptance 0.06-0.45 and the share of chains that moved 0.53-0.95 (one key of the fixture gave acceptance 0.06
    in CI order, which an earlier ``accept_rate > 0.1`` check refused although the chain was stationary)."""
    keys = iter(jax.random.split(jax.random.PRNGKey(6), 8))
    rng = lambda: next(keys)  # noqa: E731
    env = HyperGrid(ndim=2, side=6)
    policy, params = _random_policy(env, rng, scale=0.6)
    table = np.random.default_rng(0).normal(0.0, 1.0, size=(env.side, env.side)).astype(np.float32)
    log_reward = jax.vmap(lambda s: (jnp.asarray(table)[s.pos[0], s.pos[1]], {}))
    target = np.exp(table.reshape(-1).astype(np.float64))
    target /= target.sum()
    n = 16_384
    pos = env.all_terminal_positions()[np.random.default_rng(1).choice(target.size, size=n, p=target)]
    final = GridState(pos=jnp.asarray(pos, jnp.int32), done=jnp.ones(n, bool))
    # the chain reads only the terminal states and their rewards; the trajectories' other fields are placeholders
    traj = rollout(rng(), env, policy.apply, params, n, ON_POLICY, return_states=True)
    start = rb.stored_from(traj, log_reward(final)[0]).replace(final=final)

    def tv(stored):
        freq = np.bincount(np.asarray(env.index(stored.final.pos)), minlength=target.size) / n
        return 0.5 * np.abs(freq - target).sum()

    run = jax.jit(lambda key, accept: local_search(key, env, policy.apply, params, start, log_reward, k=4,
                                                   n_iters=60, accept=accept), static_argnums=1)
    (mh, mh_stats), (greedy, _) = run(rng(), "mh"), run(rng(), "greedy")
    print(f"TV start {tv(start):.3f}, MH {tv(mh):.3f} (accept {float(mh_stats.accept_rate):.2f}), "
          f"greedy {tv(greedy):.3f}")
    # the chains move (a stationary chain that never moves would pass the TV bound trivially): per-iteration
    # acceptance depends on the random P_F (0.06-0.42 measured over keys), so check the chains, not the rate
    moved = np.mean(np.any(np.asarray(mh.final.pos) != np.asarray(start.final.pos), axis=-1))
    assert float(mh_stats.accept_rate) > 0.0 and moved > 0.3, (float(mh_stats.accept_rate), moved)
    assert tv(mh) < 0.03, tv(mh)
    assert tv(greedy) > 0.3, tv(greedy)


def _task(env):
    return Task("hypergrid", env, make_mlp_policy(env, hidden=(64, 64)),
                lambda s: (hypergrid_log_reward(s.pos, env.side), {}))


def _cfg(loss, accept, capacity=0, iters=600):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.train = ml_collections.ConfigDict(dict(
        batch_size=64, lr=3e-3, lr_z=0.1, num_iterations=iters, epsilon=0.1, temperature=1.0, loss=loss,
        replay=dict(capacity=capacity, fraction=0.25),
        local_search=dict(enabled=True, k=2, n_iters=2, accept=accept)))
    return c


@pytest.mark.parametrize("loss, accept, capacity", [("tb", "greedy", 0), ("db", "mh", 512)])
def test_training_with_local_search_matches_the_enumerated_target(loss, accept, capacity):
    """The GFlowNet trained on fresh + searched (+ replayed) trajectories: exact terminal distribution within TV
    0.05 of R / Z after 600 updates (greedy search too: it changes the training distribution, not the objective's
    fixed point). Measured: TV 0.005 (TB, greedy), 0.009 (DB, MH + replay)."""
    env = HyperGrid(ndim=2, side=8)
    task = _task(env)
    ts, metrics = jax.jit(make_train(_cfg(loss, accept, capacity), task).train)(jax.random.PRNGKey(0))
    assert float(metrics["nonfinite_skipped"].sum()) == 0 and float(metrics["ls/accept_rate"].mean()) > 0
    tv = 0.5 * np.abs(exact_terminal_distribution(env, task.policy.apply, ts.params["policy"])
                      - target_distribution(env)).sum()
    print(f"{loss} + LS {accept}: exact TV {tv:.4f}")
    assert tv < 0.05, tv


class _NoBackwardEnv(HyperGrid):
    """An environment that only has the base contract (no backward steps)."""

    sample_backward = None


def test_environments_without_backward_steps_are_refused_by_name():
    env = _NoBackwardEnv(2, 4)
    with pytest.raises(ValueError, match="_NoBackwardEnv"):
        check_backward_support(env)
    with pytest.raises(ValueError, match="local search needs backward steps.*_NoBackwardEnv"):
        make_train(_cfg("tb", "greedy"), _task(env))
    with pytest.raises(ValueError, match="accept"):
        make_train(_cfg("tb", "sometimes"), _task(HyperGrid(2, 4)))


def test_a_library_environment_without_backward_steps_is_refused_by_name():
    """Crystal-GFN's environment has no backward sampler: enabling local search from the command line fails before
    anything is compiled, naming it."""
    from experiments.configs import get_config
    from experiments.tasks import build_task
    from experiments.train import apply_overrides

    cfg = apply_overrides(get_config("crystal_gfn_density", "test"), ["train.local_search.enabled=True"])
    with pytest.raises(ValueError, match="environment CrystalGFN does not provide"):
        make_train(cfg, build_task(cfg))
