"""Lattice-parameter constraints per lattice system, as tables, and pure jit-safe functions applying them.

Parameters are ``[a, b, c, alpha, beta, gamma]`` (Angstrom, degrees), in the order of ``Crystal.lattice``.
Rows of the tables are lattice systems (``spacegroup.LATTICE_SYSTEMS``: 0 triclinic, 1 monoclinic,
2 orthorhombic, 3 tetragonal, 4 rhombohedral, 5 hexagonal, 6 cubic). Each parameter is exactly one of

- free (``FREE_MASK``): kept as given;
- fixed (``FIXED_MASK``): set to ``FIXED_VALUE`` (90 or 120 degrees);
- tied: copies parameter ``TIE_INDEX`` (e.g. tetragonal b = a). ``TIE_INDEX`` is the parameter itself when
  free or fixed, so ``params[TIE_INDEX]`` is always meaningful.

Settings (they must match the stored space-group operations, or the operations would not be symmetries of the
lattice):

- Monoclinic: pymatgen's operations use UNIQUE AXIS b (the 2-fold axis / mirror normal is along b), so beta is
  free and alpha = gamma = 90. Paper 000 (Table 5) writes gamma free, i.e. unique axis c; with our operations
  that lattice would break the symmetry, so we follow the operations' setting.
- Rhombohedral (the 7 R groups): row 4 of the tables is the rhombohedral-axes cell (a = b = c, alpha = beta =
  gamma free), used by Crystal-GFN. The stored operations use HEXAGONAL axes, so by default
  (``rhombohedral_axes=False``) lattice system 4 is constrained like the hexagonal row (a = b, alpha = beta =
  90, gamma = 120): that is the cell to use with orbit expansion. Pass ``rhombohedral_axes=True`` to get the
  rhombohedral-axes cell instead (its atoms would have to be converted to that cell).
- Triclinic: all free; orthorhombic: a, b, c free; tetragonal: a, c (b = a); hexagonal: a, c (b = a,
  gamma = 120); cubic: a (b = c = a); all other angles 90.

Functions work on ONE parameter vector ``[6]`` (callers ``jax.vmap``). ``lattice_system`` may be a Python int
(validated, ``ValueError`` outside 0..6) or a traced int32 (inside ``jit`` out-of-range values are CLIPPED to
0..6, as JAX indexing does; validate upstream). ``rhombohedral_axes`` may be a Python bool or a traced bool.
Nothing here checks that the resulting cell is geometrically valid (e.g. rhombohedral alpha < 120).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal import spacegroup as sgm

A, B, C, ALPHA, BETA, GAMMA = range(6)
N_LATTICE_SYSTEMS = 7


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    free = np.zeros((7, 6), bool)
    fixed = np.zeros((7, 6), bool)
    value = np.zeros((7, 6), np.float32)
    tie = np.tile(np.arange(6, dtype=np.int32), (7, 1))

    def fix(row: int, idx: int, deg: float) -> None:
        fixed[row, idx] = True
        value[row, idx] = deg

    free[sgm.TRICLINIC] = True
    free[sgm.MONOCLINIC, [A, B, C, BETA]] = True
    fix(sgm.MONOCLINIC, ALPHA, 90.0)
    fix(sgm.MONOCLINIC, GAMMA, 90.0)
    for row in (sgm.ORTHORHOMBIC, sgm.TETRAGONAL, sgm.CUBIC):
        for idx in (ALPHA, BETA, GAMMA):
            fix(row, idx, 90.0)
    free[sgm.ORTHORHOMBIC, [A, B, C]] = True
    free[sgm.TETRAGONAL, [A, C]] = True
    tie[sgm.TETRAGONAL, B] = A
    free[sgm.RHOMBOHEDRAL, [A, ALPHA]] = True
    tie[sgm.RHOMBOHEDRAL, [B, C]] = A
    tie[sgm.RHOMBOHEDRAL, [BETA, GAMMA]] = ALPHA
    free[sgm.HEXAGONAL, [A, C]] = True
    tie[sgm.HEXAGONAL, B] = A
    fix(sgm.HEXAGONAL, ALPHA, 90.0)
    fix(sgm.HEXAGONAL, BETA, 90.0)
    fix(sgm.HEXAGONAL, GAMMA, 120.0)
    free[sgm.CUBIC, A] = True
    tie[sgm.CUBIC, [B, C]] = A
    for arr in (free, fixed, value, tie):
        arr.setflags(write=False)
    return free, fixed, value, tie


FREE_MASK, FIXED_MASK, FIXED_VALUE, TIE_INDEX = _tables()
"""``[7, 6]`` numpy tables (bool, bool, float32 degrees, int32), rows = lattice systems (module docstring)."""


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer) and np.ndim(x) == 0


def _row(lattice_system, rhombohedral_axes) -> int | jnp.ndarray:
    """Table row: the lattice system; rhombohedral maps to the hexagonal row unless rhombohedral axes.

    A Python int when both arguments are concrete (validated; cheap eager use), else a traced int32 (clipped).
    """
    if _is_concrete(lattice_system):
        if isinstance(lattice_system, (bool, np.bool_)) or not np.issubdtype(
            np.asarray(lattice_system).dtype, np.integer
        ):
            raise ValueError(f"lattice system must be an integer in 0..6, got {lattice_system!r}")
        if not 0 <= int(lattice_system) < N_LATTICE_SYSTEMS:
            raise ValueError(f"lattice system must be an integer in 0..6, got {int(lattice_system)}")
        if _is_concrete(rhombohedral_axes):
            ls = int(lattice_system)
            return sgm.HEXAGONAL if (ls == sgm.RHOMBOHEDRAL and not bool(rhombohedral_axes)) else ls
    ls = jnp.clip(jnp.asarray(lattice_system, jnp.int32), 0, N_LATTICE_SYSTEMS - 1)
    hex_axes = (ls == sgm.RHOMBOHEDRAL) & ~jnp.asarray(rhombohedral_axes, bool)
    return jnp.where(hex_axes, sgm.HEXAGONAL, ls)


def _lookup(table: np.ndarray, row: int | jnp.ndarray):
    return table[row] if isinstance(row, int) else jnp.asarray(table)[row]


def free_mask(lattice_system, rhombohedral_axes=False) -> jnp.ndarray:
    """``[6] bool``: which parameters are free for this lattice system (and choice of rhombohedral axes)."""
    return jnp.asarray(_lookup(FREE_MASK, _row(lattice_system, rhombohedral_axes)))


def num_free(lattice_system, rhombohedral_axes=False) -> jnp.ndarray:
    """``[] int32``: number of free lattice parameters (6 triclinic, 4 monoclinic, ..., 1 cubic)."""
    return jnp.sum(free_mask(lattice_system, rhombohedral_axes)).astype(jnp.int32)


def apply_constraints(params: jnp.ndarray, lattice_system, rhombohedral_axes=False) -> jnp.ndarray:
    """``[6] -> [6]``: free parameters kept, tied ones copied from their source, fixed ones set (90/120 deg).

    Use it to turn sampled parameters into a lattice of the group's system: only the free entries of
    ``params`` matter. Pure, jit/vmap-safe (one vector; vmap for batches). Output dtype float32.
    """
    params = jnp.asarray(params, jnp.float32)
    row = _row(lattice_system, rhombohedral_axes)
    tied = params[_lookup(TIE_INDEX, row)]
    return jnp.where(_lookup(FIXED_MASK, row), _lookup(FIXED_VALUE, row), tied)


def project(params: jnp.ndarray, lattice_system, rhombohedral_axes=False) -> jnp.ndarray:
    """``[6] -> [6]``: the nearest (Euclidean in parameter space) allowed parameter vector.

    Unlike :func:`apply_constraints`, which copies the free parameter into its ties, each group of tied
    parameters is replaced by its MEAN (e.g. tetragonal a = b = (a + b) / 2), and fixed parameters are set.
    Idempotent; an already allowed vector is unchanged.
    """
    params = jnp.asarray(params, jnp.float32)
    row = _row(lattice_system, rhombohedral_axes)
    tie = jnp.asarray(_lookup(TIE_INDEX, row))
    fixed = jnp.asarray(_lookup(FIXED_MASK, row))
    same = (tie[:, None] == tie[None, :]) & ~fixed[None, :]  # [6, 6]: j is in i's tie group
    mean = (same.astype(jnp.float32) @ params) / jnp.maximum(jnp.sum(same, axis=1), 1)
    return jnp.where(fixed, _lookup(FIXED_VALUE, row), mean)


def _lattice_system_of(spacegroup) -> int | jnp.ndarray:
    if _is_concrete(spacegroup):
        return int(sgm.host_tables()["lattice_system"][sgm.validate_spacegroup(spacegroup)])
    n = jnp.clip(jnp.asarray(spacegroup, jnp.int32), 1, sgm.N_SPACEGROUPS)
    return sgm.get_tables().lattice_system[n]


def lattice_system_of(spacegroup) -> jnp.ndarray:
    """``[] int32`` lattice system of ``spacegroup`` (validated if concrete, clipped if traced)."""
    return jnp.asarray(_lattice_system_of(spacegroup), jnp.int32)


def apply_spacegroup_constraints(params: jnp.ndarray, spacegroup, rhombohedral_axes=False) -> jnp.ndarray:
    """:func:`apply_constraints` for the lattice system of space group ``spacegroup`` (1..230)."""
    return apply_constraints(params, _lattice_system_of(spacegroup), rhombohedral_axes)
