"""Samplers and log-densities shared by the environments (general, environment-agnostic).

Each sampler here draws from a distribution whose log-density an environment's ``log_pf`` evaluates; the
tests (``tests/gflownet/test_distributions.py``) check every one against numpyro's distributions.

- masked categorical by inverse CDF from given uniforms: ``sample_masked_icdf`` (the key-based
  ``sample_masked_categorical``, which draws its two uniforms and calls it, and ``masked_log_softmax`` sit beside
  the contract in ``gflownet.env``);
- truncated normal on [0, 1]: ``truncnorm_log_prob``, ``truncnorm_sample``;
- von Mises, on [-pi, pi) and mapped to [0, 1): ``vonmises_sample``, ``vonmises_u_log_prob``,
  ``vonmises_u_sample``;
- wrapped normal on the torus [0, 1)^3 and its mixture with the uniform density: ``wrapped_normal_log_prob``,
  ``uniform_wrapped_normal_log_prob``, ``uniform_wrapped_normal_sample``;
- Beta (and Gamma, by Marsaglia-Tsang): ``beta_mixture_logpdf``, ``log_gamma_plus1``, ``sample_beta_logit``,
  ``sample_beta``.

How an environment maps raw policy outputs to these parameters (its "heads") stays with the environment.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import betaln, i0e, log_ndtr

if TYPE_CHECKING:  # annotation only: gflownet.env imports this module (sample_masked_categorical)
    from hgfn_jax.gflownet.env import Exploration

LOG_2PI = float(np.log(2.0 * np.pi))

# ---- masked categorical (inverse CDF; ``gflownet.env`` holds the key-based masked categorical) ----------


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


# ---- truncated normal on [0, 1] -----------------------------------------------------------------------------


def _log_diff_ndtr(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Stable ``log(Phi(b) - Phi(a))`` for ``a < b`` (uses the upper tail when ``a > 0``)."""
    upper = a > 0.0
    hi = jnp.where(upper, log_ndtr(-a), log_ndtr(b))  # the larger CDF value
    lo = jnp.where(upper, log_ndtr(-b), log_ndtr(a))
    return hi + jnp.log1p(-jnp.exp(jnp.minimum(lo - hi, -1e-7)))


def truncnorm_log_prob(u: jnp.ndarray, m: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
    """Log density of N(m, s^2) truncated to [0, 1], at ``u`` (w.r.t. Lebesgue on [0, 1])."""
    z = (u - m) / s
    log_z = _log_diff_ndtr(-m / s, (1.0 - m) / s)
    return -0.5 * z * z - 0.5 * LOG_2PI - jnp.log(s) - log_z


def truncnorm_sample(key: jax.Array, m: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
    """Exact sample of N(m, s^2) truncated to [0, 1] (inverse CDF, ``jax.random.truncated_normal``)."""
    z = jax.random.truncated_normal(key, -m / s, (1.0 - m) / s, shape=jnp.shape(m))
    return jnp.clip(m + s * z, 0.0, 1.0)


# ---- von Mises ----------------------------------------------------------------------------------------------


def vonmises_u_log_prob(u: jnp.ndarray, mu: jnp.ndarray, kappa: jnp.ndarray) -> jnp.ndarray:
    """Log density on [0, 1) of ``u = (phi + pi) / (2 pi)``, ``phi ~ VM(mu, kappa)``:
    ``kappa cos(2 pi u - pi - mu) - log I0(kappa)`` (the 2 pi of the Jacobian cancels the 1 / (2 pi))."""
    phi = 2.0 * jnp.pi * u - jnp.pi
    log_i0 = jnp.log(i0e(kappa)) + kappa
    return kappa * (jnp.cos(phi - mu) - 1.0) + kappa - log_i0


def vonmises_sample(key: jax.Array, kappa: jnp.ndarray) -> jnp.ndarray:
    """Exact sample ``phi in [-pi, pi]`` of VM(0, kappa) (Best and Fisher 1979 rejection, as numpyro's
    ``VonMises.sample``; acceptance >= 65 % for every kappa). A ``lax.while_loop`` redraws until every entry of
    ``kappa``'s shape is accepted (compiles much faster than numpyro's sampler)."""
    kappa = jnp.maximum(kappa, 1e-6)
    r = 1.0 + jnp.sqrt(1.0 + 4.0 * kappa * kappa)
    rho = (r - jnp.sqrt(2.0 * r)) / (2.0 * kappa)
    s = jnp.where(kappa > 2e-2, (1.0 + rho * rho) / (2.0 * rho), 1.0 / kappa)  # float32-stable small kappa

    def body(carry):
        k, w, done = carry
        k, k1, k2 = jax.random.split(k, 3)
        u = jax.random.uniform(k1, (3,) + kappa.shape, minval=-1.0, maxval=1.0)
        z = jnp.cos(jnp.pi * u[0])
        w_new = jnp.clip((1.0 + s * z) / (s + z), -1.0, 1.0)
        y = kappa * (s - w_new)
        v = jax.random.uniform(k2, kappa.shape, minval=1e-12)
        accept = (y * (2.0 - y) >= v) | (jnp.log(jnp.maximum(y, 1e-30) / v) + 1.0 >= y)
        phi = jnp.sign(u[2]) * jnp.arccos(w_new)
        return k, jnp.where(done, w, phi), done | accept

    init = (key, jnp.zeros_like(kappa), jnp.zeros(kappa.shape, bool))
    _, phi, _ = jax.lax.while_loop(lambda c: ~jnp.all(c[2]), body, init)
    return phi


def vonmises_u_sample(key: jax.Array, mu: jnp.ndarray, kappa: jnp.ndarray) -> jnp.ndarray:
    """Exact sample of ``u = (phi + pi) / (2 pi)``, ``phi ~ VM(mu, kappa)``, in [0, 1)."""
    phi = vonmises_sample(key, kappa)
    phi = jnp.mod(phi + mu + jnp.pi, 2.0 * jnp.pi) - jnp.pi  # rotate by mu, back to [-pi, pi)
    u = (phi + jnp.pi) / (2.0 * jnp.pi)
    return jnp.clip(u, 0.0, 1.0 - 1e-7)


# ---- wrapped normal on the torus [0, 1)^3 and its mixture with the uniform density ------------------------

_IMAGES = np.array(list(itertools.product((-1, 0, 1), repeat=3)), np.float32)  # [27, 3]


def wrapped_normal_log_prob(x: jnp.ndarray, mu: jnp.ndarray, chol: jnp.ndarray) -> jnp.ndarray:
    """Log density on the torus [0, 1)^3 of the wrapped N(mu, chol chol^T): the image sum over {-1, 0, 1}^3 of
    the normal density at ``d + k``, ``d = x - mu`` wrapped to [-1/2, 1/2)^3 (the union of the 27 image cells is
    [-3/2, 3/2)^3, so the truncated sum integrates to ``1 - P(y not in [-3/2, 3/2)^3)``). Unbatched: x, mu [3]."""
    d = x - mu
    d = d - jnp.round(d)  # [-1/2, 1/2]
    pts = d[None, :] + jnp.asarray(_IMAGES)  # [27, 3]
    y = jax.scipy.linalg.solve_triangular(chol, pts.T, lower=True)  # [3, 27]
    log_det = jnp.sum(jnp.log(jnp.diagonal(chol)))
    terms = -0.5 * jnp.sum(y * y, axis=0) - 1.5 * LOG_2PI - log_det
    return jax.scipy.special.logsumexp(terms)


def uniform_wrapped_normal_log_prob(x: jnp.ndarray, mu: jnp.ndarray, chol: jnp.ndarray,
                                    w_logit: jnp.ndarray) -> jnp.ndarray:
    """Log density on the torus of ``w * Uniform + (1 - w) * WrappedNormal(mu, chol chol^T)``, ``w =
    sigmoid(w_logit)``. ``log w`` and ``log(1 - w)`` come from the logit: ``w`` rounds to 1 in float32 for logits
    above ~17, where ``log1p(-w)`` would be -inf and its gradient (0 * inf inside logaddexp) NaN although the
    density itself is finite."""
    return jnp.logaddexp(jax.nn.log_sigmoid(w_logit),
                         jax.nn.log_sigmoid(-w_logit) + wrapped_normal_log_prob(x, mu, chol))


def uniform_wrapped_normal_sample(key: jax.Array, mu: jnp.ndarray, chol: jnp.ndarray, w: jnp.ndarray) -> jnp.ndarray:
    """Exact sample ``[3]`` in [0, 1)^3 of the uniform / wrapped-normal mixture (unbatched; ``w`` the uniform
    weight)."""
    k_w, k_u, k_n = jax.random.split(key, 3)
    uni = jax.random.uniform(k_u, (3,))
    y = chol @ jax.random.normal(k_n, (3,))
    gauss = mu + y
    x = jnp.where(jax.random.uniform(k_w) < w, uni, gauss)
    x = x - jnp.floor(x)
    return jnp.where(x >= 1.0, 0.0, x)


# ---- Beta mixtures and Gamma draws --------------------------------------------------------------------------


def beta_mixture_logpdf(logits: jnp.ndarray, alpha: jnp.ndarray, beta: jnp.ndarray, r: jnp.ndarray,
                        eps: float) -> jnp.ndarray:
    """``[...]`` log density of ``r [...]`` under mixtures of Beta(alpha, beta) with mixture logits ``logits``
    (parameters ``[..., K]``); ``r`` is clipped to ``[eps, 1 - eps]`` first."""
    r = jnp.clip(r, eps, 1.0 - eps)[..., None]
    comp = (alpha - 1.0) * jnp.log(r) + (beta - 1.0) * jnp.log1p(-r) - betaln(alpha, beta)
    return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1) + comp, axis=-1)


def log_gamma_plus1(key, a: jnp.ndarray) -> jnp.ndarray:
    """log of Gamma(a + 1, 1) draws (exact Marsaglia-Tsang rejection). Each round draws, per variable, one
    standard normal and one acceptance uniform: the normals come in Box-Muller pairs (both the cosine and the sine
    of one pair of uniforms, two independent normals), so a round costs 1.5 uniforms per variable, all from one
    draw. Rounds repeat (``while_loop``) until every variable is accepted."""
    d = a + 1.0 - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    n = a.size
    n_pairs = (n + 1) // 2

    def draw(i):
        u = jax.random.uniform(jax.random.fold_in(key, i), (2 * n_pairs + n,), minval=1e-12, maxval=1.0)
        rad = jnp.sqrt(-2.0 * jnp.log(u[:n_pairs]))
        ang = 2.0 * jnp.pi * u[n_pairs : 2 * n_pairs]
        x = jnp.concatenate([rad * jnp.cos(ang), rad * jnp.sin(ang)])[:n].reshape(a.shape)
        v = (1.0 + c * x) ** 3
        vpos = jnp.maximum(v, 1e-30)
        ok = (v > 0) & (jnp.log(u[2 * n_pairs :].reshape(a.shape)) < 0.5 * x * x + d - d * vpos + d * jnp.log(vpos))
        return jnp.log(d) + jnp.log(vpos), ok

    def cond(carry):
        return ~jnp.all(carry[2])

    def body(carry):
        i, logv, done = carry
        new, ok = draw(i)
        return i + 1, jnp.where(done, logv, new), done | ok

    first, ok0 = draw(0)  # the first round outside the loop (most draws are accepted there)
    _, logv, _ = jax.lax.while_loop(cond, body, (jnp.ones((), jnp.int32), first, ok0))
    return logv


def sample_beta_logit(key, a: jnp.ndarray, b: jnp.ndarray, boost_u: jnp.ndarray) -> jnp.ndarray:
    """logit of Beta(a, b) draws: log X - log Y, X ~ Gamma(a), Y ~ Gamma(b), in log space (stable for small
    a, b): log Gamma(a) = log Gamma(a + 1) + log(U) / a. ``boost_u``: ``[2, ...]`` uniforms in (0, 1]."""
    ab = jnp.stack([a, b])
    logg = log_gamma_plus1(key, ab) + jnp.log(jnp.maximum(boost_u, 1e-30)) / ab
    return logg[0] - logg[1]


def sample_beta(key, a: jnp.ndarray, b: jnp.ndarray, boost_u: jnp.ndarray) -> jnp.ndarray:
    """Beta(a, b) draws (float32: values within ~6e-8 of 0 or 1 round to the bound, then get clipped)."""
    return jax.nn.sigmoid(sample_beta_logit(key, a, b, boost_u))
