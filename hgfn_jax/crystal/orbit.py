"""Orbit expansion: the full conventional cell from reference (asymmetric-unit) atoms and a space group.

Every valid operation of the group (``spacegroup.get_tables()``, pymatgen's setting, identical to
``Structure.from_spacegroup``) is applied to every valid reference atom in FRACTIONAL coordinates, images are
wrapped into [0, 1), and images of the SAME reference atom that coincide are merged, as pymatgen's
``SpaceGroup.get_orbit`` does (a special position gives fewer images than the group has operations; the count
is the Wyckoff multiplicity).

Merging rule. The stabilizer S of a reference point p is the set of operations g_s with ``d(g_s p, p) < tol``,
where d is pymatgen's L1 distance on fractional coordinates, ``sum_k |d_k|``, made PERIODIC (each ``d_k``
wrapped to [-0.5, 0.5]), so images on opposite cell faces merge too. Images g_j p and g_k p coincide exactly
when g_j^-1 g_k is in S, so each coset g_k S is one site and its lowest operation index is kept (op 0 is the
identity: the reference position itself, wrapped, is always kept). Padding operations are identities in every
table, so they repeat op 0 and never add a site even if ``op_mask`` were ignored. This costs O(A * 192)
distance tests plus bit operations on a precomputed composition table instead of O(A * 192^2) pairwise
distances.

The tolerance: two images are merged iff they are the same point up to float32 rounding and a ~1e-6
perturbation, never because they are merely close. ``DEFAULT_TOL = 1e-5`` (pymatgen's ``get_orbit`` default),
chosen from these bounds (measured over every special Wyckoff position of the 230 groups,
tests/crystal/test_orbit_special_positions.py):

- Must merge: an exact special position cast to float32 has stabilizer images at most 1.5e-7 away (rounding
  of 1/3, 1/6, ... and of x - y sums). A point perturbed by ``|delta|_inf <= 1e-6`` from a special position has
  them at ``|(R - I) delta|_1 <= 6e-6`` (6 = the largest ``||R - I||`` from inf to L1 over all operations,
  hexagonal ones), so perturbations up to ~1.6e-6 per coordinate still give the Wyckoff multiplicity.
- Must never fuse distinct sites: a fused pair g_j p, g_k p has g_j^-1 g_k = s in S, and its Cartesian
  separation equals ``|s p - p|`` in Angstrom (the rotation part is orthogonal in Cartesian for a lattice
  obeying the group's constraints), which is at most ``d(s p, p) * max(a, b, c) < 1e-5 max(a, b, c)``. So two
  images at least ``1e-5 max(a, b, c)`` Angstrom apart (1e-4 A in a 10 A cell, in ANY cell, skewed or not) are
  always kept as two sites; closer ones are not physically distinct atoms. The former default, 1e-3
  (periodic L1), fused images up to ~1e-3 apart: points within ~5e-4 of a mirror plane (e.g. z = 0.7496 in
  group 57, Pbcm, 4 sites instead of 8) and exact special positions with a free parameter within ~5e-4 of a
  more special value.
- A tolerance in fractional units (not Angstrom) keeps the site set a function of the fractional point alone,
  as Wyckoff positions are, and the float32 rounding it must absorb is itself fractional.

Within ~1e-5 of a special position but not on it (images of p at about ``tol``), S need not be a group: a
cluster of images within ``1e-5 max(a, b, c)`` A may then keep more than one image (never fewer than one),
a near-duplicate the reward sees as an overlap.

Images of DIFFERENT reference atoms are never merged, even when they coincide: two atoms on one site is an
overlap that the reward must see (a distance of ~0), not something to hide.

Output layout. Sites are ordered by (reference atom, operation index) and compacted (stable) into ``n_max``
slots; the remaining slots are padding (mask False, species 0, coordinates 0). When the full cell has more
than ``n_max`` sites, ``overflow`` is True and the ``n_max`` slots hold the FIRST ``n_max`` sites in that
order: the complete orbits of the first reference atoms and possibly a truncated orbit; sites beyond are NOT
present. Never ignore the flag.

Invalid input inside ``jit`` (no raising possible): a space group outside 1..230 gives no sites and
``invalid = True``; a valid reference atom with a non-finite coordinate is dropped (treated as masked) and
sets ``invalid = True``. ``expand_orbits_checked`` is the host-side wrapper that raises ``ValueError``
instead.

All functions work on ONE structure (unbatched); callers ``jax.vmap`` them (every argument but ``n_max`` may
be batched, ``n_max`` is static). Shapes are fixed: ``A * 192`` candidate images, compacted with a cumsum +
scatter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from hgfn_jax.crystal import spacegroup as sgm
from hgfn_jax.crystal.types import Crystal

DEFAULT_TOL = 1e-5  # periodic L1 in fractional units; see "The tolerance" in the module docstring
MIN_TOL = 1e-6  # below this, float32 rounding (<= 1.5e-7) could split an exact special position


@struct.dataclass
class OrbitExpansion:
    """Result of :func:`expand_orbits_full` (batched results carry a leading ``[B]``)."""

    crystal: Crystal  # the padded cell, see Crystal (frac [N, 3], species [N], mask [N], ...)
    ref_index: jnp.ndarray  # [N] int32: reference atom each site came from; -1 for padding
    op_index: jnp.ndarray  # [N] int32: index of the group's operation that made the site; -1 padding
    orbit_size: jnp.ndarray  # [A] int32: number of sites of each reference atom's orbit (0 if masked/invalid)
    num_sites: jnp.ndarray  # [] int32: sites of the full cell (may exceed N; then crystal.overflow is True)
    invalid: jnp.ndarray  # [] bool: space group not in 1..230, or a real reference atom had non-finite coords


def wrap_frac(x: jnp.ndarray) -> jnp.ndarray:
    """Fractional coordinates wrapped into [0, 1) (values that round to 1.0 in float32 become 0)."""
    w = x - jnp.floor(x)
    return jnp.where(w >= 1.0, w - 1.0, w)


def periodic_l1(d: jnp.ndarray) -> jnp.ndarray:
    """``[..., 3] -> [...]``: L1 norm of a fractional difference, each component wrapped to [-0.5, 0.5]."""
    return jnp.sum(jnp.abs(d - jnp.round(d)), axis=-1)


def expand_orbits_full(
    frac_ref: jnp.ndarray,
    species_ref: jnp.ndarray,
    mask_ref: jnp.ndarray,
    spacegroup: jnp.ndarray,
    n_max: int,
    tol: float = DEFAULT_TOL,
    lattice: jnp.ndarray | None = None,
    tables: sgm.SpaceGroupTables | None = None,
) -> OrbitExpansion:
    """Expands reference atoms into the full cell and returns the cell plus per-site provenance.

    Args:
        frac_ref: ``[A, 3]`` fractional coordinates of the reference atoms (any real values; wrapped).
        species_ref: ``[A]`` int atomic numbers (copied to every image; not checked inside jit).
        mask_ref: ``[A]`` bool, True for real reference atoms.
        spacegroup: ``[]`` int international number 1..230 (traced values allowed).
        n_max: static number of output slots ``N``.
        tol: merge tolerance, periodic L1 distance in fractional units (default 1e-5, pymatgen's ``get_orbit``
            value with its non-periodic L1 distance). Keep it in [``MIN_TOL``, ~1e-5]: larger values fuse
            genuinely distinct sites (module docstring, "The tolerance").
        lattice: ``[6]`` parameters copied UNCHANGED into ``crystal.lattice`` (not constrained: apply
            ``constraints.apply_spacegroup_constraints`` first; the expansion itself is purely fractional).
            ``None`` gives zeros, a placeholder the caller must replace.
        tables: the space-group tables (default ``spacegroup.get_tables()``, closed over as constants).

    Returns:
        :class:`OrbitExpansion`; ``crystal.overflow`` is True when the cell has more than ``n_max`` sites.
    """
    if tables is None:
        tables = sgm.get_tables()
    frac_ref = jnp.asarray(frac_ref, jnp.float32)
    species_ref = jnp.asarray(species_ref, jnp.int32)
    mask_ref = jnp.asarray(mask_ref, bool)
    if frac_ref.ndim != 2 or frac_ref.shape[-1] != 3:
        raise ValueError(
            f"frac_ref must have shape [A, 3] (one structure; vmap for batches), got {frac_ref.shape}"
        )
    n_ref = frac_ref.shape[0]
    if species_ref.shape != (n_ref,) or mask_ref.shape != (n_ref,):
        raise ValueError(
            f"species_ref and mask_ref must have shape [{n_ref}], got {species_ref.shape} and "
            f"{mask_ref.shape}"
        )
    n_max = int(n_max)
    if n_max < 1:
        raise ValueError(f"n_max must be a positive integer, got {n_max}")
    sg = jnp.asarray(spacegroup, jnp.int32)
    if sg.shape != ():
        raise ValueError(
            f"spacegroup must be a scalar (one structure; vmap for batches), got shape {sg.shape}"
        )

    sg_ok = (sg >= 1) & (sg <= sgm.N_SPACEGROUPS)
    row = jnp.where(sg_ok, sg, 0)  # row 0: identity ops, all masked -> no sites
    rot = tables.rotations[row]  # [K, 3, 3]
    trans = tables.translations[row]  # [K, 3]
    op_ok = tables.op_mask[row]  # [K]
    n_ops = rot.shape[0]

    finite = jnp.all(jnp.isfinite(frac_ref), axis=-1)  # [A]
    ref_ok = mask_ref & finite
    x = jnp.where(ref_ok[:, None], frac_ref, 0.0)
    images = wrap_frac(jnp.einsum("kij,aj->aki", rot, x) + trans[None])  # [A, K, 3]

    # Merge through the stabilizer S = {s : g_s p ~ p} (within tol). Images g_j p and g_k p coincide iff
    # g_k = g_j o h with h in S, so within each coset g_k S only the lowest op index is kept: image k is a
    # repeat iff g_k o g_s has a lower index for some s in S. repeat_bits[s] holds that test for all k as a
    # 192-bit set, so the merge is an OR over the stabilizer: [A, K, 6] words.
    stab = (periodic_l1(images - images[:, :1, :]) < tol) & op_ok[None, :]  # [A, K]; op 0 = identity
    bits = tables.repeat_bits[row]  # [K, 6] uint32
    words = lax.reduce(
        jnp.where(stab[:, :, None], bits[None], jnp.uint32(0)), jnp.uint32(0), lax.bitwise_or, (1,)
    )  # [A, 6]
    k = jnp.arange(n_ops, dtype=jnp.uint32)
    repeat = ((words[:, k // 32] >> (k % 32)) & 1).astype(bool)  # [A, K]
    keep = ref_ok[:, None] & op_ok[None, :] & ~repeat  # [A, K]

    keep_flat = keep.reshape(-1)
    slot = jnp.cumsum(keep_flat) - 1  # stable compaction
    num_sites = jnp.sum(keep_flat).astype(jnp.int32)
    target = jnp.where(keep_flat & (slot < n_max), slot, n_max)  # n_max = out of bounds -> dropped
    ref_of = jnp.repeat(jnp.arange(n_ref, dtype=jnp.int32), n_ops)
    op_of = jnp.tile(jnp.arange(n_ops, dtype=jnp.int32), n_ref)

    frac = jnp.zeros((n_max, 3), jnp.float32).at[target].set(images.reshape(-1, 3), mode="drop")
    ref_index = jnp.full((n_max,), -1, jnp.int32).at[target].set(ref_of, mode="drop")
    op_index = jnp.full((n_max,), -1, jnp.int32).at[target].set(op_of, mode="drop")
    mask = ref_index >= 0
    species = jnp.where(mask, species_ref[jnp.maximum(ref_index, 0)], 0)

    lat = jnp.zeros((6,), jnp.float32) if lattice is None else jnp.asarray(lattice, jnp.float32)
    crystal = Crystal(
        lattice=lat,
        frac=frac,
        species=species,
        mask=mask,
        spacegroup=jnp.where(sg_ok, sg, 0),
        overflow=num_sites > n_max,
    )
    return OrbitExpansion(
        crystal=crystal,
        ref_index=ref_index,
        op_index=op_index,
        orbit_size=jnp.sum(keep, axis=1).astype(jnp.int32),
        num_sites=num_sites,
        invalid=~sg_ok | jnp.any(mask_ref & ~finite),
    )


def expand_orbits(
    frac_ref: jnp.ndarray,
    species_ref: jnp.ndarray,
    mask_ref: jnp.ndarray,
    spacegroup: jnp.ndarray,
    n_max: int,
    tol: float = DEFAULT_TOL,
    lattice: jnp.ndarray | None = None,
) -> Crystal:
    """The full cell as a padded :class:`Crystal` (see :func:`expand_orbits_full` for arguments and flags).

    jit/vmap-safe; ``n_max`` must be static (e.g. ``jax.jit(expand_orbits, static_argnames="n_max")``).
    """
    return expand_orbits_full(frac_ref, species_ref, mask_ref, spacegroup, n_max, tol, lattice).crystal


@functools.partial(jax.jit, static_argnames=("n_max",))
def _expand_jit(frac_ref, species_ref, mask_ref, spacegroup, n_max, tol, lattice):
    return expand_orbits_full(frac_ref, species_ref, mask_ref, spacegroup, n_max, tol, lattice)


def expand_orbits_checked(
    frac_ref,
    species_ref,
    mask_ref,
    spacegroup,
    n_max: int,
    tol: float = DEFAULT_TOL,
    lattice=None,
) -> Crystal:
    """Host-side :func:`expand_orbits` for ONE structure, raising ``ValueError`` on bad input (no flags).

    Checks: space group an integer in 1..230; coordinates of real reference atoms finite; species of real
    atoms in 1..118; lattice (if given) 6 finite numbers; ``tol`` in [``MIN_TOL``, 0.5); and that the cell fits
    (``"cell has 96 sites, n_max=80"``). Not for use inside ``jit``.
    """
    sg = sgm.validate_spacegroup(spacegroup)
    frac_np = np.asarray(frac_ref, dtype=np.float64)
    species_np = np.asarray(species_ref)
    mask_np = np.asarray(mask_ref)
    if frac_np.ndim != 2 or frac_np.shape[1] != 3:
        raise ValueError(f"frac_ref must have shape [A, 3], got {frac_np.shape}")
    if species_np.shape != (frac_np.shape[0],) or mask_np.shape != (frac_np.shape[0],):
        raise ValueError(
            f"species_ref and mask_ref must have shape [{frac_np.shape[0]}], got {species_np.shape} and "
            f"{mask_np.shape}"
        )
    if mask_np.dtype != np.bool_:
        raise ValueError(f"mask_ref must be boolean, got dtype {mask_np.dtype}")
    if not np.issubdtype(species_np.dtype, np.integer):
        raise ValueError(f"species_ref must hold integer atomic numbers, got dtype {species_np.dtype}")
    bad = np.nonzero(mask_np & ~np.all(np.isfinite(frac_np), axis=1))[0]
    if bad.size:
        raise ValueError(f"non-finite fractional coordinates for reference atom(s) {bad.tolist()}")
    bad = np.nonzero(mask_np & ((species_np < 1) | (species_np > 118)))[0]
    if bad.size:
        raise ValueError(f"atomic numbers must be in 1..118 for real atoms, got {species_np[bad].tolist()}")
    if not MIN_TOL <= float(tol) < 0.5:
        raise ValueError(
            f"tol must be in [{MIN_TOL}, 0.5) (fractional; smaller values split exact special positions), "
            f"got {tol}"
        )
    if int(n_max) < 1:
        raise ValueError(f"n_max must be a positive integer, got {n_max}")
    lat = None
    if lattice is not None:
        lat = np.asarray(lattice, dtype=np.float64)
        if lat.shape != (6,) or not np.all(np.isfinite(lat)):
            raise ValueError(
                f"lattice must be 6 finite numbers (a, b, c, alpha, beta, gamma), got {lattice!r}"
            )
    out = _expand_jit(
        frac_np.astype(np.float32),
        species_np.astype(np.int32),
        mask_np,
        sg,
        int(n_max),
        float(tol),
        None if lat is None else lat.astype(np.float32),
    )
    if bool(out.invalid):
        raise ValueError("orbit expansion flagged invalid input")  # unreachable after the checks above
    num = int(out.num_sites)
    if num > int(n_max):
        raise ValueError(f"cell has {num} sites, n_max={int(n_max)}")
    return out.crystal
