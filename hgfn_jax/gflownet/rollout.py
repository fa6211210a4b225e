"""One rollout for every environment: ``lax.scan`` over ``env.max_steps``, ``vmap`` over the batch.

The policy is evaluated once per step on the whole batch (``T + 1`` calls for ``T`` steps): the outputs for state
``s_{t+1}`` give both the backward log-probability of transition ``t`` and the forward choice of step ``t + 1``.
Sampling sees ``stop_gradient`` of the policy outputs, so gradients flow only through ``log_pf`` / ``log_pb``
(the score-function form trajectory balance needs; no reparameterisation leaks through continuous samples).
Steps taken from an already terminal state are masked out (log-probabilities 0, state unchanged, action
zeros); once every trajectory of the batch is terminal the remaining steps do no work.

The environment is called through its batched entry points (``Environment.sample_action_batch`` etc.; by default
the vmapped per-state methods). The scan itself is not differentiated: it evaluates the policy on
``stop_gradient(params)``, and the gradient of the returned ``log_pf`` / ``log_pb`` with respect to ``params`` is
attached afterwards by a ``custom_vjp`` whose backward pass re-evaluates the same functions (policy, then
``log_pf_batch`` / ``log_pb_batch``) once on all ``T + 1`` visited states. Values and gradients are those of the
step-by-step computation (same functions of the same inputs), with one large batch instead of ``T`` small ones
in the backward pass and no per-step residuals; without differentiation the re-evaluation is dead code.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hgfn_jax.gflownet.env import Environment, Exploration, tree_where
from hgfn_jax.gflownet.policy import PolicyApply


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
    # Inside the scan the policy sees stop_gradient(params): the scan is never differentiated. The gradient of
    # log_pf / log_pb with respect to params is attached after the scan (``_replay_grad``): its backward pass
    # re-evaluates the policy once on all visited states (one large batch instead of T small ones).
    params_ng = jax.lax.stop_gradient(params)
    fwd, bwd = policy_apply(params_ng, states)
    del bwd
    v_sample = env.sample_action_batch  # (keys, fwd, states, explore): the vmapped sample_action by default
    v_step = env.step_batch
    v_done = jax.vmap(env.is_done)
    v_log_pf = env.log_pf_batch
    v_log_pb = env.log_pb_batch

    def live_step(s, fwd_s, key_t, done):
        keys = jax.random.split(key_t, batch_size)
        action = v_sample(keys, jax.lax.stop_gradient(fwd_s), s, explore)
        s_next = tree_where(done, s, v_step(s, action))
        fwd_next, bwd_next = policy_apply(params_ng, s_next)
        live = ~done
        lpf = jnp.where(live, v_log_pf(fwd_s, s, action), 0.0)
        lpb = jnp.where(live, v_log_pb(bwd_next, s_next, action, s), 0.0)
        action = tree_where(live, action, jax.tree.map(jnp.zeros_like, action))
        return s_next, fwd_next, lpf.astype(jnp.float32), lpb.astype(jnp.float32), action

    def body(carry, key_t):
        s, fwd_s = carry
        done = v_done(s)
        # Once the whole batch is terminal the step changes nothing: skip its work (a real branch under jit; under
        # an outer vmap both branches run and select, with the same result).
        skip = lambda: (s, fwd_s, jnp.zeros(done.shape, jnp.float32), jnp.zeros(done.shape, jnp.float32),
                        jax.tree.map(jnp.zeros_like, action_shape))
        s_next, fwd_next, lpf, lpb, action = jax.lax.cond(
            jnp.all(done), skip, lambda: live_step(s, fwd_s, key_t, done))
        out = (lpf, lpb, ~done, action, s)
        return (s_next, fwd_next), out

    action_shape = jax.eval_shape(lambda k, f, st: v_sample(jax.random.split(k, batch_size), f, st, explore),
                                  key, fwd, states)
    keys = jax.random.split(key, env.max_steps)
    (final, _), (lpf, lpb, live, actions, trail) = jax.lax.scan(body, (states, fwd), keys)
    # values from the scan, gradient from one batched re-evaluation (the trail of visited states feeds only the
    # backward pass: without differentiation it is dead code)
    lpf, lpb = _replay_grad(functools.partial(replay_log_probs, env, policy_apply), params,
                            (trail, final, actions, live), (lpf, lpb))
    visited = trail if return_states else None
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


def replay_log_probs(env: Environment, policy_apply: PolicyApply, params, aux):
    """``(log_pf, log_pb) [T, B]`` of the recorded transitions, the policy evaluated once on every visited state.

    ``aux = (trail [T, B, ...] states before each step, final [B, ...], actions [T, B, ...], live [T, B])``. The
    same functions of the same states as inside the scan: ``fwd`` of ``s_t`` for transition ``t``, ``bwd`` of
    ``s_{t+1}``."""
    trail, final, actions, live = aux
    n_t, n_b = live.shape
    all_states = jax.tree.map(lambda x, f: jnp.concatenate([x, f[None]], axis=0), trail, final)  # [T + 1, B]
    flat = lambda x, n: jnp.reshape(x, (n * n_b,) + x.shape[2:])
    fwd, bwd = policy_apply(params, jax.tree.map(lambda x: flat(x, n_t + 1), all_states))
    fwd = jnp.reshape(fwd, (n_t + 1, n_b) + fwd.shape[1:])
    bwd = jnp.reshape(bwd, (n_t + 1, n_b) + bwd.shape[1:])
    # Dead transitions (taken from an already terminal state) are masked to 0 below, but their log-probabilities
    # may be NaN (zeroed actions): a masked NaN still poisons the gradient (0 * NaN). They are evaluated on the
    # trajectory's first transition instead (always live), whose finite values the mask then discards.
    def live_or_first(x):  # [T, B, ...]
        return jnp.where(jnp.reshape(live, live.shape + (1,) * (x.ndim - 2)), x, x[:1])

    prev = jax.tree.map(lambda x: flat(live_or_first(x), n_t), trail)
    nxt = jax.tree.map(lambda x: flat(live_or_first(x[1:]), n_t), all_states)
    acts = jax.tree.map(lambda x: flat(live_or_first(x), n_t), actions)
    lpf = env.log_pf_batch(flat(live_or_first(fwd[:-1]), n_t), prev, acts).reshape(n_t, n_b)
    lpb = env.log_pb_batch(flat(live_or_first(bwd[1:]), n_t), nxt, acts, prev).reshape(n_t, n_b)
    return (jnp.where(live, lpf, 0.0).astype(jnp.float32), jnp.where(live, lpb, 0.0).astype(jnp.float32))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _replay_grad(fn, params, aux, values):
    """``values`` (computed in the scan with stop_gradient(params)), with the gradient of ``fn(params, aux)``:
    the two are the same function of the same inputs, so this is the exact gradient of the log-probabilities;
    the backward pass runs ``fn`` once on the whole batch of visited states."""
    del fn, params, aux
    return values


def _replay_grad_fwd(fn, params, aux, values):
    return values, (params, aux)


def _zero_cotangent(x):
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.inexact):
        return jnp.zeros_like(x)
    return np.zeros(x.shape, jax.dtypes.float0)


def _replay_grad_bwd(fn, res, g):
    params, aux = res
    _, vjp = jax.vjp(lambda p: fn(p, aux), params)
    (g_params,) = vjp(g)
    return g_params, jax.tree.map(_zero_cotangent, aux), jax.tree.map(jnp.zeros_like, g)


_replay_grad.defvjp(_replay_grad_fwd, _replay_grad_bwd)
