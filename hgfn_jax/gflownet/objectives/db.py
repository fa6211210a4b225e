"""Detailed balance (Bengio et al. 2023, "GFlowNet Foundations", eq. 44; torchgfn ``DBGFlowNet``): one residual
per transition,

    log F(s_t) + log P_F(s_{t+1} | s_t) - log F(s_{t+1}) - log P_B(s_t | s_{t+1}),

with ``log F(s_0) = log Z`` and ``log F(x) = log R(x)`` at the terminal state (``objectives.common``). The loss is
the mean squared residual over the live transitions of the batch (padded steps after termination are excluded,
not counted as zeros), so a long trajectory weighs more than a short one, as in torchgfn.
"""

from __future__ import annotations

import jax.numpy as jnp

from hgfn_jax.gflownet.objectives.common import balance_potentials
from hgfn_jax.gflownet.rollout import Trajectory


def detailed_balance_residuals(log_z, traj: Trajectory, log_reward, log_flow) -> jnp.ndarray:
    """``[B, T]`` residual of each transition (0 where ``traj.step_mask`` is False)."""
    u, _ = balance_potentials(log_z, traj, log_reward, log_flow)
    return jnp.where(traj.step_mask, u[:, :-1] - u[:, 1:], 0.0)


def detailed_balance(log_z, traj: Trajectory, log_reward, log_flow) -> jnp.ndarray:
    """Mean squared DB residual over the live transitions of the batch."""
    r = detailed_balance_residuals(log_z, traj, log_reward, log_flow)
    n_live = jnp.maximum(jnp.sum(traj.step_mask), 1)
    return jnp.sum(jnp.square(r)) / n_live
