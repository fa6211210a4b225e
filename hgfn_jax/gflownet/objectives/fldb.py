"""Forward-looking detailed balance FL-DB (Pan et al. 2023, "Better Training of GFlowNets with Local Credit and
Incomplete Trajectories", eqs. 8-9): detailed balance with the state flow re-parametrised as

    log F(s) = log F~(s) - E(s),

where ``-E(s)`` is an intermediate log-reward the TASK supplies at every state (``Task.state_log_reward``; at a
terminal state it equals ``log R(x)``) and only ``log F~`` is learned (the state-flow head). Each transition's
residual then carries the energy change ``E(s) - E(s')`` explicitly, so the reward gives credit one step at a
time instead of only at the end of the trajectory; the fixed point is DB's (the same F, re-parametrised), so the
sampler still learns R / Z.

Here that is DB over the potentials of ``objectives.common`` with the flow values ``log F~(s) + state_log_r(s)``
(:func:`forward_looking_log_flow`): ``log F(s_0) = log Z`` and ``log F(x) = log R(x)`` stay pinned as for DB, so
``params["log_z"]`` keeps its meaning. A task without intermediate energies cannot use it (refused by name in
``gflownet.train``); for the hypergrid, ``-E(s)`` is the reward of stopping at ``s``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def forward_looking_log_flow(log_flow_tilde: jnp.ndarray, state_log_reward: jnp.ndarray) -> jnp.ndarray:
    """``[B, T + 1]`` FL-DB's ``log F(s) = log F~(s) - E(s)`` with ``-E(s) = state_log_reward`` (a constant of the
    loss: no gradient reaches the task's energies)."""
    return log_flow_tilde + jax.lax.stop_gradient(state_log_reward)
