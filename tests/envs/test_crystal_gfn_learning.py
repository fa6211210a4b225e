"""Correctness of learning on a reduced, enumerable Crystal-GFN: the shared training loop (rollout, trajectory
balance, ``hgfn_jax.gflownet.train.make_train``) learns to sample (space group, composition) with frequencies R(x) / Z,
within total variation 0.05 over 40,000 samples, and its log Z parameter converges to the true log Z.

The synthetic reward ignores the lattice. Both groups are cubic (one free lattice parameter, normalised to
[0, 1], reference measure 1), so the (group, composition) marginal of the target is exactly R(g, c) / sum R.
The lattice subspace still runs (Beta-mixture source step, EOS), so its forward and backward densities must be
right for the discrete marginal to come out right.

P_B is fixed here (uniform parents; the fixed backward lattice process). With a fixed P_B the forward lattice
family must be able to match that backward process, or TB's optimum is misspecified: at min_incr = 0.5 the fixed
backward (back-to-source with probability 0.1, else a uniform increment) asks the forward Beta mixture for a
piecewise density it cannot represent, the learned log Z settles 0.15-0.17 below the truth (TB's ELBO gap; it
failed CI at 0.155 on another CPU) and the discrete marginal carries a training-seed-dependent bias (TV 0.045 at
seed 1, 80,000 samples). min_incr = 0.99 makes the lattice stage one source step (an increment needs
u <= 0.01) whose target density is uniform, which a Beta mixture represents, so this test checks the discrete
stages with almost no continuous misspecification: TV 0.017 / 0.023 / 0.023 and learned log Z 0.022-0.027 below
the truth over training seeds 0 / 1 / 2. The continuous stage with a learned P_B is checked in
test_crystal_gfn_parents.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hgfn_jax.envs.crystal_gfn import CrystalGFN
from hgfn_jax.gflownet.train import Task, make_train
from hgfn_jax.policies.mlp import make_mlp_policy


def test_tb_matches_enumerable_target():
    # groups 221 (Pm-3m) and 225 (Fm-3m), elements Li, Mn, O, at most 3 atoms each: 25 valid (group, composition)
    env = CrystalGFN(elements=("Li", "Mn", "O"), spacegroups=(221, 225), max_per_element=3, max_distinct=3,
                     min_incr=0.99, n_comp=2, composition_mode="exact", learn_pb=False)
    assert env.comp.exact
    valid = np.asarray(env.comp.valid) & np.asarray(env.sg_ok)[:, None]  # [G, codes]
    n_x = int(valid.sum())
    assert 15 <= n_x <= 60, n_x
    log_r_table = np.where(valid, np.random.default_rng(0).normal(0.0, 1.0, valid.shape), -np.inf)
    target = np.exp(log_r_table - np.max(log_r_table))
    target /= target.sum()
    log_r_jnp = jnp.asarray(np.where(valid, log_r_table, -30.0), jnp.float32)

    def log_reward(state):
        return log_r_jnp[state.spacegroup.row, state.composition.code], {}

    cfg = ml_collections.ConfigDict()
    cfg.seed = 0
    cfg.train = ml_collections.ConfigDict(
        dict(batch_size=64, lr=1e-2, lr_z=5e-2, num_iterations=3000, epsilon=0.05, temperature=1.0)
    )
    task = Task("crystal_gfn_toy", env, make_mlp_policy(env, hidden=(64, 64)), log_reward)
    _, _, _, train, sample = make_train(cfg, task)
    ts, metrics = jax.jit(train)(jax.random.PRNGKey(0))
    assert float(jnp.mean(metrics["not_done_frac"])) == 0.0  # max_steps always suffices

    counts = np.zeros(valid.shape)
    sample_jit = jax.jit(sample, static_argnums=2)
    for j in range(8):
        final = sample_jit(ts.params, jax.random.PRNGKey(100 + j), 5000).final
        assert bool(jnp.all(jax.vmap(env.is_done)(final)))
        np.add.at(counts, (np.asarray(final.spacegroup.row), np.asarray(final.composition.code)), 1)
    assert counts[~valid].sum() == 0  # every sample is a valid (group, composition)
    emp = counts / counts.sum()
    tv = 0.5 * np.abs(emp - target).sum()
    log_z = np.log(np.exp(log_r_table[valid]).sum())
    log_z_hat = float(jnp.mean(metrics["log_z"][-500:]))  # Adam's step noise on the parameter is a few 0.01
    print(f"exact mode, fixed P_B: TV {tv:.4f}, learned log Z {log_z_hat:.4f}, true {log_z:.4f}")
    assert tv < 0.05, tv
    np.testing.assert_allclose(log_z_hat, log_z, atol=0.05)
