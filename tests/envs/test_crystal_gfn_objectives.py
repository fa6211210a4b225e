"""DB, SubTB and FL-DB through the one training loop learn the reduced, enumerable Crystal-GFN of
test_crystal_gfn_learning.py (groups 221 / 225, Li-Mn-O, at most 3 atoms each, exact composition mode, a
synthetic log-normal reward on the 25 valid (group, composition) pairs, lattice-blind): TV < 0.05 between the
sampled (group, composition) frequencies and R / Z, and log F(s0) = params["log_z"] within 0.05 of log Z, with
the LEARNED backward policy (its space-group, composition and back-to-source heads trained with the objective).

The state flow log F(s) is a density w.r.t. the lattice's reference measure at the continuous states (the flow
network learns it like any value; ``gflownet.objectives.common``). min_incr = 0.99 as in the TB test: the lattice
stage is one continuous source step (a Beta-mixture density the DB residual must balance against the backward
back-to-source probability), then EOS. Measured at min_incr = 0.5 (increments of the cube): SubTB(0.9) TV 0.036
after 3,000 updates at lr 3e-3, DB 0.058 (3,000 updates) / 0.14 (1,500): DB's one-step residuals propagate the
reward through the continuous stage slowly, which is why the test keeps the TB test's 0.99.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hgfn_jax.envs.crystal_gfn import CrystalGFN
from hgfn_jax.envs.crystal_gfn.types import STAGE_LATTICE
from hgfn_jax.gflownet.train import Task, make_train
from hgfn_jax.policies.mlp import make_mlp_policy

# Measured (seed 0 / 1 / 2, 20,000 samples; a perfect sampler gives TV ~0.01): DB TV 0.018 / 0.023 / 0.023, log Z
# error -0.004 / -0.013 / -0.006; SubTB TV 0.028 / 0.019 / 0.018, log Z error -0.010 / -0.012 / -0.003. FL-DB
# (intermediate energy = the reward once the composition is complete, 0 before) TV 0.017 / 0.022 / 0.019, log Z
# error -0.004 / -0.016 / -0.007. Gradient
# clipping matters for the state-flow objectives here: without it, at lr 1e-2, single exploratory lattice samples
# far in a peaked Beta mixture's tail gave loss spikes of ~50 that threw log Z back to ~0 (DB seed 1: TV 0.23);
# DB at lr 1e-2 with clipping still ended on a spike at seed 0 (TV 0.054), hence lr 5e-3 and 2,000 updates for DB.
SETTINGS = {"db": dict(lr=5e-3, lr_z=5e-2, num_iterations=2000), "subtb": dict(lr=1e-2, lr_z=5e-2, num_iterations=1500),
            "fldb": dict(lr=5e-3, lr_z=5e-2, num_iterations=2000)}


@pytest.mark.parametrize("loss", ["db", "subtb", "fldb"])
def test_objective_matches_enumerable_crystal_target_with_learned_pb(loss, seed=0):
    env = CrystalGFN(elements=("Li", "Mn", "O"), spacegroups=(221, 225), max_per_element=3, max_distinct=3,
                     min_incr=0.99, n_comp=2, composition_mode="exact", learn_pb=True)
    valid = np.asarray(env.comp.valid) & np.asarray(env.sg_ok)[:, None]  # [G, codes]
    assert int(valid.sum()) == 25
    log_r_table = np.where(valid, np.random.default_rng(0).normal(0.0, 1.0, valid.shape), -np.inf)
    target = np.exp(log_r_table - np.max(log_r_table))
    target /= target.sum()
    log_r_jnp = jnp.asarray(np.where(valid, log_r_table, -30.0), jnp.float32)

    def log_reward(state):
        return log_r_jnp[state.spacegroup.row, state.composition.code], {}

    def state_log_reward(state):
        # FL-DB's intermediate energies: the reward is known once the composition is complete (lattice-blind
        # target); before that, E(s) = 0
        return jnp.where(state.stage >= STAGE_LATTICE, log_reward(state)[0], 0.0)

    cfg = ml_collections.ConfigDict()
    cfg.seed = 0
    cfg.train = ml_collections.ConfigDict(dict(batch_size=64, epsilon=0.05, temperature=1.0, loss=loss,
                                               subtb_lambda=0.9, grad_clip=1.0, **SETTINGS[loss]))
    task = Task("crystal_gfn_toy", env, make_mlp_policy(env, hidden=(64, 64)), log_reward,
                state_log_reward=state_log_reward)
    _, _, _, train, sample = make_train(cfg, task)
    ts, metrics = jax.jit(train)(jax.random.PRNGKey(seed))
    assert float(jnp.mean(metrics["not_done_frac"])) == 0.0
    assert float(metrics["nonfinite_skipped"].sum()) == 0

    counts = np.zeros(valid.shape)
    sample_jit = jax.jit(sample, static_argnums=2)
    for j in range(4):
        final = sample_jit(ts.params, jax.random.PRNGKey(100 + j), 5000).final
        np.add.at(counts, (np.asarray(final.spacegroup.row), np.asarray(final.composition.code)), 1)
    assert counts[~valid].sum() == 0
    tv = 0.5 * np.abs(counts / counts.sum() - target).sum()
    log_z = np.log(np.exp(log_r_table[valid]).sum())
    log_z_hat = float(jnp.mean(metrics["log_z"][-200:]))  # Adam's step noise on the parameter is a few 0.01
    print(f"{loss}, learned P_B: TV {tv:.4f}, log F(s0) {log_z_hat:.4f}, true log Z {log_z:.4f}")
    assert tv < 0.05, tv
    np.testing.assert_allclose(log_z_hat, log_z, atol=0.05)
