"""PGCGM losses: WGAN-GP (eq. 4), atom distance losses (eq. 5), coordinate losses (eq. 6), eq. 7's sum.

Deviations from the printed text, each deliberate:
- eq. 4: the interpolation weight is drawn from U(0, 1) as the equation says (the authors' public code draws it
  from N(0, 1)); the penalty is taken with respect to the crystal matrix only (the affine input O is the same
  conditioning for the real and the fake crystal of a pair, so interpolating it is a no-op).
- eq. 5: the intra-atom lower bound is 0 by default: two sets may pick the same atom (an element with one atom
  in the cell), so an intra distance of 0 is correct for real crystals.
- eq. 6: the printed names are swapped. The text says the three AVERAGED FULL coordinates F must be the same
  and the three BASE sets B different; the printed L_full = max(0, cos(F, F')) would push the F apart and
  L_base = 1 - cos(B, B') would pull the B together. Here ``full_coordinate_loss`` = mean of (1 - cos) over
  the F pairs and ``base_coordinate_loss`` = mean of max(0, cos) over the B pairs, each of the 9 coordinates
  standardised across the mini-batch first ("we normalize each coordinate value across the mini-batch"),
  cosines between the 9-vectors of one crystal, the constant 1/9 kept as printed.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from hgfn_jax.gan.representation import PAIRS


def interpolate(real: jnp.ndarray, fake: jnp.ndarray, eps: jnp.ndarray) -> jnp.ndarray:
    """``eps [B]`` in [0, 1]: eps * real + (1 - eps) * fake, per sample."""
    e = eps.reshape((-1,) + (1,) * (real.ndim - 1))
    return e * real + (1.0 - e) * fake


def gradient_penalty(critic: Callable[[jnp.ndarray], jnp.ndarray], real: jnp.ndarray, fake: jnp.ndarray,
                     eps: jnp.ndarray) -> jnp.ndarray:
    """``mean_b (||grad_x critic(x_b)||_2 - 1)^2`` at ``x = interpolate(real, fake, eps)``; ``critic`` maps a
    batch ``[B, ...]`` to scores ``[B]`` (samples independent)."""
    x = interpolate(real, fake, eps)
    grads = jax.grad(lambda xx: jnp.sum(critic(xx)))(x)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1) + 1e-12)
    return jnp.mean(jnp.square(norms - 1.0))


def critic_loss(d_real: jnp.ndarray, d_fake: jnp.ndarray, gp: jnp.ndarray, lambda_gp: float = 10.0):
    """eq. 4: D(fake) - D(real) + lambda_d GP (means over the batch)."""
    return jnp.mean(d_fake) - jnp.mean(d_real) + lambda_gp * gp


def band_loss(h: jnp.ndarray, lower: jnp.ndarray, upper: jnp.ndarray) -> jnp.ndarray:
    """eq. 5 per entry: [max(h, U) - U]^2 + [min(h, L) - L]^2; zero inside [L, U]."""
    return jnp.square(jnp.maximum(h, upper) - upper) + jnp.square(jnp.minimum(h, lower) - lower)


def distance_losses(h_inter, h_intra, s_inter, s_intra, phi) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``h_inter [B, 3 sets, 3 pairs]``, ``h_intra [B, 3 el, 3 pairs]``, ``s_inter [B, 3 pairs]``,
    ``s_intra [B, 3 el]`` (radius sums); ``phi`` = (inter_lower, inter_upper, intra_lower, intra_upper).
    Returns ``(L_inter, L_intra)``: eq. 5, 1/(9N) times the sum over the batch and the 9 distances."""
    il, iu, al, au = phi
    l_inter = band_loss(h_inter, il * s_inter[:, None, :], iu * s_inter[:, None, :])
    l_intra = band_loss(h_intra, al * s_intra[:, :, None], au * s_intra[:, :, None])
    return jnp.mean(l_inter), jnp.mean(l_intra)


def _batch_standardise(x: jnp.ndarray) -> jnp.ndarray:
    """``[B, 3 sets, 9]``: each coordinate standardised across the batch (statistics per set and coordinate)."""
    mu = jnp.mean(x, axis=0, keepdims=True)
    sd = jnp.std(x, axis=0, keepdims=True)
    return (x - mu) / (sd + 1e-6)


def _pair_cosines(x: jnp.ndarray) -> jnp.ndarray:
    """``[B, 3 sets, ...] -> [B, 3 pairs]``: cosine similarity of the flattened sets of each pair."""
    z = _batch_standardise(x.reshape(x.shape[0], 3, -1))
    z = z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-8)
    return jnp.stack([jnp.sum(z[:, a] * z[:, b], axis=-1) for a, b in PAIRS], axis=1)


def full_coordinate_loss(f: jnp.ndarray) -> jnp.ndarray:
    """``f [B, 3 sets, 3 el, 3]`` averaged full coordinates: the three sets should agree (1 - cos)."""
    return jnp.mean(jnp.sum(1.0 - _pair_cosines(f), axis=1)) / 9.0


def base_coordinate_loss(b: jnp.ndarray) -> jnp.ndarray:
    """``b [B, 3 sets, 3 el, 3]`` base sites: the three sets should differ (max(0, cos))."""
    return jnp.mean(jnp.sum(jnp.maximum(0.0, _pair_cosines(b)), axis=1)) / 9.0


def generator_loss(d_fake, l_inter, l_intra, l_full, l_base, lambdas) -> jnp.ndarray:
    """eq. 7: L_adv + lambda_1 L_inter + lambda_2 L_intra + lambda_3 L_full + lambda_4 L_base."""
    l1, l2, l3, l4 = lambdas
    return -jnp.mean(d_fake) + l1 * l_inter + l2 * l_intra + l3 * l_full + l4 * l_base
