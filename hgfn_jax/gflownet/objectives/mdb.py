"""Modified detailed balance MDB (Deleu et al. 2022, "Bayesian Structure Learning with Generative Flow Networks",
eq. 6; gfnx ``ModifiedDetailedBalance``): for environments where EVERY state can terminate (the STOP action is
available everywhere and ``R(s)`` is defined at every state), the state flow is not learned but given by

    F(s) = R(s) / P_F(stop | s),

so the detailed-balance condition of a non-stopping transition ``s -> s'`` becomes

    log R(s') + log P_B(s | s') + log P_F(stop | s) = log R(s) + log P_F(s' | s) + log P_F(stop | s'),

the residual this module squares, i.e. DB's ``u_t - u_{t+1}`` over the potentials of ``objectives.common`` with
``log F = log R(s) - log P_F(stop | s)`` (:func:`stop_log_flow`) at EVERY position, the source included: pinning
``log F(s_0)`` to ``log Z`` as DB does would leave ``P_F(stop | s_0)`` in no residual at all (the stopping
transition's residual is identically 0, ``log R(s) - log R(x)`` with ``x`` the same point), so the source's stop
probability would never be trained. Stopping transitions are excluded from the mean (they carry no information).

``params["log_z"]`` does not enter the balance; so that it keeps its meaning under every objective it is
regressed onto the flow the policy implies at the source, ``log R(s_0) - log P_F(stop | s_0)`` (equal to log Z
at the fixed point), with a stop-gradient on that target: the extra term trains log Z only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hgfn_jax.gflownet.objectives.common import balance_potentials
from hgfn_jax.gflownet.rollout import Trajectory


def stop_log_flow(state_log_reward: jnp.ndarray, log_pf_stop: jnp.ndarray) -> jnp.ndarray:
    """``[B, T + 1]`` MDB's ``log F(s) = log R(s) - log P_F(stop | s)`` (the reward a constant of the loss; the
    stop log-probability differentiable: MDB trains it)."""
    return jax.lax.stop_gradient(state_log_reward) - log_pf_stop


def modified_detailed_balance_residuals(traj: Trajectory, log_reward, log_flow) -> jnp.ndarray:
    """``[B, T]`` residual of each live non-stopping transition (0 elsewhere)."""
    u, _ = balance_potentials(jnp.float32(0.0), traj, log_reward, log_flow, pin_source=False)
    return jnp.where(_moves(traj), u[:, :-1] - u[:, 1:], 0.0)


def modified_detailed_balance(log_z, traj: Trajectory, log_reward, log_flow) -> jnp.ndarray:
    """Mean squared MDB residual over the live non-stopping transitions, plus log Z's regression onto
    ``stop_gradient(log F(s_0))``."""
    r = modified_detailed_balance_residuals(traj, log_reward, log_flow)
    n_moves = jnp.maximum(jnp.sum(_moves(traj)), 1)
    z_fit = jnp.mean(jnp.square(log_z - jax.lax.stop_gradient(log_flow[:, 0])))
    return jnp.sum(jnp.square(r)) / n_moves + z_fit


def _moves(traj: Trajectory) -> jnp.ndarray:
    """``[B, T]`` live transitions that do not terminate (the last live step of a finished trajectory is STOP)."""
    pos = jnp.arange(traj.log_pf.shape[1])[None, :]
    stop = (pos == traj.length[:, None] - 1) & traj.done[:, None]
    return traj.step_mask & ~stop
