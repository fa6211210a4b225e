"""The crystal matrix the PGCGM discriminator sees, and the physics terms built from base-site sets (jnp).

Shapes per crystal (callers vmap over the batch): ``sets [3 sets, 3 elements, 3]`` fractional base sites (one
site per element per set), ``lengths [3]``, ``o [192, 4, 4]`` affine operations and ``op_mask [192]``.

- Averaged full coordinates F (paper "All Fractional Coordinates"): each base site is mapped by every REAL
  operation, wrapped into [0, 1), and averaged over the real operations only (:func:`full_average`). The
  reference code averages over all 192 zero-padded slots, pulling every average towards the origin by the share
  of padding; the masked mean is what the paper's argument (F^0 = F^1 = F^2 for a real crystal) needs.
- Distances H (paper "Atom Distance Matrices"): Cartesian minimum-image distances (27 neighbouring images; exact
  for the orthogonal and 120-degree hexagonal cells of the 20 groups). ``H_inter [3 sets, 3 pairs]``: the three
  element pairs inside each set; ``H_intra [3 elements, 3 pairs]``: the same element across the three set pairs.
- The assembled matrix (Table 7): rows are the three elements; columns B (9), F (9), C (9), E (23), P* (1),
  V (1), H_inter + H_intra (6), A (3) and 3 zeros = 64, reshaped to 8 x 8 with 3 channels (NHWC [8, 8, 3]).
  Lengths, Cartesian coordinates, distances and the lattice matrix are divided by ``length_scale`` and the
  volume by its cube (our normalisation: the paper does not give one).
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal.lattice import params_to_matrix

PAIRS = ((0, 1), (0, 2), (1, 2))
_SHIFTS = np.asarray(list(itertools.product((-1.0, 0.0, 1.0), repeat=3)), np.float32)  # [27, 3]


def lattice_params(lengths: jnp.ndarray, angles: jnp.ndarray) -> jnp.ndarray:
    return jnp.concatenate([lengths, angles])


def min_image_distance(fa: jnp.ndarray, fb: jnp.ndarray, matrix: jnp.ndarray) -> jnp.ndarray:
    """``[..., 3], [..., 3], [3, 3] -> [...]``: shortest Cartesian distance between the periodic images."""
    d = fa - fb
    d = d - jnp.round(d)
    cart = jnp.einsum("...ki,ij->...kj", d[..., None, :] + _SHIFTS, matrix)  # [..., 27, 3]
    d2 = jnp.min(jnp.sum(cart * cart, axis=-1), axis=-1)
    return jnp.sqrt(jnp.maximum(d2, 1e-12))


def distance_matrices(sets: jnp.ndarray, matrix: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(H_inter [3 sets, 3 pairs], H_intra [3 elements, 3 pairs])`` in Angstrom."""
    ia, ib = np.asarray(PAIRS).T
    inter = min_image_distance(sets[:, ia], sets[:, ib], matrix)  # [3 sets, 3]
    intra = min_image_distance(sets[ia].transpose(1, 0, 2), sets[ib].transpose(1, 0, 2), matrix)  # [3 el, 3]
    return inter, intra


def radius_sums(radii: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``radii [3]`` (per element) -> ``(S_inter [3 pairs], S_intra [3 elements])``: atomic radius sums."""
    ia, ib = np.asarray(PAIRS).T
    return radii[ia] + radii[ib], 2.0 * radii


def full_images(sets: jnp.ndarray, o: jnp.ndarray) -> jnp.ndarray:
    """``[192, 3 sets, 3 elements, 3]``: every base site mapped by every operation slot, wrapped to [0, 1)."""
    x = jnp.concatenate([sets, jnp.ones(sets.shape[:-1] + (1,), sets.dtype)], axis=-1)
    img = jnp.einsum("kij,sej->ksei", o, x)[..., :3]
    return img - jnp.floor(img)


def full_average(sets: jnp.ndarray, o: jnp.ndarray, op_mask: jnp.ndarray) -> jnp.ndarray:
    """``[3 sets, 3 elements, 3]``: F, the mean of the wrapped images over the REAL operations only."""
    w = op_mask.astype(sets.dtype)
    return jnp.einsum("k,ksei->sei", w, full_images(sets, o)) / jnp.maximum(jnp.sum(w), 1.0)


def crystal_matrix(sets, lengths, angles, props, o, op_mask, length_scale: float) -> jnp.ndarray:
    """``[8, 8, 3]``: the discriminator's crystal input (Table 7), see the module docstring."""
    matrix = params_to_matrix(lattice_params(lengths, angles))
    inter, intra = distance_matrices(sets, matrix)
    f = full_average(sets, o, op_mask)
    cart = jnp.einsum("sei,ij->sej", sets, matrix)
    per_element = lambda a: a.transpose(1, 0, 2).reshape(3, 9)  # noqa: E731  [set, el, 3] -> [el, 9]
    vol = jnp.abs(jnp.linalg.det(matrix)) / length_scale**3
    cols = [
        per_element(sets), per_element(f), per_element(cart) / length_scale, props,
        (lengths / length_scale)[:, None], jnp.full((3, 1), vol), inter / length_scale, intra / length_scale,
        matrix / length_scale, jnp.zeros((3, 3), sets.dtype),
    ]  # fmt: skip
    m = jnp.concatenate(cols, axis=1)  # [3, 64]
    return m.reshape(3, 8, 8).transpose(1, 2, 0)
