"""One rollout for every environment: ``lax.scan`` over ``env.max_steps``, ``vmap`` over the batch.

The policy is evaluated once per step on the whole batch (``T + 1`` calls for ``T`` steps): the outputs for state
``s_{t+1}`` give both the backward log-probability of transition ``t`` and the forward choice of step ``t + 1``.
Sampling sees ``stop_gradient`` of the policy outputs, so gradients flow only through ``log_pf`` / ``log_pb``
(the score-function form trajectory balance needs; no reparameterisation leaks through continuous samples).
Steps taken from an already terminal state are masked out (log-probabilities 0, state unchanged).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from hgfn_jax.gflownet.env import Environment, Exploration, tree_where

# policy_apply(params, states [B, ...]) -> (fwd [B, fwd_dim], bwd [B, bwd_dim])
PolicyApply = Callable[[Any, Any], tuple[jnp.ndarray, jnp.ndarray]]


@struct.dataclass
class Trajectory:
    final: Any  # terminal states, PyTree with leading [B]
    log_pf: jnp.ndarray  # [B, T] float32: log P_F of each transition (0 on masked steps)
    log_pb: jnp.ndarray  # [B, T] float32: log P_B of each transition (0 on masked steps)
    step_mask: jnp.ndarray  # [B, T] bool: the transition happened (state was not yet terminal)
    done: jnp.ndarray  # [B] bool: the final state is terminal (must be all True when max_steps is right)
    actions: Any  # PyTree with leading [B, T]
    states: Any = None  # optional PyTree [B, T, ...]: the state BEFORE each step

    @property
    def length(self) -> jnp.ndarray:  # [B] int32
        return jnp.sum(self.step_mask, axis=1).astype(jnp.int32)

    @property
    def sum_log_pf(self) -> jnp.ndarray:  # [B]
        return jnp.sum(self.log_pf, axis=1)

    @property
    def sum_log_pb(self) -> jnp.ndarray:  # [B]
        return jnp.sum(self.log_pb, axis=1)


def init_states(env: Environment, batch_size: int):
    """``batch_size`` copies of s0 (PyTree with leading ``[B]``)."""
    s0 = env.init()
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (batch_size,) + jnp.shape(x)), s0)


def rollout(
    key: jax.Array,
    env: Environment,
    policy_apply: PolicyApply,
    params: Any,
    batch_size: int,
    explore: Exploration,
    start=None,
    return_states: bool = False,
) -> Trajectory:
    """Samples ``batch_size`` trajectories from s0 (or from ``start``, a batch of states) to termination.

    ``batch_size`` and ``return_states`` must be static under ``jit``.
    """
    states = init_states(env, batch_size) if start is None else start
    fwd, bwd = policy_apply(params, states)
    del bwd
    v_sample = jax.vmap(env.sample_action, in_axes=(0, 0, 0, None))
    v_step = jax.vmap(env.step)
    v_done = jax.vmap(env.is_done)
    v_log_pf = jax.vmap(env.log_pf)
    v_log_pb = jax.vmap(env.log_pb)

    def body(carry, key_t):
        s, fwd_s = carry
        done = v_done(s)
        keys = jax.random.split(key_t, batch_size)
        action = v_sample(keys, jax.lax.stop_gradient(fwd_s), s, explore)
        s_next = tree_where(done, s, v_step(s, action))
        fwd_next, bwd_next = policy_apply(params, s_next)
        live = ~done
        lpf = jnp.where(live, v_log_pf(fwd_s, s, action), 0.0)
        lpb = jnp.where(live, v_log_pb(bwd_next, s_next, action, s), 0.0)
        out = (lpf, lpb, live, action, s if return_states else None)
        return (s_next, fwd_next), out

    keys = jax.random.split(key, env.max_steps)
    (final, _), (lpf, lpb, live, actions, visited) = jax.lax.scan(body, (states, fwd), keys)
    swap = lambda x: jnp.swapaxes(x, 0, 1)
    return Trajectory(
        final=final,
        log_pf=swap(lpf),
        log_pb=swap(lpb),
        step_mask=swap(live),
        done=v_done(final),
        actions=jax.tree.map(swap, actions),
        states=None if visited is None else jax.tree.map(swap, visited),
    )
