"""Layers shared by the JAX ports of matgl's models: dense stacks, torch's LSTM, PyG's Set2Set (masked)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

_LOG2 = float(jnp.log(2.0))


def softplus2(x: jnp.ndarray) -> jnp.ndarray:
    """matgl's ``SoftPlus2``: softplus(x) - log 2."""
    return jax.nn.softplus(x) - _LOG2


def dense(p: dict, x: jnp.ndarray) -> jnp.ndarray:
    y = x @ p["w"]
    return y + p["b"] if "b" in p else y


def mlp(layers: Sequence[dict], x: jnp.ndarray, act: Callable, activate_last: bool) -> jnp.ndarray:
    """matgl ``MLP``: Linear (+ act) per layer, the last activated only if ``activate_last``."""
    for i, p in enumerate(layers):
        x = dense(p, x)
        if i < len(layers) - 1 or activate_last:
            x = act(x)
    return x


def lstm_step(layers: Sequence[dict], x: jnp.ndarray, h: jnp.ndarray, c: jnp.ndarray):
    """One time step of a stacked torch ``nn.LSTM`` (gate order i, f, g, o). h, c: [L, H]."""
    hs, cs = [], []
    for i, p in enumerate(layers):
        gates = x @ p["w_ih"] + h[i] @ p["w_hh"] + p["b"]
        gi, gf, gg, go = jnp.split(gates, 4, axis=-1)
        ci = jax.nn.sigmoid(gf) * c[i] + jax.nn.sigmoid(gi) * jnp.tanh(gg)
        hi = jax.nn.sigmoid(go) * jnp.tanh(ci)
        hs.append(hi)
        cs.append(ci)
        x = hi
    return x, jnp.stack(hs), jnp.stack(cs)


def set2set(layers: Sequence[dict], x: jnp.ndarray, mask: jnp.ndarray, n_iters: int) -> jnp.ndarray:
    """PyG ``Set2Set`` (and matgl's ``EdgeSet2Set``) over the rows of ``x`` [M, D] where ``mask`` [M]; -> [2D].

    q* = 0; repeat: q = LSTM(q*), a = softmax_m(x_m . q) over the real rows, r = sum_m a_m x_m, q* = [q, r].
    """
    d = x.shape[-1]
    h = jnp.zeros((len(layers), d), x.dtype)
    c = jnp.zeros((len(layers), d), x.dtype)
    q_star = jnp.zeros((2 * d,), x.dtype)
    for _ in range(n_iters):
        q, h, c = lstm_step(layers, q_star, h, c)
        e = jnp.where(mask, x @ q, -jnp.inf)
        e_max = jnp.max(jnp.where(mask, e, jnp.finfo(x.dtype).min))
        w = jnp.where(mask, jnp.exp(e - e_max), 0.0)
        a = w / jnp.maximum(jnp.sum(w), jnp.finfo(x.dtype).tiny)
        r = a @ x
        q_star = jnp.concatenate([q, r])
    return q_star


def segment_set2set(
    layers: Sequence[dict], x: jnp.ndarray, mask: jnp.ndarray, segments: jnp.ndarray, num_segments: int, n_iters: int
) -> jnp.ndarray:
    """:func:`set2set` per segment of the rows of ``x`` [M, D] (``segments`` [M] sorted, ``mask`` [M]) -> [S, 2D]."""
    d = x.shape[-1]
    h = jnp.zeros((len(layers), num_segments, d), x.dtype)
    c = jnp.zeros((len(layers), num_segments, d), x.dtype)
    q_star = jnp.zeros((num_segments, 2 * d), x.dtype)
    low = jnp.finfo(x.dtype).min
    for _ in range(n_iters):
        q, h, c = lstm_step(layers, q_star, h, c)
        logits = jnp.where(mask, jnp.sum(x * q[segments], axis=-1), low)
        top = jax.ops.segment_max(logits, segments, num_segments, indices_are_sorted=True)
        w = jnp.where(mask, jnp.exp(logits - top[segments]), 0.0)
        denom = jax.ops.segment_sum(w, segments, num_segments, indices_are_sorted=True)
        a = w / jnp.maximum(denom[segments], jnp.finfo(x.dtype).tiny)
        r = jax.ops.segment_sum(a[:, None] * x, segments, num_segments, indices_are_sorted=True)
        q_star = jnp.concatenate([q, r], axis=-1)
    return q_star
