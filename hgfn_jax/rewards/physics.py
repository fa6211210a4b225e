"""Physics-informed reward terms of the hierarchical crystal GFlowNets (pure JAX, ONE crystal, vmap-able).

Terms (paper 000 = CHGFlowNet, Sec. 4.3, eqs. 11-14 and Table 6; paper 002 = SHAFT, Sec. 4.2, eq. 7):

- **Density term** (eq. 14): ``R_P = a * exp(-(rho - b)^2 / (2 c^2))`` with ``rho`` the mass density in
  g/cm^3. The text gives no values; the CHGFlowNet reference code uses ``a = 3, b = 3, c = 1`` (our default),
  the SHAFT code ``a = 1, b = 3, c = 1``.
- **Bond-distance preference** (eqs. 11-13), with thresholds from :mod:`hgfn_jax.data.bond_stats`:

  * eq. 11, ``R_min = alpha_p`` if some pair of real atoms is closer than ``d_min(Zi, Zj)``, else 1. "Pairs"
    are (i) every two distinct real sites at their minimum-image distance (``geometry.distance_matrix``) and
    (ii) every real site with its own nearest periodic image (the shortest lattice vector, threshold
    ``d_min(Zi, Zi)``), so a one-atom cell is checked against itself.
  * eq. 12, ``R_max = beta_p`` if some real atom is *isolated*, else 1. Atom i is isolated when every
    neighbour candidate is farther than the neighbour bound ``d_max = mean + std`` of the pair: the candidates
    are all other real sites j (minimum-image distance, i.e. their nearest copy) and i's own periodic images.
    Formally ``isolated(i) = all_j d(i, j) > d_max(Zi, Zj)`` over j != i real, and
    ``d_self > d_max(Zi, Zi)``. A neighbour therefore needs ``d <= d_max`` (eq. 12 uses a strict ``>`` for
    the violation; the reference code uses ``d < d_max`` for a neighbour: they differ only at equality).
  * eq. 13, ``R_bond = gamma_p`` if both are violated, ``alpha_p`` if only eq. 11, ``beta_p`` if only eq. 12,
    else 1. Constants from Table 6: ``alpha_p = 0.1, beta_p = 0.01, gamma_p = 0.001``.

  Differences from the CHGFlowNet reference code (``get_bs_dm_min_max``), documented because results may be
  compared with it: (a) the code's defaults are swapped (``vpen_min = 0.01`` for eq. 11, ``vpen_max = 0.1``
  for eq. 12) relative to Table 6, which we follow; (b) the code multiplies the penalty by the fraction of
  non-violating pairs / non-isolated atoms (available here with ``graded=True``: fractions over the distinct
  real pairs plus the self-image checks, and over real atoms); (c) the code uses pymatgen's
  ``distance_matrix`` (no self-images, so a one-atom cell never violates) and checks for a neighbour of atom i
  only among atoms j > i (so the last atom is never isolated); here the test is symmetric and includes images.
- **SHAFT bond-length score** (paper 002, eq. 7; formula lost in the text extraction, taken from the SHAFT
  reference code ``get_bs_from_bond_data``): all neighbours within 4 A (periodic images and a site's own
  images included), grouped by unordered element pair ``t``; the distances of a type are de-duplicated within
  1e-5 A; ``bs = mean_t mean_{d in t} (|d - mean_t| + exp(min_t - d)^2)`` with the table's ``mean``/``min``
  (defaults 2.0 / 1.0 A); ``bs = 5`` when there is no bond; the reward term is ``exp(-bs)`` ("regularize the
  bond term to [0, 1]"). (The reference code, after the first pair missing from its table, silently uses the
  defaults for every later pair; we use the table for every known pair.)

Invalid input (NaN/inf or degenerate lattice, non-finite coordinates of a real site, or no real site): the
structure is flagged ``valid = False``, geometry is evaluated on a harmless stand-in so no NaN is produced,
and the terms take their worst values (``R_bond = gamma_p``, both violations set, density term 0, SHAFT score
``exp(-5)``). Nothing raises inside jit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from hgfn_jax.crystal.elements import NUM_ELEMENTS
from hgfn_jax.crystal.geometry import distance_matrix, neighbor_list, pair_mask, shortest_lattice_vector
from hgfn_jax.crystal.lattice import density as _density
from hgfn_jax.crystal.lattice import is_degenerate, params_to_matrix
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.data.bond_stats import NEIGHBOUR_CUTOFF, BondTable

# Table 6 of paper 000.
ALPHA_P = 0.1
BETA_P = 0.01
GAMMA_P = 0.001
# Density Gaussian of the CHGFlowNet reference code (eq. 14).
DENSITY_A = 3.0
DENSITY_B = 3.0  # g/cm^3
DENSITY_C = 1.0  # g/cm^3
SHAFT_NO_BOND_SCORE = 5.0  # bs when a structure has no neighbour within the cutoff (SHAFT code)
_STAND_IN_LATTICE = (10.0, 10.0, 10.0, 90.0, 90.0, 90.0)


@struct.dataclass
class BondTerms:
    """Bond-distance preference of one crystal (eqs. 11-13); leading [B] when vmapped."""

    r_bond: jnp.ndarray  # [] float32: eq. 13
    r_min: jnp.ndarray  # [] float32: eq. 11 (alpha_p or 1; graded: alpha_p * fraction of passing checks)
    r_max: jnp.ndarray  # [] float32: eq. 12 (beta_p or 1; graded: beta_p * fraction of non-isolated atoms)
    min_violation: jnp.ndarray  # [] bool: some pair (or a site with its own image) is closer than d_min
    max_violation: jnp.ndarray  # [] bool: some real atom is isolated (no neighbour within d_max)
    n_close: jnp.ndarray  # [] int32: violating checks (unordered distinct pairs + self-image checks)
    n_isolated: jnp.ndarray  # [] int32: isolated real atoms
    min_distance: jnp.ndarray  # [] float32: smallest distance incl. self-images (A); 0 for invalid input
    valid: jnp.ndarray  # [] bool: the structure is usable (see structure_valid)


@struct.dataclass
class DensityTerms:
    """Density term of one crystal (eq. 14); leading [B] when vmapped."""

    r_density: jnp.ndarray  # [] float32: a * exp(-(rho - b)^2 / (2 c^2)), 0 for invalid input
    density: jnp.ndarray  # [] float32: rho in g/cm^3, 0 for invalid input
    valid: jnp.ndarray  # [] bool: the structure is usable


@struct.dataclass
class ShaftBondTerms:
    """SHAFT bond-length score of one crystal (paper 002, eq. 7); leading [B] when vmapped."""

    r_bond: jnp.ndarray  # [] float32: exp(-bs) in (0, 1]
    bs: jnp.ndarray  # [] float32: mean over bond types of the per-type deviation score
    n_types: jnp.ndarray  # [] int32: bond types (unordered element pairs) found within the cutoff
    truncated: jnp.ndarray  # [] bool: more than k neighbours of a site, or the image window was too small
    valid: jnp.ndarray  # [] bool: the structure is usable


def structure_valid(crystal: Crystal) -> jnp.ndarray:
    """[] bool: non-degenerate finite lattice (``lattice.is_degenerate``), finite coordinates of every real
    site, real species in 1..118, and at least one real site."""
    frac_ok = jnp.all(jnp.where(crystal.mask[:, None], jnp.isfinite(crystal.frac), True))
    species_ok = jnp.all(jnp.where(crystal.mask, (crystal.species >= 1) & (crystal.species <= 118), True))
    return ~is_degenerate(crystal.lattice) & frac_ok & species_ok & jnp.any(crystal.mask)


def sanitize(crystal: Crystal) -> tuple[Crystal, jnp.ndarray]:
    """(crystal safe for geometry, valid [] bool): an invalid crystal gets a 10 A cubic lattice and zero
    coordinates so downstream code produces no NaN; its results must be overridden using ``valid``."""
    valid = structure_valid(crystal)
    lattice = jnp.where(valid, crystal.lattice, jnp.asarray(_STAND_IN_LATTICE, jnp.float32))
    frac = jnp.where(valid & jnp.isfinite(crystal.frac), crystal.frac, 0.0).astype(jnp.float32)
    species = jnp.clip(crystal.species, 0, 118).astype(jnp.int32)
    return crystal.replace(lattice=lattice.astype(jnp.float32), frac=frac, species=species), valid


def density_term(
    crystal: Crystal, a: float = DENSITY_A, b: float = DENSITY_B, c: float = DENSITY_C
) -> DensityTerms:
    """Eq. 14 of paper 000: ``a exp(-(rho - b)^2 / (2 c^2))``, rho in g/cm^3 (``lattice.density``)."""
    safe, valid = sanitize(crystal)
    rho = jnp.where(valid, _density(safe), 0.0)
    r = a * jnp.exp(-jnp.square(rho - b) / (2.0 * c * c))
    return DensityTerms(r_density=jnp.where(valid, r, 0.0).astype(jnp.float32), density=rho, valid=valid)


def bond_term(
    crystal: Crystal,
    table: BondTable,
    alpha_p: float = ALPHA_P,
    beta_p: float = BETA_P,
    gamma_p: float = GAMMA_P,
    graded: bool = False,
) -> BondTerms:
    """Eqs. 11-13 of paper 000 on one crystal (see the module docstring for the exact definitions).

    Pair distances come from ``geometry.distance_matrix``: exact minimum-image distances whenever they are at
    most 1.5 x the smallest interplanar spacing of the LLL-reduced cell (all bonding distances except in
    extremely flat cells, where a distance can only be over-estimated).
    """
    safe, valid = sanitize(crystal)
    mask = safe.mask
    z = safe.species
    d = distance_matrix(safe.lattice, safe.frac)  # [N, N]
    pm = pair_mask(mask)
    dmin = table.d_min[z[:, None], z[None, :]]
    dmax = table.d_max[z[:, None], z[None, :]]
    d_self = shortest_lattice_vector(safe.lattice)
    dmin_self = table.d_min[z, z]
    dmax_self = table.d_max[z, z]

    close_pair = pm & (d < dmin)  # symmetric
    close_self = mask & (d_self < dmin_self)
    n_close = (jnp.sum(close_pair) // 2 + jnp.sum(close_self)).astype(jnp.int32)
    has_neighbour = jnp.any(pm & (d <= dmax), axis=1) | (d_self <= dmax_self)
    isolated = mask & ~has_neighbour
    n_isolated = jnp.sum(isolated).astype(jnp.int32)
    min_violation = (n_close > 0) | ~valid
    max_violation = (n_isolated > 0) | ~valid

    n_real = jnp.sum(mask)
    if graded:
        n_checks = n_real * (n_real - 1) // 2 + n_real
        frac_ok_pairs = 1.0 - n_close / jnp.maximum(n_checks, 1)
        frac_ok_atoms = 1.0 - n_isolated / jnp.maximum(n_real, 1)
        r_min = jnp.where(min_violation, alpha_p * jnp.where(valid, frac_ok_pairs, 1.0), 1.0)
        r_max = jnp.where(max_violation, beta_p * jnp.where(valid, frac_ok_atoms, 1.0), 1.0)
    else:
        r_min = jnp.where(min_violation, alpha_p, 1.0)
        r_max = jnp.where(max_violation, beta_p, 1.0)
    r_bond = jnp.where(
        min_violation & max_violation,
        gamma_p,
        jnp.where(min_violation, r_min, jnp.where(max_violation, r_max, 1.0)),
    )
    dist_all = jnp.minimum(jnp.min(jnp.where(pm, d, jnp.inf)), d_self)
    return BondTerms(
        r_bond=r_bond.astype(jnp.float32),
        r_min=r_min.astype(jnp.float32),
        r_max=r_max.astype(jnp.float32),
        min_violation=min_violation,
        max_violation=max_violation,
        n_close=n_close,
        n_isolated=n_isolated,
        min_distance=jnp.where(valid, dist_all, 0.0).astype(jnp.float32),
        valid=valid,
    )


def shaft_bond_term(
    crystal: Crystal,
    table: BondTable,
    cutoff: float = NEIGHBOUR_CUTOFF,
    k: int = 64,
    max_images: int = 2,
    tol: float = 1e-5,
    no_bond_score: float = SHAFT_NO_BOND_SCORE,
) -> ShaftBondTerms:
    """SHAFT's bond-length score (paper 002, eq. 7, reference-code form) on one crystal.

    Distances of a bond type closer than ``tol`` count once (1e-5 A, as the reference code). The distances are
    recomputed in the original basis from the neighbour offsets (``(f_j + n - f_i) @ L``, float32 error ~1e-6
    A); a pair of distances whose float64 values differ by about ``tol`` may still be merged differently from
    the float64 reference, which changes ``bs`` slightly (tests allow 1 % on real structures).
    ``k`` (static) neighbours are kept per site (``geometry.neighbor_list``); ``truncated`` reports when a
    site has more within ``cutoff`` or the image window is too small, i.e. when the score may be inexact.
    """
    safe, valid = sanitize(crystal)
    nl = neighbor_list(safe, k, cutoff, max_images)
    z = safe.species
    zi = jnp.broadcast_to(z[:, None], nl.idx.shape)
    zj = z[nl.idx]
    lo, hi = jnp.minimum(zi, zj), jnp.maximum(zi, zj)
    entry = nl.nbr_mask.reshape(-1)
    # distances recomputed in the original basis (more accurate in float32 than the reduced-basis search)
    frac = safe.frac
    dfrac = frac[nl.idx] + nl.offset.astype(jnp.float32) - frac[:, None, :]
    vec = dfrac @ params_to_matrix(safe.lattice)
    d_nl = jnp.sqrt(jnp.where(nl.nbr_mask, jnp.sum(vec * vec, axis=-1), 1.0))
    t = jnp.where(entry, (lo * NUM_ELEMENTS + hi).reshape(-1), jnp.iinfo(jnp.int32).max)
    dist = jnp.where(entry, d_nl.reshape(-1), jnp.inf)
    order = jnp.lexsort((dist, t))  # by type, then distance; invalid entries last
    t, dist, entry = t[order], dist[order], entry[order]
    lo, hi = lo.reshape(-1)[order], hi.reshape(-1)[order]
    new_type = jnp.concatenate([jnp.array([True]), t[1:] != t[:-1]])
    gap = jnp.concatenate([jnp.array([True]), (dist[1:] - dist[:-1]) > tol])
    keep = entry & (new_type | gap)
    seg = jnp.cumsum(new_type) - 1  # type segment of each entry
    m = t.shape[0]
    n_in_type = jax.ops.segment_sum(keep.astype(jnp.float32), seg, num_segments=m)[seg]
    d_mean = table.d_mean[lo, hi]
    d_min = table.d_min[lo, hi]
    safe_d = jnp.where(keep, dist, 0.0)
    f = jnp.abs(safe_d - d_mean) + jnp.exp(2.0 * (d_min - safe_d))
    w = jnp.where(keep, 1.0 / jnp.maximum(n_in_type, 1.0), 0.0)
    n_types = jnp.sum(w)
    bs = jnp.where(
        n_types > 0.5, jnp.sum(w * jnp.where(keep, f, 0.0)) / jnp.maximum(n_types, 1.0), no_bond_score
    )
    bs = jnp.where(valid, bs, no_bond_score)
    truncated = (jnp.any(nl.count > k) | nl.truncated) & valid
    return ShaftBondTerms(
        r_bond=jnp.exp(-bs).astype(jnp.float32),
        bs=bs.astype(jnp.float32),
        n_types=jnp.where(valid, jnp.round(n_types), 0).astype(jnp.int32),
        truncated=truncated,
        valid=valid,
    )


__all__ = [
    "ALPHA_P",
    "BETA_P",
    "GAMMA_P",
    "BondTerms",
    "DensityTerms",
    "ShaftBondTerms",
    "bond_term",
    "density_term",
    "sanitize",
    "shaft_bond_term",
    "structure_valid",
]
