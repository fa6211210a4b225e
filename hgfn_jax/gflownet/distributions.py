"""Samplers and log-densities shared by the environments (general, environment-agnostic).

Each sampler here draws from a distribution whose log-density an environment's ``log_pf`` evaluates; the
tests (``tests/gflownet/test_distributions.py``) check them against numpyro / closed forms.
"""

from __future__ import annotations

import jax.numpy as jnp

from hgfn_jax.gflownet.env import Exploration


def sample_masked_icdf(u2: jnp.ndarray, logits: jnp.ndarray, mask: jnp.ndarray, explore: Exploration,
                       width: int) -> jnp.ndarray:
    """Index from softmax(logits / T) over ``mask`` or, with probability epsilon, uniform over ``mask``, by
    inverse-CDF sampling with the two uniforms ``u2`` (``u2[0]`` picks policy / uniform, ``u2[1]`` the index).

    The CDF is taken in two levels over the entries laid out as rows of ``width``: a running sum over the row
    masses picks the row, a running sum inside that row picks the entry (O(n) work, where a flat ``cumsum`` lowers
    to an O(n^2) ``reduce_window`` on CPU). Both running sums are sequential additions of non-negative terms, so
    they are non-decreasing and the first entry whose running sum exceeds the target has positive mass: masked
    entries are never returned. Rounding (the target at or beyond the total) falls back to the last row / entry
    with positive mass. An all-False mask returns 0 (only on unused stages)."""
    n = logits.shape[0]
    n_rows = -(-n // width)
    use_uniform = u2[0] < explore.epsilon
    z = jnp.where(mask, logits / explore.temperature, -jnp.inf)
    p = jnp.where(mask, jnp.exp(z - jnp.max(jnp.where(mask, z, -1e30))), 0.0)
    p = jnp.where(use_uniform, mask.astype(jnp.float32), p)
    p = jnp.concatenate([p, jnp.zeros(n_rows * width - n, p.dtype)]).reshape(n_rows, width)
    row_mass = jnp.sum(p, axis=1)
    row_cdf = running_sum(row_mass)
    u = u2[1] * row_cdf[-1]
    rows = jnp.arange(n_rows)
    last_row = jnp.max(jnp.where(row_mass > 0, rows, 0))
    r = jnp.minimum(jnp.sum(row_cdf <= u), last_row)
    sel = rows == r
    before = jnp.concatenate([jnp.zeros(1, row_cdf.dtype), row_cdf[:-1]])  # mass of the rows before each row
    u_in = u - jnp.sum(jnp.where(sel, before, 0.0))  # (exact: a single non-zero term)
    p_r = jnp.sum(jnp.where(sel[:, None], p, 0.0), axis=0)  # row r (exact: one non-zero term per column)
    cols = jnp.arange(width)
    last_col = jnp.max(jnp.where(p_r > 0, cols, 0))
    c = jnp.minimum(jnp.sum(running_sum(p_r) <= u_in), last_col)
    return (r * width + c).astype(jnp.int32)


def running_sum(x: jnp.ndarray) -> jnp.ndarray:
    """Inclusive prefix sum of a short vector by sequential additions (non-decreasing for non-negative ``x``)."""
    out = [x[0]]
    for i in range(1, x.shape[0]):
        out.append(out[-1] + x[i])
    return jnp.stack(out)
