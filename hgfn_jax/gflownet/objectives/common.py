"""What the state-flow objectives (DB, SubTB) share: the states of a trajectory and the balance potentials.

For a trajectory ``s_0 -> s_1 -> ... -> s_n = x`` (``n = traj.length``) every balance condition of the
DB family is a difference of the POTENTIALS

    u_k = log F(s_k) - sum_{t < k} log P_F(s_{t+1} | s_t) + sum_{t < k} log P_B(s_t | s_{t+1}),   k = 0..n,

because the residual of the sub-trajectory ``s_i -> ... -> s_j`` is
``log F(s_i) + sum_{t=i}^{j-1} (log P_F - log P_B) - log F(s_j) = u_i - u_j``. The flows at the ends are pinned:

- ``log F(s_0) = log Z`` (``params["log_z"]``: the source flow is the partition function, the same parameter TB
  learns, so ``log_z`` means the same thing under every objective);
- ``log F(s_n) = log R(x)`` when the trajectory reached a terminal state (``traj.done``); a trajectory cut by
  ``max_steps`` keeps the flow network's value at its last state.

Positions ``k > n`` (padding after termination) are invalid: their potentials are set to 0 and every residual
that touches them is masked out exactly (weight 0, not a small number).

Continuous steps follow TB's reference-measure rule unchanged: ``log P_F`` and ``log P_B`` of a transition are
log-densities w.r.t. the same measure (see ``gflownet.env``), so ``log P_F - log P_B`` is a log Radon-Nikodym
derivative and ``log F`` at a state with continuous coordinates is a log-density of the state flow w.r.t. the
environment's reference measure on those coordinates (the flow network learns it like any other value).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hgfn_jax.gflownet.rollout import Trajectory


def trajectory_states(traj: Trajectory):
    """``[B, T + 1, ...]``: ``s_0 .. s_T`` (the states before each step, then the final state). Needs a trajectory
    rolled out with ``return_states=True``. Positions after termination repeat the terminal state."""
    if traj.states is None:
        raise ValueError("state-flow objectives need the visited states: roll out with return_states=True")
    return jax.tree.map(lambda s, f: jnp.concatenate([s, f[:, None]], axis=1), traj.states, traj.final)


def balance_potentials(log_z: jnp.ndarray, traj: Trajectory, log_reward: jnp.ndarray,
                       log_flow: jnp.ndarray, pin_source: bool = True) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(u [B, T + 1], valid [B, T + 1] bool)``: the potentials above and which positions ``k <= n`` exist.

    ``log_flow [B, T + 1]`` is the flow network's log F at :func:`trajectory_states`; its values at position 0
    and at a terminal position are replaced by ``log_z`` and ``log_reward [B]`` (position 0 kept when
    ``pin_source`` is False: modified DB defines F(s_0) through the reward, ``objectives.mdb``)."""
    n_b, n_t = traj.log_pf.shape
    if log_flow.shape != (n_b, n_t + 1):
        raise ValueError(f"log_flow must be [B, T + 1] = {(n_b, n_t + 1)}, got {log_flow.shape}")
    pos = jnp.arange(n_t + 1)[None, :]
    n = traj.length[:, None]
    log_f = jnp.where(pos == 0, log_z, log_flow) if pin_source else log_flow
    log_f = jnp.where((pos == n) & traj.done[:, None], log_reward[:, None], log_f)
    zero = jnp.zeros((n_b, 1), log_flow.dtype)
    cum = jnp.concatenate([zero, jnp.cumsum(traj.log_pf - traj.log_pb, axis=1)], axis=1)  # masked steps add 0
    valid = pos <= n
    # invalid positions set to 0 BEFORE any difference: a masked inf/NaN would still poison the gradient
    return jnp.where(valid, log_f - cum, 0.0), valid
