"""The state-flow head ``log F(s)`` of the DB-family objectives.

A :class:`StateFlow` is a pair of pure functions like a ``Policy``: ``init(key, states [B]) -> params`` and
``apply(params, states [B]) -> log F [B]``. Its parameters live under ``params["flow"]`` of the training state,
apart from the policy's (so a TB run's parameters are unchanged and any policy, including graph policies,
combines with any objective). The default, :func:`make_mlp_flow`, is a small MLP over ``env.encode(state)``:
the same state features an MLP policy sees, defined for every environment by the contract. A task may supply
its own (``Task.flow``), e.g. a head sharing a graph encoder.

Only states strictly between ``s_0`` and the terminal state use it: ``log F(s_0)`` is ``params["log_z"]`` and
``log F(x) = log R(x)`` (``objectives.common``).

:func:`state_log_flows` gives every objective its per-state log-flows: the head's output (db, subtb), the head's
plus the task's intermediate log-reward (fldb, ``objectives.fldb``) or the reward over the stop probability
(mdb, ``objectives.mdb``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hgfn_jax.gflownet.env import Environment
from hgfn_jax.gflownet.objectives.common import trajectory_states
from hgfn_jax.gflownet.objectives.fldb import forward_looking_log_flow
from hgfn_jax.gflownet.objectives.mdb import stop_log_flow


@dataclass(frozen=True)
class StateFlow:
    """``init(key, states [B]) -> params``; ``apply(params, states [B]) -> log F [B] float32``."""

    init: Callable[[jax.Array, Any], Any]
    apply: Callable[[Any, Any], jnp.ndarray]


class _FlowMLP(nn.Module):
    hidden: Sequence[int]

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.leaky_relu(nn.Dense(width)(x))
        return nn.Dense(1, kernel_init=nn.initializers.zeros)(x)[..., 0]  # log F = 0 at initialisation


def make_mlp_flow(env: Environment, hidden: Sequence[int] = (64, 64)) -> StateFlow:
    """An MLP ``encode(s) -> log F(s)``."""
    net = _FlowMLP(tuple(int(h) for h in hidden))
    encode = jax.vmap(env.encode)

    def init(key, states):
        return net.init(key, encode(states))

    def apply(params, states):
        return net.apply(params, encode(states)).astype(jnp.float32)

    return StateFlow(init=init, apply=apply)


def state_log_flows(objective, traj, params, flow: StateFlow | None, env: Environment, policy_apply,
                    state_log_reward) -> jnp.ndarray | None:
    """``[B, T + 1]`` the log-flows ``objective`` balances at the trajectory's states, or None (tb).

    ``params``: the training state's ``{"policy", "log_z"[, "flow"]}``; ``state_log_reward(ONE state) -> []``:
    the task's log-reward at any state (fldb, mdb); ``policy_apply`` gives mdb its ``P_F(stop | s)`` (one call
    on all ``B (T + 1)`` states, differentiable)."""
    if not objective.needs_states:
        return None
    states = trajectory_states(traj)
    lead = jax.tree.leaves(states)[0].shape[:2]
    flat = jax.tree.map(lambda x: jnp.reshape(x, (lead[0] * lead[1],) + x.shape[2:]), states)
    per_state = lambda v: jnp.reshape(v, lead).astype(jnp.float32)
    state_log_r = per_state(jax.vmap(state_log_reward)(flat)) if objective.needs_state_reward else None
    if objective.needs_stop:
        fwd, _ = policy_apply(params["policy"], flat)
        return stop_log_flow(state_log_r, per_state(jax.vmap(env.log_pf_stop)(fwd, flat)))
    log_f = per_state(flow.apply(params["flow"], flat))
    return log_f if state_log_r is None else forward_looking_log_flow(log_f, state_log_r)
