"""Lattice parameters, lattice matrices, volume, density and LLL reduction (pure JAX, unbatched).

Conventions:
- ``params``: [6] = a, b, c in Angstrom and alpha, beta, gamma in degrees (alpha between b and c, beta between
  a and c, gamma between a and b).
- ``matrix``: [3, 3] with the lattice vectors as ROWS (Cartesian Angstrom), oriented exactly as pymatgen's
  ``Lattice.from_parameters(a, b, c, alpha, beta, gamma)`` (default, non-VESTA): c along z, a in the xz plane.
  Cartesian coordinates of fractional ``f`` [3] are ``f @ matrix``.
- Every function works on ONE lattice (batch with ``jax.vmap``), except ``cell_volume_factor``, ``valid_cell``
  and ``rhombohedral_to_hexagonal``, which take any leading batch shape. Float32 in, float32 out.
- Nothing here raises inside jit: the one cell-validity rule is :func:`valid_cell` (:func:`is_degenerate` is its
  negation at the default tolerance); the host-side :func:`check_lattice` raises a ``ValueError`` naming the
  problem.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal.elements import ATOMIC_MASS
from hgfn_jax.crystal.types import Crystal

AMU_G_PER_CM3 = 1.66053907  # 1 amu / 1 A^3 in g/cm^3 (pymatgen's constant is 1.66053906660)
DEFAULT_REL_VOLUME_TOL = 1e-3  # V / (a b c) below this counts as degenerate (a nearly flat cell)

_ATOMIC_MASS = np.asarray(ATOMIC_MASS, np.float32)


def _cos_sin(params: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    ang = jnp.deg2rad(params[3:6])
    return jnp.cos(ang), jnp.sin(ang)


def params_to_matrix(params: jnp.ndarray) -> jnp.ndarray:
    """[6] lattice parameters -> [3, 3] matrix (rows = a, b, c vectors), pymatgen's default orientation.

    a = (a sin(beta), 0, a cos(beta)); b = (-b sin(alpha) cos(gamma*), b sin(alpha) sin(gamma*),
    b cos(alpha)); c = (0, 0, c), with cos(gamma*) = (cos(alpha) cos(beta) - cos(gamma)) / (sin(alpha)
    sin(beta)) clipped to [-1, 1] as pymatgen does. Impossible angle triples give a flat (zero-volume)
    matrix, see is_degenerate.
    """
    params = jnp.asarray(params, jnp.float32)
    a, b, c = params[0], params[1], params[2]
    (ca, cb, cg), (sa, sb, sg) = _cos_sin(params)
    val = jnp.clip((ca * cb - cg) / (sa * sb), -1.0, 1.0)
    # cos(gamma*) = val; sin(gamma*) = sqrt(1 - val^2) = (V / abc) / (sin(alpha) sin(beta)), the latter free
    # of the cancellation that 1 - val^2 suffers in float32 for flat cells (same value, gamma* in [0, pi]).
    sin_gs = jnp.clip(_normalized_volume(params) / (sa * sb), 0.0, 1.0)
    zero = jnp.zeros_like(a)
    va = jnp.stack([a * sb, zero, a * cb])
    vb = jnp.stack([-b * sa * val, b * sa * sin_gs, b * ca])
    vc = jnp.stack([zero, zero, c])
    return jnp.stack([va, vb, vc])


def matrix_to_params(matrix: jnp.ndarray) -> jnp.ndarray:
    """[3, 3] matrix (rows = lattice vectors) -> [6] parameters (a, b, c, alpha, beta, gamma) as pymatgen."""
    matrix = jnp.asarray(matrix, jnp.float32)
    lengths = jnp.sqrt(jnp.sum(matrix * matrix, axis=-1))
    m1, m2 = jnp.roll(matrix, -1, axis=0), jnp.roll(matrix, -2, axis=0)  # rows (b, c, a) and (c, a, b)
    l1, l2 = jnp.roll(lengths, -1), jnp.roll(lengths, -2)
    cosang = jnp.clip(jnp.sum(m1 * m2, axis=-1) / (l1 * l2), -1.0, 1.0)
    return jnp.concatenate([lengths, jnp.rad2deg(jnp.arccos(cosang))])


def _two_sum(a: jnp.ndarray, b: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Error-free sum (Knuth): a + b = hi + lo exactly in floating point."""
    hi = a + b
    bv = hi - a
    lo = (a - (hi - bv)) + (b - bv)
    return hi, lo


def _normalized_volume_sq(params: jnp.ndarray) -> jnp.ndarray:
    """(V / abc)^2 = 1 - cos^2 alpha - cos^2 beta - cos^2 gamma + 2 cos alpha cos beta cos gamma, evaluated in
    the cancellation-free form 4 sin(s) sin(s - alpha) sin(s - beta) sin(s - gamma), with
    s = (alpha + beta + gamma) / 2 (negative for impossible angle triples). The half-angle differences are
    formed in degrees with error-free sums so that flat or strongly sheared cells keep float32 accuracy."""
    x = jnp.asarray(params, jnp.float32)[3:6]
    diffs = []
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        hi, lo = _two_sum(x[j], x[k])
        diffs.append(0.5 * ((hi - x[i]) + lo))  # s - x_i
    hi, lo = _two_sum(x[0], x[1])
    hi2, lo2 = _two_sum(hi, x[2])
    sup = 0.5 * ((360.0 - hi2) - (lo + lo2))  # 180 - s, and sin(s) = sin(180 - s)
    return 4.0 * jnp.sin(jnp.deg2rad(sup)) * jnp.prod(jnp.sin(jnp.deg2rad(jnp.stack(diffs))))


def _normalized_volume(params: jnp.ndarray) -> jnp.ndarray:
    """V / (abc) in [0, 1]; 0 for impossible angle triples."""
    return jnp.sqrt(jnp.maximum(_normalized_volume_sq(params), 0.0))


def volume(params: jnp.ndarray) -> jnp.ndarray:
    """[] cell volume in A^3 from [6] parameters (closed form); 0 for impossible angle triples."""
    params = jnp.asarray(params, jnp.float32)
    return params[0] * params[1] * params[2] * _normalized_volume(params)


def density(crystal: Crystal) -> jnp.ndarray:
    """[] mass density in g/cm^3 of an unbatched crystal: sum of real-site masses (amu) * 1.66053907 / V.

    Padding sites (mask False) are ignored. A degenerate lattice (V = 0) gives +inf (flag with is_degenerate).
    """
    masses = jnp.asarray(_ATOMIC_MASS)[jnp.clip(crystal.species, 0, 118)]
    total = jnp.sum(jnp.where(crystal.mask, masses, 0.0))
    return total * AMU_G_PER_CM3 / volume(crystal.lattice)


def volume_per_atom(crystal: Crystal) -> jnp.ndarray:
    """[] cell volume per real site, A^3/atom (0 for an empty or impossible cell)."""
    n = jnp.sum(crystal.mask.astype(jnp.float32))
    return jnp.where(n > 0, volume(crystal.lattice) / jnp.maximum(n, 1.0), 0.0)


def cell_volume_factor(params: jnp.ndarray) -> jnp.ndarray:
    """[...] (V / abc)^2 by the direct expression ``1 - cos^2 alpha - cos^2 beta - cos^2 gamma + 2 cos alpha
    cos beta cos gamma`` of ``[..., 6]`` parameters (batched over leading axes; > 0 for a real cell).

    Float32 loses about 1e-7 absolutely to cancellation for nearly flat cells; ``_normalized_volume_sq`` is the
    cancellation-free form. Kept because the Crystal-GFN proxies were trained on (and the environment's
    ``cell_ok`` flag is defined by) exactly this expression: see :func:`valid_cell` (``exact=False``).
    """
    ca, cb, cg = (jnp.cos(jnp.deg2rad(params[..., i])) for i in (3, 4, 5))
    return 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg


def valid_cell(
    params: jnp.ndarray, rel_volume_tol: float = DEFAULT_REL_VOLUME_TOL, exact: bool = True
) -> jnp.ndarray:
    """[...] bool, THE cell-validity rule, for ``[..., 6]`` parameters (batched over leading axes): all finite,
    lengths > 0, angles inside (0, 180) degrees, and ``(V / abc)^2 > 0`` and ``>= rel_volume_tol^2``.

    ``exact=True`` evaluates ``(V / abc)^2`` cancellation-free (``_normalized_volume_sq``, float32-accurate for
    flat cells); ``exact=False`` by the direct expression :func:`cell_volume_factor`. The two differ only where
    ``|(V / abc)^2|`` is below float32's rounding of the direct expression (about 1e-7). Callers:
    ``is_degenerate`` (rewards: ``rel_volume_tol = 1e-3``, exact), the proxies' input check and the Crystal-GFN
    ``cell_ok`` flag (``rel_volume_tol = 0``, ``exact=False``: their historical rule, kept bit for bit).
    """
    params = jnp.asarray(params, jnp.float32)
    finite = jnp.all(jnp.isfinite(params), axis=-1)
    lengths_ok = jnp.all(params[..., :3] > 0.0, axis=-1)
    angles_ok = jnp.all((params[..., 3:] > 0.0) & (params[..., 3:] < 180.0), axis=-1)
    if exact:
        nv2 = jnp.vectorize(_normalized_volume_sq, signature="(6)->()")(params)
    else:
        nv2 = cell_volume_factor(params)
    tol2 = float(rel_volume_tol) * float(rel_volume_tol)
    return finite & lengths_ok & angles_ok & (nv2 > 0.0) & (nv2 >= tol2)  # False for NaN nv2 too


def is_degenerate(params: jnp.ndarray, rel_volume_tol: float = DEFAULT_REL_VOLUME_TOL) -> jnp.ndarray:
    """[] bool: the lattice is unusable — NaN/inf, a length <= 0, an angle outside (0, 180) degrees, an
    impossible angle triple (e.g. alpha + beta < gamma), or a nearly flat cell, V / (abc) < rel_volume_tol.
    ``~valid_cell(params, rel_volume_tol)``.
    """
    return ~valid_cell(params, rel_volume_tol)


def check_lattice(params, rel_volume_tol: float = DEFAULT_REL_VOLUME_TOL) -> np.ndarray:
    """Host-side validation: returns the [6] float64 parameters or raises ValueError naming the problem."""
    p = np.asarray(params, dtype=np.float64)
    if p.shape != (6,):
        raise ValueError(f"lattice parameters must have shape (6,), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"degenerate lattice: non-finite parameters {p.tolist()}")
    if np.any(p[:3] <= 0):
        raise ValueError(f"degenerate lattice: lengths must be positive, got a, b, c = {p[:3].tolist()}")
    if np.any((p[3:] <= 0) | (p[3:] >= 180)):
        raise ValueError(f"degenerate lattice: angles must lie in (0, 180) degrees, got {p[3:].tolist()}")
    ca, cb, cg = np.cos(np.deg2rad(p[3:]))
    nv2 = 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg
    if nv2 <= 0:
        raise ValueError(
            f"degenerate lattice: impossible angle triple (alpha, beta, gamma) = {p[3:].tolist()}"
        )
    if np.sqrt(nv2) < rel_volume_tol:
        raise ValueError(
            f"degenerate lattice: nearly flat cell, V/(abc) = {np.sqrt(nv2):.2e} < {rel_volume_tol:g} "
            f"for parameters {p.tolist()}"
        )
    return p


# ----------------------------------------------------------------------------------------------------------
# LLL reduction


def _gram_schmidt(basis: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Rows b_i -> (b*_i [3,3], mu [3,3] with mu[i, j] = <b_i, b*_j> / |b*_j|^2 for j < i, |b*_i|^2 [3])."""
    b0 = basis[0]
    m0 = jnp.dot(b0, b0)
    mu10 = jnp.dot(basis[1], b0) / _safe(m0)
    b1 = basis[1] - mu10 * b0
    m1 = jnp.dot(b1, b1)
    mu20 = jnp.dot(basis[2], b0) / _safe(m0)
    mu21 = jnp.dot(basis[2], b1) / _safe(m1)
    b2 = basis[2] - mu20 * b0 - mu21 * b1
    m2 = jnp.dot(b2, b2)
    zero = jnp.zeros_like(m0)
    mu = jnp.stack(
        [jnp.stack([zero, zero, zero]), jnp.stack([mu10, zero, zero]), jnp.stack([mu20, mu21, zero])]
    )
    return jnp.stack([b0, b1, b2]), mu, jnp.stack([m0, m1, m2])


def _safe(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.where(x > 0, x, 1.0)


def lll_reduce_with_status(
    matrix: jnp.ndarray, delta: float = 0.75, max_iter: int = 100
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """LLL reduction of one lattice, returning ``(reduced [3,3], transform [3,3], converged [] bool)``.

    ``reduced = transform @ matrix`` exactly (the reduced rows are recomputed from the integer, unimodular
    ``transform``, never accumulated), so fractional coordinates map as ``f_reduced = f @ inv(transform)``.
    The textbook LLL loop (size reduction of row k, then the Lovasz test with parameter ``delta``, swap and
    step back on failure) as a ``lax.while_loop`` capped at ``max_iter`` steps; ``converged`` is False when
    the cap was hit or the input is degenerate (NaN, zero volume), in which case the result is still a valid
    unimodular change of basis of the input, only less reduced. Same algorithm and delta as pymatgen's
    ``Lattice.get_lll_reduced_lattice``.
    """
    matrix = jnp.asarray(matrix, jnp.float32)
    eye = jnp.eye(3, dtype=jnp.float32)

    def cond(state):
        _, k, it = state
        return (k < 3) & (it < max_iter)

    def body(state):
        t, k, it = state
        basis = t @ matrix
        # Size reduction of row k against rows k-1, ..., 0 (the GS vectors of rows < k do not change).
        bstar, _, msq = _gram_schmidt(basis)
        row_k = jnp.take(t, k, axis=0)
        vec_k = jnp.take(basis, k, axis=0)
        for j in (2, 1, 0):
            active = j < k
            q = jnp.round(jnp.dot(vec_k, bstar[j]) / _safe(msq[j]))
            q = jnp.where(active & jnp.isfinite(q), q, 0.0)
            row_k = row_k - q * t[j]
            vec_k = vec_k - q * basis[j]
        t = jnp.where((jnp.arange(3) == k)[:, None], row_k[None, :], t)
        # Lovasz condition between rows k-1 and k.
        basis = t @ matrix
        _, mu, msq = _gram_schmidt(basis)
        km1 = k - 1
        mu_k = jnp.take(jnp.take(mu, k, axis=0), km1)
        lovasz = jnp.take(msq, k) >= (delta - mu_k * mu_k) * jnp.take(msq, km1)
        perm = jnp.arange(3)
        perm = jnp.where(perm == k, km1, jnp.where(perm == km1, k, perm))
        t_swapped = t[perm]
        t = jnp.where(lovasz, t, t_swapped)
        k = jnp.where(lovasz, k + 1, jnp.maximum(k - 1, 1))
        return t, k, it + 1

    t, k, _ = jax.lax.while_loop(cond, body, (eye, jnp.int32(1), jnp.int32(0)))
    finite = jnp.all(jnp.isfinite(matrix))
    t = jnp.where(finite, t, eye)
    return t @ matrix, t, (k >= 3) & finite


def lll_reduce(
    matrix: jnp.ndarray, delta: float = 0.75, max_iter: int = 100
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """LLL-reduced basis of one lattice: ``(reduced [3,3], transform [3,3])`` with ``reduced = transform @
    matrix``, ``transform`` integer-valued (float32) and unimodular. See :func:`lll_reduce_with_status`."""
    reduced, transform, _ = lll_reduce_with_status(matrix, delta, max_iter)
    return reduced, transform


def integer_inverse(transform: jnp.ndarray) -> jnp.ndarray:
    """Exact inverse of a unimodular integer 3x3 matrix (det = +-1) via the adjugate (integer-valued)."""
    t = transform
    cof = jnp.stack(
        [
            jnp.cross(t[1], t[2]),
            jnp.cross(t[2], t[0]),
            jnp.cross(t[0], t[1]),
        ]
    )  # rows of the cofactor matrix
    det = jnp.dot(t[0], cof[0])
    return cof.T * jnp.sign(det)  # inverse = adj / det and 1/det = det for det = +-1


def reciprocal_heights(matrix: jnp.ndarray) -> jnp.ndarray:
    """[3] interplanar spacings h_i = V / |b_j x b_k| (distance between neighbouring lattice planes spanned by
    the two other rows). A lattice vector with fractional component n_i along row i is >= |n_i| h_i long."""
    cross = jnp.stack(
        [jnp.cross(matrix[1], matrix[2]), jnp.cross(matrix[2], matrix[0]), jnp.cross(matrix[0], matrix[1])]
    )
    vol = jnp.abs(jnp.dot(matrix[0], cross[0]))
    return vol / jnp.maximum(jnp.sqrt(jnp.sum(cross * cross, axis=-1)), 1e-30)


def rhombohedral_to_hexagonal(lattice: jnp.ndarray) -> jnp.ndarray:
    """[..., 6] hexagonal-axes cell (a, a, c, 90, 90, 120) of a rhombohedral-axes cell (a_r, a_r, a_r, al x3).

    The conventional cell of the R groups uses hexagonal axes (3x the volume of the rhombohedral cell, obverse
    setting): Wyckoff multiplicities (pyxtal, the International Tables) and the proxies' training data refer to
    it. ``a = 2 a_r sin(al / 2)``, ``c = a_r sqrt(3 (1 + 2 cos al))``. Uses ``a`` (index 0) and ``alpha``
    (index 3) only; jit/vmap-safe.
    """
    a_r, al = lattice[..., 0], jnp.deg2rad(lattice[..., 3])
    a = 2.0 * a_r * jnp.sin(al / 2.0)
    c = a_r * jnp.sqrt(jnp.maximum(3.0 * (1.0 + 2.0 * jnp.cos(al)), 0.0))
    ninety, hundred_twenty = jnp.full_like(a, 90.0), jnp.full_like(a, 120.0)
    return jnp.stack([a, a, c, ninety, ninety, hundred_twenty], axis=-1)
