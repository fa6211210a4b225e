"""Trajectory balance (Malkin et al. 2022; paper 000 eq. 3 / eqs. 7-10): one residual per whole trajectory,

    log Z + sum_t log P_F(s_{t+1} | s_t) - log R(x) - sum_t log P_B(s_t | s_{t+1}).

Needs no state flow: ``log Z`` (``params["log_z"]``) is the only flow parameter. Masked (padded) steps carry
log-probabilities 0 in the :class:`Trajectory`, so the sums run over the live transitions only.
"""

from __future__ import annotations

import jax.numpy as jnp

from hgfn_jax.gflownet.rollout import Trajectory


def trajectory_balance_residual(log_z: jnp.ndarray, traj: Trajectory, log_reward: jnp.ndarray) -> jnp.ndarray:
    """``[B]`` residuals ``log Z + sum log P_F - log R(x) - sum log P_B``."""
    return log_z + traj.sum_log_pf - log_reward - traj.sum_log_pb


def trajectory_balance(log_z: jnp.ndarray, traj: Trajectory, log_reward: jnp.ndarray) -> jnp.ndarray:
    """Mean squared trajectory-balance residual over the batch."""
    return jnp.mean(jnp.square(trajectory_balance_residual(log_z, traj, log_reward)))
