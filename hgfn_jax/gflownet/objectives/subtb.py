"""Sub-trajectory balance SubTB(lambda) (Madan et al. 2023, eq. 9; torchgfn ``SubTBGFlowNet``, weighting
"geometric_within"): every sub-trajectory ``s_i -> ... -> s_j`` (``0 <= i < j <= n``) of a trajectory has the
residual

    log F(s_i) + sum_{t=i}^{j-1} (log P_F - log P_B) - log F(s_j) = u_i - u_j      (``objectives.common``)

and the loss of one trajectory is the lambda^(j - i)-weighted mean of the squared residuals over its
``n (n + 1) / 2`` sub-trajectories; the batch loss is the mean over trajectories. ``lambda -> 0`` weighs the
one-step sub-trajectories (DB), large lambda the whole trajectory (``i = 0, j = n``: TB's residual, since
``log F(s_0) = log Z``). Pairs that touch padding (``j > n``) get weight exactly 0.
"""

from __future__ import annotations

import jax.numpy as jnp

from hgfn_jax.gflownet.objectives.common import balance_potentials
from hgfn_jax.gflownet.rollout import Trajectory


def subtrajectory_balance(log_z, traj: Trajectory, log_reward, log_flow, lam: float) -> jnp.ndarray:
    """SubTB(lambda) loss (mean over trajectories of the per-trajectory weighted mean)."""
    u, valid = balance_potentials(log_z, traj, log_reward, log_flow)
    n_pos = u.shape[1]
    i = jnp.arange(n_pos)[:, None]
    j = jnp.arange(n_pos)[None, :]
    span = (j - i).astype(jnp.float32)
    # lambda^(j - i) on pairs i < j, both positions valid (valid is a prefix, so j valid implies i valid)
    w = jnp.where(j > i, jnp.power(jnp.float32(lam), jnp.maximum(span, 0.0)), 0.0)[None] * valid[:, None, :]
    r2 = jnp.square(u[:, :, None] - u[:, None, :])
    per_traj = jnp.sum(w * r2, axis=(1, 2)) / jnp.maximum(jnp.sum(w, axis=(1, 2)), 1e-30)
    return jnp.mean(per_traj)
