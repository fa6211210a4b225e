"""The DB-family objectives against independent references: exact zero at hand-built balanced flows on a tiny
enumerable DAG (and the closed-form value when one flow is perturbed), an explicit numpy double loop on a random
padded trajectory batch, exact masking of padding, and clear errors for bad objective configs. FL-DB and MDB:
zero at the same hand-built flows (FL-DB under arbitrary intermediate energies, MDB with its flows R(s) / P_F(stop
| s) read from the exact P_F) and MDB's closed form when one stop probability is perturbed."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hgfn_jax.envs.toy.hypergrid import HyperGrid
from hgfn_jax.gflownet.env import ON_POLICY
from hgfn_jax.gflownet.objectives import (
    detailed_balance,
    modified_detailed_balance,
    subtrajectory_balance,
    trajectory_balance,
)
from hgfn_jax.gflownet.objectives.common import trajectory_states
from hgfn_jax.gflownet.objectives.fldb import forward_looking_log_flow
from hgfn_jax.gflownet.objectives.mdb import stop_log_flow
from hgfn_jax.gflownet.rollout import Trajectory, rollout
from hgfn_jax.gflownet.train import Task, make_train, train_and_evaluate
from hgfn_jax.policies.mlp import make_mlp_policy

SIDE = 3


def _exact_flows(reward):
    """Flows of the 2-D hypergrid of side 3 under its uniform-over-parents P_B, by the backward recursion
    F(s) = R(s) + sum_children F(c) P_B(s | c) (numpy float64, independent of the library).
    Returns (log F [S, S], log P_F [S, S, 3]: +x, +y, STOP)."""
    flow = np.zeros((SIDE, SIDE))
    pf = np.full((SIDE, SIDE, 3), -np.inf)
    n_parents = lambda p: max(sum(c > 0 for c in p), 1)
    for total in range(2 * (SIDE - 1), -1, -1):  # children have a larger coordinate sum
        for p in itertools.product(range(SIDE), repeat=2):
            if sum(p) != total:
                continue
            out = [0.0, 0.0, reward[p]]
            for d in range(2):
                if p[d] < SIDE - 1:
                    c = list(p)
                    c[d] += 1
                    out[d] = flow[tuple(c)] / n_parents(c)
            flow[p] = sum(out)
            pf[p] = np.log(np.maximum(out, 1e-300)) - np.log(flow[p])
            pf[p][[d for d in range(2) if p[d] == SIDE - 1]] = -np.inf
    return np.log(flow), pf


def _balanced_setup(seed=0, batch=512, full=False):
    env = HyperGrid(ndim=2, side=SIDE)
    reward = np.exp(np.random.default_rng(seed).normal(0.0, 1.0, (SIDE, SIDE)))
    log_f, log_pf = _exact_flows(reward)
    assert np.isclose(np.exp(log_f[0, 0]), reward.sum())  # every terminal reached: F(s0) = Z = sum R
    pf_table = jnp.asarray(np.where(np.isfinite(log_pf), log_pf, -1e4), jnp.float32)
    f_table = jnp.asarray(log_f, jnp.float32)

    def policy_apply(params, states):
        del params
        return pf_table[states.pos[:, 0], states.pos[:, 1]], jnp.zeros((states.pos.shape[0], 0))

    def flow_apply(states):
        # a terminal state's network value must never be used (log F(x) = log R(x)): poison it
        return f_table[states.pos[..., 0], states.pos[..., 1]] + jnp.where(states.done, 123.0, 0.0)

    traj = rollout(jax.random.PRNGKey(seed), env, policy_apply, None, batch, ON_POLICY, return_states=True)
    assert bool(jnp.all(traj.done))
    states = trajectory_states(traj)
    log_flow = flow_apply(states)
    log_r = jnp.asarray(np.log(reward), jnp.float32)[traj.final.pos[:, 0], traj.final.pos[:, 1]]
    if full:
        return traj, states, log_flow, log_r, float(log_f[0, 0]), reward, log_pf
    return traj, states, log_flow, log_r, float(log_f[0, 0])


def test_losses_vanish_at_balanced_flows_and_take_the_closed_form_when_perturbed():
    traj, states, log_flow, log_r, log_z = _balanced_setup()
    lam = 0.9
    assert float(trajectory_balance(log_z, traj, log_r)) < 1e-9
    assert float(detailed_balance(log_z, traj, log_r, log_flow)) < 1e-9
    assert float(subtrajectory_balance(log_z, traj, log_r, log_flow, lam)) < 1e-9
    assert float(subtrajectory_balance(log_z, traj, log_r, log_flow, 3.0)) < 1e-9

    # length of each trajectory from the terminal position alone: one +1 move per unit, then STOP
    n = np.asarray(traj.final.pos).sum(-1) + 1
    c = 0.3  # wrong log Z: only residuals that start at s0 are off, by exactly c
    assert float(trajectory_balance(log_z + c, traj, log_r)) == pytest.approx(c**2, rel=1e-4)
    assert float(detailed_balance(log_z + c, traj, log_r, log_flow)) == pytest.approx(
        c**2 * len(n) / n.sum(), rel=1e-4)
    per_traj = [sum(lam**j for j in range(1, k + 1)) / sum(lam ** (j - i) for j in range(k + 1) for i in range(j))
                for k in n]
    assert float(subtrajectory_balance(log_z + c, traj, log_r, log_flow, lam)) == pytest.approx(
        c**2 * np.mean(per_traj), rel=1e-4)

    # wrong flow at the interior state (1, 1): each visit puts +-delta on its in- and out-transition
    delta = 0.5
    pos = np.asarray(states.pos)
    at = (pos[..., 0] == 1) & (pos[..., 1] == 1) & ~np.asarray(states.done)
    visits = int(at.sum())
    assert visits > 0
    bad_flow = log_flow + delta * jnp.asarray(at, jnp.float32)
    assert float(detailed_balance(log_z, traj, log_r, bad_flow)) == pytest.approx(
        2 * delta**2 * visits / n.sum(), rel=1e-4)
    sub = float(subtrajectory_balance(log_z, traj, log_r, bad_flow, lam))
    assert sub > 1e-3
    assert float(trajectory_balance(log_z, traj, log_r)) < 1e-9  # TB never sees interior flows


def test_fldb_and_mdb_vanish_at_balanced_flows_and_mdb_takes_its_closed_form():
    traj, states, log_flow, log_r, log_z, reward, log_pf = _balanced_setup(full=True)
    pos = np.asarray(states.pos)
    # FL-DB: any intermediate energies, with the learned part log F~ = log F + E(s) of the exact flows, balance
    energy = np.random.default_rng(5).normal(0.0, 2.0, (SIDE, SIDE))
    state_log_r = jnp.asarray(-energy[pos[..., 0], pos[..., 1]], jnp.float32)
    tilde = log_flow - state_log_r
    assert float(detailed_balance(log_z, traj, log_r, forward_looking_log_flow(tilde, state_log_r))) < 1e-9
    # ... and a flow head that ignores the energies (the plain DB optimum) does not
    assert float(detailed_balance(log_z, traj, log_r, forward_looking_log_flow(log_flow, state_log_r))) > 0.1

    # MDB: F(s) = R(s) / P_F(stop | s) is the exact flow, so every non-stopping transition balances
    log_reward_at = jnp.asarray(np.log(reward)[pos[..., 0], pos[..., 1]], jnp.float32)
    stop = jnp.asarray(log_pf[pos[..., 0], pos[..., 1], 2], jnp.float32)
    assert float(modified_detailed_balance(log_z, traj, log_r, stop_log_flow(log_reward_at, stop))) < 1e-9
    # log Z is only regressed onto the implied source flow: off by c, the loss is c^2
    c = 0.3
    assert float(modified_detailed_balance(log_z + c, traj, log_r, stop_log_flow(log_reward_at, stop))) == \
        pytest.approx(c**2, rel=1e-4)
    # wrong stop probability at the interior point (1, 1): +-delta on its in-move and its out-move, none on a STOP
    delta = 0.5
    at = (pos[..., 0] == 1) & (pos[..., 1] == 1) & ~np.asarray(states.done)
    final = np.asarray(traj.final.pos)
    stopped_there = int(np.sum((final[:, 0] == 1) & (final[:, 1] == 1)))
    n_moves = int(final.sum())  # one +1 move per unit of the final coordinate sum
    assert stopped_there > 0 and int(at.sum()) > stopped_there
    bad = stop_log_flow(log_reward_at, stop - delta * jnp.asarray(at, jnp.float32))
    assert float(modified_detailed_balance(log_z, traj, log_r, bad)) == pytest.approx(
        delta**2 * (2 * int(at.sum()) - stopped_there) / n_moves, rel=1e-4)
    # the source's stop probability is trained (DB's pinning of log F(s0) to log Z would leave it in no residual)
    g = jax.grad(lambda s: modified_detailed_balance(log_z, traj, log_r, stop_log_flow(log_reward_at, s)))(
        stop + 0.1 * jnp.asarray((pos[..., 0] == 0) & (pos[..., 1] == 0), jnp.float32))
    assert float(jnp.abs(g[:, 0]).sum()) > 0


def _random_batch(seed=0, n_b=7, n_t=6):
    rng = np.random.default_rng(seed)
    length = rng.integers(1, n_t + 1, n_b)
    length[0] = n_t  # one trajectory uses every step
    mask = np.arange(n_t)[None] < length[:, None]
    # garbage after the end, which every objective must ignore (the rollout writes zeros there)
    log_pf = rng.normal(0.0, 1.0, (n_b, n_t)) + np.where(mask, 0.0, 50.0)
    log_pb = rng.normal(0.0, 1.0, (n_b, n_t)) - np.where(mask, 0.0, 70.0)
    done = rng.random(n_b) < 0.7
    done[0] = False  # cut by max_steps: its last state keeps the network flow
    log_flow = rng.normal(0.0, 1.0, (n_b, n_t + 1))
    log_flow[np.arange(n_t + 1)[None] > length[:, None]] = np.inf  # padding: must not even reach the gradient
    log_r = rng.normal(0.0, 1.0, n_b)
    traj = Trajectory(final=None, log_pf=jnp.asarray(log_pf, jnp.float32), log_pb=jnp.asarray(log_pb, jnp.float32),
                      step_mask=jnp.asarray(mask), done=jnp.asarray(done), actions=None)
    return traj, dict(length=length, log_pf=log_pf, log_pb=log_pb, done=done, log_flow=log_flow, log_r=log_r)


def _reference(b, log_z, lam):
    """DB and SubTB(lambda) by their definitions, explicit loops in float64."""
    db_sq, db_n, sub = 0.0, 0, []
    for k in range(len(b["length"])):
        n = b["length"][k]

        def log_f(i, k=k, n=n):
            if i == 0:
                return log_z
            if i == n and b["done"][k]:
                return b["log_r"][k]
            return b["log_flow"][k, i]

        for t in range(n):
            r = log_f(t) + b["log_pf"][k, t] - log_f(t + 1) - b["log_pb"][k, t]
            db_sq += r * r
            db_n += 1
        num = den = 0.0
        for i in range(n):
            for j in range(i + 1, n + 1):
                r = log_f(i) + b["log_pf"][k, i:j].sum() - log_f(j) - b["log_pb"][k, i:j].sum()
                num += lam ** (j - i) * r * r
                den += lam ** (j - i)
        sub.append(num / den)
    return db_sq / db_n, float(np.mean(sub))


@pytest.mark.parametrize("lam", [0.5, 0.9, 1.7])
def test_db_and_subtb_equal_a_direct_computation_on_a_random_padded_batch(lam):
    traj, b = _random_batch()
    log_z = 0.37
    ref_db, ref_sub = _reference(b, log_z, lam)
    log_flow = jnp.asarray(b["log_flow"], jnp.float32)
    log_r = jnp.asarray(b["log_r"], jnp.float32)
    np.testing.assert_allclose(float(detailed_balance(log_z, traj, log_r, log_flow)), ref_db, rtol=1e-5)
    np.testing.assert_allclose(float(subtrajectory_balance(log_z, traj, log_r, log_flow, lam)), ref_sub, rtol=1e-5)
    # padding is masked exactly: finite loss and gradient, zero gradient on padded flows and terminal flows
    for loss in (lambda f: detailed_balance(log_z, traj, log_r, f),
                 lambda f: subtrajectory_balance(log_z, traj, log_r, f, lam)):
        g = np.asarray(jax.grad(loss)(log_flow))
        assert np.all(np.isfinite(g))
        pos = np.arange(g.shape[1])[None]
        unused = (pos > b["length"][:, None]) | (pos == 0) | ((pos == b["length"][:, None]) & b["done"][:, None])
        assert np.all(g[unused] == 0.0) and np.all(g[~unused] != 0.0)


def _hypergrid_task():
    env = HyperGrid(ndim=2, side=4)
    return Task("hypergrid", env, make_mlp_policy(env, hidden=(8,)), lambda s: (jnp.log(1.0 + s.pos.sum()), {}))


@pytest.mark.parametrize("bad, match", [
    (dict(loss="fancy"), "unknown train.loss"),
    (dict(loss="mdb"), "Task.state_log_reward"),
    (dict(loss="fldb"), "intermediate energies"),
    (dict(loss="subtb", subtb_lambda=0.0), "subtb_lambda"),
    (dict(loss="subtb", subtb_lambda=-1.0), "subtb_lambda"),
    (dict(loss="subtb", subtb_lambda=float("nan")), "subtb_lambda"),
    (dict(loss="subtb", subtb_lambda="big"), "subtb_lambda"),
])
def test_bad_objective_config_is_refused_before_any_work(tmp_path, bad, match):
    cfg = ml_collections.ConfigDict()
    cfg.seed = 0
    cfg.train = ml_collections.ConfigDict(dict(batch_size=4, lr=1e-3, lr_z=0.1, num_iterations=2, epsilon=0.0,
                                               **bad))
    with pytest.raises(ValueError, match=match):
        make_train(cfg, _hypergrid_task())
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(cfg, _hypergrid_task(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_mdb_is_refused_on_an_environment_where_not_every_state_can_stop(tmp_path):
    from hgfn_jax.envs.crystal_gfn import CrystalGFN

    env = CrystalGFN(elements=("Li", "Mn", "O"), spacegroups=(221, 225), max_per_element=3, max_distinct=3)
    task = Task("toy", env, make_mlp_policy(env, hidden=(8,)), lambda s: (jnp.float32(0.0), {}),
                state_log_reward=lambda s: jnp.float32(0.0))
    cfg = ml_collections.ConfigDict()
    cfg.seed = 0
    cfg.train = ml_collections.ConfigDict(dict(batch_size=4, lr=1e-3, lr_z=0.1, num_iterations=2, epsilon=0.0,
                                               loss="mdb"))
    with pytest.raises(ValueError, match="every state can stop.*CrystalGFN"):
        train_and_evaluate(cfg, task, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    cfg.train.loss = "fldb"  # FL-DB only needs the intermediate log-rewards
    make_train(cfg, task)


def test_state_flow_parameters_train_only_under_db_family():
    task = _hypergrid_task()
    cfg = ml_collections.ConfigDict()
    cfg.seed = 0
    cfg.train = ml_collections.ConfigDict(dict(batch_size=8, lr=1e-2, lr_z=0.1, num_iterations=3, epsilon=0.0))
    tb_state = make_train(cfg, task).init(jax.random.PRNGKey(0))
    assert set(tb_state.params) == {"policy", "log_z"}
    cfg.train.loss = "db"
    fns = make_train(cfg, task)
    ts = fns.init(jax.random.PRNGKey(0))
    assert set(ts.params) == {"policy", "log_z", "flow"}
    # same policy initialisation as TB (the flow's key is derived apart)
    for a, b in zip(jax.tree.leaves(tb_state.params["policy"]), jax.tree.leaves(ts.params["policy"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ts2, metrics = jax.jit(fns.run_chunk, static_argnums=1)(ts, 3)
    assert np.all(np.isfinite(np.asarray(metrics["loss"]))) and float(metrics["nonfinite_skipped"].sum()) == 0
    moved = [not np.array_equal(np.asarray(a), np.asarray(b))
             for a, b in zip(jax.tree.leaves(ts.params["flow"]), jax.tree.leaves(ts2.params["flow"]), strict=True)]
    assert any(moved)
