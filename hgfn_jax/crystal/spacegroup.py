"""Space-group tables for JAX: symmetry operations, class labels and Wyckoff positions of the 230 groups.

The tables come from ``crystal/tables/spacegroups.npz``, built from pymatgen + pyxtal by
``python -m hgfn_jax.crystal.tables.generate`` (see that module for the exact setting). Conventions:

- Groups are indexed by their international number 1..230; row 0 of every table is a dummy (identity ops, all
  masked, no Wyckoff positions) and must never be used: validate numbers with :func:`validate_spacegroup`.
- Operations act on FRACTIONAL coordinates of the conventional cell: x -> R x + t (``rotations[n, k] @ x +
  translations[n, k]``), in pymatgen's setting (``Structure.from_spacegroup``): monoclinic unique axis b,
  hexagonal axes for the R groups, origin choice 1. Padding operations are the identity AND masked.
- Wyckoff positions are listed general position first (pyxtal order); ``wyckoff_rep[n, w] @ (x, y, z, 1)``
  gives the first site of position ``w`` from its free parameters; ``wyckoff_dof == 0`` is a fixed special
  position.

``get_tables()`` returns a :class:`SpaceGroupTables` of ``jnp`` arrays (cached; pass it into jitted code or
close over it); ``host_tables()`` returns the raw numpy arrays, symbols and letters included, for host code.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Mapping
from types import MappingProxyType

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hgfn_jax.crystal.tables import TABLES_PATH

N_SPACEGROUPS = 230
MAX_OPS = 192
MAX_WYCKOFF = 27

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
LATTICE_SYSTEMS = (
    "triclinic", "monoclinic", "orthorhombic", "tetragonal", "rhombohedral", "hexagonal", "cubic",
)  # fmt: skip
CRYSTAL_LATTICE_SYSTEMS = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal-rhombohedral",
    "trigonal-hexagonal",
    "hexagonal-hexagonal",
    "cubic",
)
CRYSTAL_FAMILIES = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "hexagonal", "cubic")
POINT_SYMMETRIES = (
    "centrosymmetric", "non-centrosymmetric", "enantiomorphic", "polar", "enantiomorphic-polar",
)  # fmt: skip
POINT_GROUPS = (
    "1", "-1", "2", "m", "2/m", "222", "mm2", "mmm", "4", "-4", "4/m", "422", "4mm", "-42m", "4/mmm", "3",
    "-3", "32", "3m", "-3m", "6", "-6", "6/m", "622", "6mm", "-6m2", "6/mmm", "23", "m-3", "432", "-43m",
    "m-3m",
)  # fmt: skip
RHOMBOHEDRAL_SPACEGROUPS = (146, 148, 155, 160, 161, 166, 167)

# Lattice-system indices (used by constraints.py).
TRICLINIC, MONOCLINIC, ORTHORHOMBIC, TETRAGONAL, RHOMBOHEDRAL, HEXAGONAL, CUBIC = range(7)


@struct.dataclass
class SpaceGroupTables:
    """All per-group arrays as ``jnp`` arrays, indexed by international number (row 0 = unused dummy)."""

    rotations: jnp.ndarray  # [231, 192, 3, 3] float32: rotation parts (exact integers); padding = identity
    translations: jnp.ndarray  # [231, 192, 3] float32: translation parts in [0, 1); padding = 0
    op_mask: jnp.ndarray  # [231, 192] bool: real operation
    op_product: jnp.ndarray  # [231, 192, 192] int16: index of g_i o g_j (g_j first); padding entries hold i
    repeat_bits: jnp.ndarray  # [231, 192, 6] uint32: row s, bit k set iff op_product[k, s] < k (real ops)
    n_ops: jnp.ndarray  # [231] int32: number of operations (group order in the conventional cell)
    crystal_system: jnp.ndarray  # [231] int32: index into CRYSTAL_SYSTEMS
    lattice_system: jnp.ndarray  # [231] int32: index into LATTICE_SYSTEMS (R groups 4, P trigonal 5)
    crystal_lattice_system: jnp.ndarray  # [231] int32: index into CRYSTAL_LATTICE_SYSTEMS (Crystal-GFN)
    crystal_family: jnp.ndarray  # [231] int32: index into CRYSTAL_FAMILIES
    point_group: jnp.ndarray  # [231] int32: index into POINT_GROUPS
    point_symmetry: jnp.ndarray  # [231] int32: index into POINT_SYMMETRIES (Crystal-GFN)
    centrosymmetric: jnp.ndarray  # [231] bool: inversion (-1) is in the point group
    enantiomorphic: jnp.ndarray  # [231] bool: chiral: every rotation is proper (det +1)
    polar: jnp.ndarray  # [231] bool: some direction is fixed by every rotation
    n_wyckoff: jnp.ndarray  # [231] int32: number of Wyckoff positions
    wyckoff_mult: jnp.ndarray  # [231, 27] int32: multiplicity in the conventional cell; 0 padding
    wyckoff_dof: jnp.ndarray  # [231, 27] int32: free parameters (0 = fixed point, occupiable once)
    wyckoff_mask: jnp.ndarray  # [231, 27] bool: real Wyckoff position
    wyckoff_rep: jnp.ndarray  # [231, 27, 3, 4] float32: affine map (x, y, z, 1) -> first site; 0 padding


_JAX_FIELDS = tuple(f for f in SpaceGroupTables.__dataclass_fields__)


@functools.lru_cache(maxsize=1)
def host_tables() -> Mapping[str, np.ndarray]:
    """Read-only mapping of the raw numpy tables (numeric and string arrays), loaded once.

    Besides the :class:`SpaceGroupTables` fields it holds ``symbol`` (short Hermann-Mauguin), ``full_symbol``,
    ``setting`` (pymatgen's universal H-M of the stored operations), ``centring``,
    ``wyckoff_letter [231, 27]`` and the class-name lists.
    """
    if not TABLES_PATH.exists():
        raise FileNotFoundError(
            f"space-group tables not found at {TABLES_PATH}: run `python -m hgfn_jax.crystal.tables.generate`"
        )
    with np.load(TABLES_PATH, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    for arr in arrays.values():
        arr.setflags(write=False)
    return MappingProxyType(arrays)


@functools.lru_cache(maxsize=1)
def get_tables() -> SpaceGroupTables:
    """The tables as a :class:`SpaceGroupTables` of ``jnp`` arrays (loaded once, then cached)."""
    host = host_tables()
    # Concrete device arrays even when first called while tracing (the cache must never hold tracers).
    with jax.ensure_compile_time_eval():
        return SpaceGroupTables(**{k: jnp.asarray(host[k]) for k in _JAX_FIELDS})


def validate_spacegroup(n) -> int:
    """``n`` as a Python int if it is an integer in 1..230, else ``ValueError`` naming the value.

    Accepts Python/numpy integers and concrete 0-d integer arrays; rejects bools, floats and traced values
    (use the jitted functions' documented flags inside ``jit``).
    """
    if isinstance(n, jax.core.Tracer):
        raise ValueError(
            "space group must be a concrete integer in 1..230, got a traced value (validate outside jit)"
        )
    if isinstance(n, (np.ndarray, jax.Array)):
        if n.ndim != 0 or not np.issubdtype(n.dtype, np.integer):
            raise ValueError(
                f"space group must be an integer in 1..230, got array of shape {n.shape} dtype {n.dtype}"
            )
        n = int(n)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise ValueError(f"space group must be an integer in 1..230, got {n!r}")
    if not 1 <= int(n) <= N_SPACEGROUPS:
        raise ValueError(f"space group must be an integer in 1..230, got {int(n)}")
    return int(n)


def symbol(n) -> str:
    """Short Hermann-Mauguin symbol of group ``n`` (spglib style, e.g. ``"P2_1/c"``, ``"Fd-3m"``)."""
    return str(host_tables()["symbol"][validate_spacegroup(n)])


def wyckoff_letters(n) -> tuple[str, ...]:
    """Wyckoff letters of group ``n`` in table order (general position first)."""
    n = validate_spacegroup(n)
    host = host_tables()
    return tuple(str(x) for x in host["wyckoff_letter"][n, : host["n_wyckoff"][n]])


def operations(n) -> tuple[np.ndarray, np.ndarray]:
    """Host-side (rotations [K,3,3] float64, translations [K,3] float64) of group ``n``, padding removed."""
    n = validate_spacegroup(n)
    host = host_tables()
    k = int(host["n_ops"][n])
    return host["rotations"][n, :k].astype(np.float64), host["translations"][n, :k].astype(np.float64)


def spacegroups_where(**labels: int) -> np.ndarray:
    """Sorted international numbers whose labels equal the given values.

    E.g. ``spacegroups_where(point_symmetry=1, crystal_lattice_system=7)``; keys: any ``[231]`` label or flag.
    """
    host = host_tables()
    keep = np.ones(N_SPACEGROUPS + 1, bool)
    keep[0] = False
    for key, value in labels.items():
        if key not in _JAX_FIELDS or host[key].shape != (N_SPACEGROUPS + 1,):
            raise ValueError(f"unknown per-group label {key!r}")
        keep &= host[key] == value
    return np.nonzero(keep)[0]
