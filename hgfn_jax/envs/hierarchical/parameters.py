"""The continuous choices of the hierarchical crystal GFlowNet: their distributions and how raw policy outputs
map to their parameters (the samplers and log-densities themselves are ``hgfn_jax.gflownet.distributions``).

Every continuous choice is expressed on a NORMALISED coordinate with Lebesgue reference measure 1 in total,
the same for every space group, so that forward and backward kernels of all transitions share one reference
measure (see ``env.py``):

- Lattice LENGTH (free coordinate of the chosen group): ``u in [0, 1]``, length ``l_min + u (l_max - l_min)``.
  Distribution: a Gaussian TRUNCATED to [0, 1] (the paper's Gaussian, restricted to the search range and
  renormalised): ``p(u) = phi((u - m) / s) / (s (Phi((1 - m) / s) - Phi(-m / s)))`` w.r.t. Lebesgue on [0, 1].
  ``s -> inf`` gives the uniform density, which trajectory balance needs to be representable (the terminal
  lattice has no backward term, so with a lattice-independent reward the optimal forward density is uniform).
- Lattice ANGLE: ``u in [0, 1)``, angle = ``theta_min + u (theta_max - theta_min)``. Distribution: von Mises
  on the circle, ``phi ~ VM(mu, kappa)`` on [-pi, pi), mapped by ``u = (phi + pi) / (2 pi)`` (Jacobian 2 pi):
  ``p(u) = exp(kappa cos(2 pi u - pi - mu)) / I0(kappa)`` w.r.t. Lebesgue on [0, 1). ``kappa -> 0``: uniform.
- Fractional COORDINATES of a reference atom: ``x`` on the torus [0, 1)^3 (Lebesgue, total measure 1).
  Distribution: a mixture ``w * Uniform + (1 - w) * WrappedNormal(mu, Sigma)``. The wrapped normal is the law
  of ``frac(mu + y)``, ``y ~ N(0, Sigma)``; its density is the image sum ``sum_{k in Z^3} N(d + k; 0, Sigma)``
  with ``d = x - mu`` wrapped to [-1/2, 1/2)^3. The sum is truncated to ``k in {-1, 0, 1}^3``; with the
  marginal standard deviations bounded by ``FRAC_SCALE_MAX = 0.3`` the truncated density integrates to
  ``1 - eps`` with ``eps = P(y not in [-3/2, 3/2)^3) <= 6 Phi(-1.5 / 0.3) = 6 Phi(-5) < 1.8e-6`` (the
  union of the 27 image cells is exactly [-3/2, 3/2)^3). Sampling is exact. The uniform component (absent in
  the paper, which clamps a plain Gaussian to [0, 1]) makes the uniform density representable, as above.

Parameterisations (``*_params`` below) map raw network outputs to distribution parameters; a raw output of
all zeros (zero-initialised last layer) gives a near-uniform distribution (``s ~ 3``, ``kappa ~ 0.05``,
``w ~ 0.98`` with sd ~ 0.27), i.e. the policy starts close to the reference measure.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.gflownet import distributions as gd

# ---- truncated normal on [0, 1] (lattice lengths) ---------------------------------------------------------

LENGTH_SCALE_MIN = 0.02
LENGTH_SCALE_MAX = 100.0
N_LENGTH_RAW = 2  # (mean, scale)


def length_params(raw: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``[..., 2] -> (m, s)``: mean ``sigmoid(raw) in (0, 1)``, scale ``0.02 + min(softplus(raw + 3), 100)``.

    Keeping the mean inside [0, 1] keeps the truncation interval around the mode: the normaliser is >= 0.002
    (no underflow) and the inverse-CDF sampler is accurate (it would collapse onto a bound if both bounds lay
    in one far tail)."""
    m = jax.nn.sigmoid(raw[..., 0])
    s = LENGTH_SCALE_MIN + jnp.minimum(jax.nn.softplus(raw[..., 1] + 3.0), LENGTH_SCALE_MAX)
    return m, s


# ---- von Mises mapped to [0, 1) (lattice angles) -----------------------------------------------------------

N_ANGLE_RAW = 2  # (mu, kappa)
KAPPA_MAX = 500.0


def angle_params(raw: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``[..., 2] -> (mu, kappa)``: mu real (radians), kappa ``softplus(raw - 3)``, <= 500."""
    return raw[..., 0], jnp.minimum(jax.nn.softplus(raw[..., 1] - 3.0), KAPPA_MAX)


# ---- uniform / wrapped multivariate normal mixture on the torus (fractional coordinates) ------------------

FRAC_SCALE_MIN = 0.005
FRAC_SCALE_MAX = 0.3
N_FRAC_RAW = 3 + 3 + 3 + 1  # mean [3], log-scales [3], correlation [3] (lower triangle), uniform weight [1]
TRUNCATION_BOUND = 6.0 * 0.5 * float(__import__("math").erfc(1.5 / FRAC_SCALE_MAX / np.sqrt(2.0)))


def frac_params(raw: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """``[..., 10] -> (mu [..., 3], chol [..., 3, 3], w [...])``.

    ``Sigma = chol chol^T = diag(sd) C C^T diag(sd)`` with ``C`` the Cholesky factor of a correlation matrix
    (unit rows ``(c, 1) / norm``, ``|c| <= 1`` via tanh, so ``C_ii >= 1 / sqrt(3)`` and float32 Mahalanobis
    distances stay accurate: cond(chol) <= 0.3 / 0.005 * sqrt(3)), so the marginal standard deviations are
    exactly ``sd in [0.005, 0.3]`` (``sigmoid(raw + 2)``
    between the bounds). ``w = sigmoid(raw + 4)``
    is the weight of the uniform component.
    """
    mu = raw[..., 0:3]
    sd = FRAC_SCALE_MIN + (FRAC_SCALE_MAX - FRAC_SCALE_MIN) * jax.nn.sigmoid(raw[..., 3:6] + 2.0)
    c10, c20, c21 = jnp.tanh(raw[..., 6]), jnp.tanh(raw[..., 7]), jnp.tanh(raw[..., 8])
    one, zero = jnp.ones_like(c10), jnp.zeros_like(c10)
    rows = jnp.stack(
        [jnp.stack([one, zero, zero], -1), jnp.stack([c10, one, zero], -1), jnp.stack([c20, c21, one], -1)],
        -2,
    )  # [..., 3, 3]
    corr_chol = rows / jnp.linalg.norm(rows, axis=-1, keepdims=True)
    chol = sd[..., :, None] * corr_chol
    w = jax.nn.sigmoid(raw[..., 9] + 4.0)
    return mu, chol, w


def frac_log_prob(x: jnp.ndarray, raw: jnp.ndarray) -> jnp.ndarray:
    """Log density on the torus of the uniform / wrapped-normal mixture with raw parameters ``raw [10]``."""
    mu, chol, _ = frac_params(raw)
    return gd.uniform_wrapped_normal_log_prob(x, mu, chol, raw[..., 9] + 4.0)


def frac_sample(key: jax.Array, raw: jnp.ndarray) -> jnp.ndarray:
    """Exact sample ``[3]`` in [0, 1)^3 of the mixture (unbatched)."""
    mu, chol, w = frac_params(raw)
    return gd.uniform_wrapped_normal_sample(key, mu, chol, w)
