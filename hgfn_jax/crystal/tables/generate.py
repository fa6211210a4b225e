"""Builds ``spacegroups.npz``: symmetry operations, classes and Wyckoff positions of the 230 space groups.

Run ``python -m hgfn_jax.crystal.tables.generate`` (or ``make tables``). Needs pymatgen, pyxtal and spglib
(all pinned); the runtime package only reads the shipped npz.

Setting. The operations are EXACTLY those of ``pymatgen.symmetry.groups.SpaceGroup.from_int_number(n)``, i.e.
the ones ``Structure.from_spacegroup(n, ...)`` applies: conventional cell, centring translations included,
unique axis b for monoclinic groups, hexagonal axes for the seven R groups, and ORIGIN CHOICE 1 for the 24
groups with two origins (48, 50, 59, 68, 70, 85, 86, 88, 125, 126, 129, 130, 133, 134, 137, 138, 141, 142,
201, 203, 222, 224, 227, 228). This is spglib's default Hall setting, so Wyckoff positions are taken from
``pyxtal.symmetry.Group(n, style="spglib")``; the generator checks that pyxtal's general position equals the
pymatgen operation set and that every Wyckoff representative has an orbit of exactly its multiplicity under
the pymatgen operations.

Array layout (row 0 of every ``[231, ...]`` array is a dummy: never use it, validate numbers instead):

- ``rotations [231,192,3,3] float32`` (exact integers) and ``translations [231,192,3] float32`` in [0, 1): the
  affine operations x -> R x + t on fractional coordinates, padded to 192 with the IDENTITY (never zeros) and
  masked by ``op_mask [231,192] bool``; ``n_ops [231] int32``. Op 0 is always the identity; the rest are
  sorted (rotation, translation) lexicographically, so the file is deterministic. Row 0: identity everywhere,
  no valid op.
- ``op_product [231,192,192] int16``: the lowest index holding the composition g_i o g_j (apply g_j, then
  g_i; translations mod 1), over the PADDED list, whose padding is the identity (lowest index 0). So padding
  behaves as the identity everywhere: P[pad, j] = j, P[i, pad] = i (i real), P[pad, pad] = 0.
  ``repeat_bits [231,192,6] uint32``: bit k (word k // 32, bit k % 32) of row s is set iff
  op_product[n, k, s] < k: if g_s fixes a point, its image under g_k repeats an earlier one (orbit merging).
  Padding ops k are repeats through the identity (s = 0), so even a consumer that ignores ``op_mask`` in the
  merge gets no extra sites from them.
- class labels ``[231] int32`` (names in ``*_names``): ``crystal_system`` (7), ``lattice_system`` (7; the R
  groups are rhombohedral, the P trigonal groups hexagonal), ``crystal_lattice_system`` (8, Crystal-GFN),
  ``crystal_family`` (6), ``point_group`` (index into ``point_group_symbols [32]``), ``point_symmetry`` (5,
  Crystal-GFN); flags ``centrosymmetric``, ``enantiomorphic`` (chiral: all rotations proper), ``polar`` (a
  vector fixed by every rotation exists) derived from the operations.
- Wyckoff positions, in pyxtal's order (index 0 = general position, then decreasing multiplicity, i.e. reverse
  letter order), padded to ``W = 27``: ``wyckoff_mult, wyckoff_dof [231,W] int32``, ``wyckoff_mask [231,W]
  bool``, ``wyckoff_letter [231,W] <U1`` ("" padding), ``wyckoff_rep [231,W,3,4] float32``: the first
  coordinate triplet as an affine map of the free parameters (x, y, z): position = rep[:, :3] @ (x, y, z) +
  rep[:, 3]; padding rows are zero. ``n_wyckoff [231] int32``.
- symbols ``[231] <U..``: ``symbol`` (short Hermann-Mauguin, spglib style, e.g. "P2_1/c"), ``full_symbol``
  (pymatgen), ``setting`` (pymatgen's universal H-M of the stored ops, e.g. "Fd-3m:1", "R-3m:H"),
  ``centring`` (lattice letter P, A, C, F, I, R).
"""

from __future__ import annotations

import argparse
import re
import time
import warnings
from pathlib import Path

import numpy as np

# Class names and sizes are defined once, in the module that serves the tables.
from hgfn_jax.crystal.spacegroup import CRYSTAL_FAMILIES as CRYSTAL_FAMILY_NAMES
from hgfn_jax.crystal.spacegroup import CRYSTAL_LATTICE_SYSTEMS as CRYSTAL_LATTICE_SYSTEM_NAMES
from hgfn_jax.crystal.spacegroup import CRYSTAL_SYSTEMS as CRYSTAL_SYSTEM_NAMES
from hgfn_jax.crystal.spacegroup import LATTICE_SYSTEMS as LATTICE_SYSTEM_NAMES
from hgfn_jax.crystal.spacegroup import MAX_OPS, MAX_WYCKOFF
from hgfn_jax.crystal.spacegroup import N_SPACEGROUPS as N_GROUPS
from hgfn_jax.crystal.spacegroup import POINT_SYMMETRIES as POINT_SYMMETRY_NAMES
from hgfn_jax.crystal.spacegroup import RHOMBOHEDRAL_SPACEGROUPS as RHOMBOHEDRAL_GROUPS
from hgfn_jax.crystal.tables import TABLES_PATH  # noqa: E402

# First group number of each crystal system (triclinic .. cubic).
_SYSTEM_STARTS = (1, 3, 16, 75, 143, 168, 195)
_TOL = 1e-6


def crystal_system_of(n: int) -> int:
    """Crystal system index (0 triclinic .. 6 cubic) from the international number ranges."""
    return int(np.searchsorted(_SYSTEM_STARTS, n, side="right") - 1)


def _pymatgen_ops(n: int) -> tuple[np.ndarray, np.ndarray, str, str, str, str]:
    """(rotations [K,3,3], translations [K,3], setting, symbol, full_symbol, point group) of pymatgen's ``n``.

    Mirrors the lookup of ``SpaceGroup.from_int_number(n)`` / ``SpaceGroup.__init__`` (first ``SYMM_OPS``
    entry whose symbol matches) but parses the operation strings directly: pymatgen's own constructor puts
    them in a set whose hash is constant (quadratic time). The tests check the result against
    ``Structure.from_spacegroup`` on every group. Cmme (67) is not in ``SYMM_OPS``; pymatgen builds it from
    generators, and so do we (through pymatgen itself).
    """
    from pymatgen.core.operations import SymmOp
    from pymatgen.symmetry.groups import SpaceGroup, sg_symbol_from_int_number

    int_symbol = sg_symbol_from_int_number(n, hexagonal=True)
    if int_symbol.endswith("H") and not int_symbol.endswith(":H"):
        int_symbol = int_symbol[:-1] + ":H"
    int_symbol = re.sub(r" ", "", int_symbol)
    if int_symbol in SpaceGroup.abbrev_sg_mapping:
        int_symbol = SpaceGroup.abbrev_sg_mapping[int_symbol]
    elif int_symbol in SpaceGroup.full_sg_mapping:
        int_symbol = SpaceGroup.full_sg_mapping[int_symbol]
    entry = next(
        (
            e
            for e in SpaceGroup.SYMM_OPS
            if int_symbol in (e["hermann_mauguin"], e["universal_h_m"], e["hermann_mauguin_u"])
        ),
        None,
    )
    if entry is not None:
        if entry["number"] != n:
            raise RuntimeError(f"space group {n}: pymatgen symbol lookup returned group {entry['number']}")
        mats = np.array([SymmOp.from_xyz_str(op).affine_matrix for op in entry["symops"]], dtype=np.float64)
        setting, symbol = entry["universal_h_m"], entry["hermann_mauguin_u"]
        enc = SpaceGroup.sg_encoding.get(int_symbol) or SpaceGroup.sg_encoding.get(symbol)
        if enc:
            full, point_group = enc["full_symbol"], enc["point_group"]
        else:
            full, point_group = symbol, entry["point_group"]
    else:
        sg = SpaceGroup.from_int_number(n)
        mats = np.array([op.affine_matrix for op in sg.symmetry_ops], dtype=np.float64)
        setting = symbol = sg.symbol
        full, point_group = sg.full_symbol, sg.point_group
    rot = np.rint(mats[:, :3, :3])
    if not np.allclose(rot, mats[:, :3, :3], atol=_TOL):
        raise RuntimeError(f"space group {n}: non-integer rotation in pymatgen's operations")
    trans = np.mod(np.round(mats[:, :3, 3], 10), 1.0)
    trans[np.abs(trans - 1.0) < _TOL] = 0.0
    if len(np.unique(np.concatenate([rot.reshape(-1, 9), np.rint(trans * 24)], axis=1), axis=0)) != len(rot):
        raise RuntimeError(f"space group {n}: duplicate operations")
    return rot, trans, setting, symbol, full, point_group


def _sort_ops(rot: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Identity first, then lexicographic (rotation, translation) order: deterministic."""
    ident = np.all(rot.reshape(-1, 9) == np.eye(3).reshape(9), axis=1) & np.all(np.abs(trans) < _TOL, axis=1)
    if ident.sum() != 1:
        raise RuntimeError("operation set must contain the identity exactly once")
    keys = [
        (
            0 if ident[i] else 1,
            tuple(rot[i].reshape(9).astype(int)),
            tuple(np.round(trans[i] * 24).astype(int)),
        )
        for i in range(len(rot))
    ]
    order = sorted(range(len(rot)), key=lambda i: keys[i])
    return rot[order], trans[order]


def _same_op_sets(rot_a, trans_a, rot_b, trans_b) -> bool:
    if len(rot_a) != len(rot_b):
        return False
    for r, t in zip(rot_a, trans_a, strict=True):
        d = trans_b - t
        d = np.abs(d - np.rint(d)).sum(axis=1)
        if not np.any(np.all(rot_b == r, axis=(1, 2)) & (d < _TOL)):
            return False
    return True


def _op_codes(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Integer key of each operation: rotation entries (-1..1, base 3) and translations in 1/24 (mod 1)."""
    tq = np.rint(np.asarray(trans) * 24).astype(np.int64) % 24
    rc = ((np.rint(rot).astype(np.int64).reshape(*rot.shape[:-2], 9) + 1) * 3 ** np.arange(9)).sum(-1)
    return (rc * 24 + tq[..., 0]) * 576 + tq[..., 1] * 24 + tq[..., 2]


def product_table(rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """``[K, K] int``: ``P[i, j]`` = lowest index of g_i o g_j (x -> R_i (R_j x + t_j) + t_i, mod 1).

    Repeated operations (the identity padding) are allowed; products map to their first occurrence.
    """
    if not np.allclose(trans * 24, np.rint(trans * 24), atol=1e-6) or np.abs(rot).max() > 1:
        raise RuntimeError("operations outside the 1/24 translation grid or with rotation entries beyond +-1")
    codes = _op_codes(rot, trans)
    order = np.argsort(codes, kind="stable")  # equal codes: lowest index first
    sorted_codes = codes[order]
    prod_rot = np.einsum("iab,jbc->ijac", rot, rot)
    prod_trans = np.einsum("iab,jb->ija", rot, trans) + trans[:, None, :]
    prod_codes = _op_codes(prod_rot, np.mod(prod_trans, 1.0))
    pos = np.minimum(np.searchsorted(sorted_codes, prod_codes), len(codes) - 1)
    if not np.array_equal(sorted_codes[pos], prod_codes):
        raise RuntimeError("operation set is not closed under composition")
    return order[pos]


def orbit_size(rot: np.ndarray, trans: np.ndarray, p: np.ndarray, tol: float = 1e-4) -> int:
    """Number of distinct images of point ``p`` (periodic L1 distance < tol); numpy reference for checks."""
    img = np.mod(np.einsum("kij,j->ki", rot, p) + trans, 1.0)
    d = img[:, None, :] - img[None, :, :]
    close = np.abs(d - np.rint(d)).sum(axis=-1) < tol  # [K, K]
    # An image is new unless it coincides with an earlier one (the group makes "close" an equivalence).
    return int(np.sum(~np.any(np.tril(close, k=-1), axis=1)))


def _flags(rot: np.ndarray) -> tuple[bool, bool, bool]:
    """(centrosymmetric, enantiomorphic, polar) from the rotation parts of the operations."""
    centro = bool(np.any(np.all(rot == -np.eye(3), axis=(1, 2))))
    chiral = bool(np.all(np.rint(np.linalg.det(rot)) == 1))
    # Polar: the fixed spaces of all rotations share a non-zero vector <=> stacked (R - I) has a null space.
    stacked = (rot - np.eye(3)).reshape(-1, 3)
    polar = bool(np.linalg.matrix_rank(stacked) < 3)
    return centro, chiral, polar


def point_symmetry_of(centro: bool, chiral: bool, polar: bool) -> int:
    """Crystal-GFN point-symmetry class: 0 centro, 1 non-centro (none), 2 enantiomorphic, 3 polar, 4 both."""
    if centro:
        return 0
    if chiral and polar:
        return 4
    if chiral:
        return 2
    if polar:
        return 3
    return 1


def _wyckoff(n: int, rot: np.ndarray, trans: np.ndarray) -> list[tuple[str, int, int, np.ndarray]]:
    """[(letter, multiplicity, dof, rep [3,4])] from pyxtal in spglib's (= pymatgen's) setting, checked."""
    from pyxtal.symmetry import Group

    g = Group(n, style="spglib")
    general = np.array([op.affine_matrix for op in g.Wyckoff_positions[0].ops], dtype=np.float64)
    g_rot = np.rint(general[:, :3, :3])
    g_trans = np.mod(general[:, :3, 3], 1.0)
    if not _same_op_sets(g_rot, g_trans, rot, trans):
        raise RuntimeError(f"space group {n}: pyxtal's general position differs from pymatgen's operations")
    rng = np.random.default_rng(n)
    out = []
    for wp in g.Wyckoff_positions:
        rep = np.array(wp.ops[0].affine_matrix, dtype=np.float64)[:3, :4].copy()
        rep[:, 3] = np.mod(rep[:, 3], 1.0)
        dof = int(wp.get_dof())
        if dof != np.linalg.matrix_rank(rep[:, :3]):
            raise RuntimeError(f"space group {n} {wp.letter}: dof {dof} != rank of the representative")
        free = rng.uniform(0.05, 0.95, size=3)
        point = rep[:, :3] @ free + rep[:, 3]
        if orbit_size(rot, trans, point) != wp.multiplicity:
            raise RuntimeError(f"space group {n} {wp.letter}: orbit size differs from multiplicity")
        out.append((str(wp.letter), int(wp.multiplicity), dof, rep))
    return out


def build_tables() -> dict[str, np.ndarray]:
    """All arrays of ``spacegroups.npz`` (see the module docstring), built in memory."""
    import spglib
    from pyxtal.symmetry import spglib_hall_numbers

    rows = N_GROUPS + 1
    rotations = np.tile(np.eye(3, dtype=np.float32), (rows, MAX_OPS, 1, 1))
    translations = np.zeros((rows, MAX_OPS, 3), np.float32)
    op_mask = np.zeros((rows, MAX_OPS), bool)
    op_product = np.zeros((rows, MAX_OPS, MAX_OPS), np.int16)
    n_ops = np.zeros(rows, np.int32)
    ints = {
        k: np.zeros(rows, np.int32)
        for k in (
            "crystal_system",
            "lattice_system",
            "crystal_lattice_system",
            "crystal_family",
            "point_group",
            "point_symmetry",
            "n_wyckoff",
        )
    }
    flags = {k: np.zeros(rows, bool) for k in ("centrosymmetric", "enantiomorphic", "polar")}
    w_mult = np.zeros((rows, MAX_WYCKOFF), np.int32)
    w_dof = np.zeros((rows, MAX_WYCKOFF), np.int32)
    w_mask = np.zeros((rows, MAX_WYCKOFF), bool)
    w_letter = np.full((rows, MAX_WYCKOFF), "", dtype="<U1")
    w_rep = np.zeros((rows, MAX_WYCKOFF, 3, 4), np.float32)
    symbols = {k: [""] * rows for k in ("symbol", "full_symbol", "setting", "centring")}
    pg_symbols: list[str] = []

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in range(1, rows):
            rot, trans, setting, pmg_symbol, full, pg_symbol = _pymatgen_ops(n)
            rot, trans = _sort_ops(rot, trans)
            k = len(rot)
            if k > MAX_OPS:
                raise RuntimeError(f"space group {n} has {k} operations > {MAX_OPS}")
            rotations[n, :k] = rot
            translations[n, :k] = trans
            op_mask[n, :k] = True
            op_product[n] = product_table(rotations[n].astype(np.float64), translations[n].astype(np.float64))
            n_ops[n] = k

            spg_type = spglib.get_spacegroup_type(spglib_hall_numbers[n - 1])
            if spg_type.number != n:
                raise RuntimeError(f"spglib hall number table mismatch for group {n}")
            if pg_symbol not in pg_symbols:  # first-appearance order = the usual order of the 32 classes
                pg_symbols.append(pg_symbol)
            ints["point_group"][n] = pg_symbols.index(pg_symbol)

            cs = crystal_system_of(n)
            ls = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4 if n in RHOMBOHEDRAL_GROUPS else 5, 5: 5, 6: 6}[cs]
            cls = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4 if n in RHOMBOHEDRAL_GROUPS else 5, 5: 6, 6: 7}[cs]
            fam = {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 4, 6: 5}[cs]
            ints["crystal_system"][n] = cs
            ints["lattice_system"][n] = ls
            ints["crystal_lattice_system"][n] = cls
            ints["crystal_family"][n] = fam
            centro, chiral, polar = _flags(rot)
            flags["centrosymmetric"][n] = centro
            flags["enantiomorphic"][n] = chiral
            flags["polar"][n] = polar
            ints["point_symmetry"][n] = point_symmetry_of(centro, chiral, polar)

            wyck = _wyckoff(n, rot, trans)
            if len(wyck) > MAX_WYCKOFF:
                raise RuntimeError(f"space group {n} has {len(wyck)} Wyckoff positions > {MAX_WYCKOFF}")
            if wyck[0][1] != k:
                raise RuntimeError(f"space group {n}: general multiplicity {wyck[0][1]} != {k} operations")
            for i, (letter, mult, dof, rep) in enumerate(wyck):
                w_letter[n, i] = letter
                w_mult[n, i] = mult
                w_dof[n, i] = dof
                w_mask[n, i] = True
                w_rep[n, i] = rep
            ints["n_wyckoff"][n] = len(wyck)

            symbols["symbol"][n] = spg_type.international_short
            symbols["full_symbol"][n] = full
            symbols["setting"][n] = setting
            symbols["centring"][n] = pmg_symbol[0]
            if not re.match(r"^[PABCFIR]", pmg_symbol):
                raise RuntimeError(f"space group {n}: unexpected symbol {pmg_symbol!r}")

    # repeat_bits[n, s]: bit k set iff g_k o g_s has a lower index than k (used by orbit merging).
    lower = op_product < np.arange(MAX_OPS)[None, :, None]  # [n, k, s]
    weights = np.uint64(1) << np.arange(32, dtype=np.uint64)
    words = lower.transpose(0, 2, 1).reshape(rows, MAX_OPS, MAX_OPS // 32, 32).astype(np.uint64)
    repeat_bits = (words * weights).sum(-1).astype(np.uint32)  # [n, s, 6]

    if len(pg_symbols) != 32:
        raise RuntimeError(f"expected 32 point groups, found {len(pg_symbols)}")
    out: dict[str, np.ndarray] = {
        "rotations": rotations,
        "translations": translations,
        "op_mask": op_mask,
        "op_product": op_product,
        "repeat_bits": repeat_bits,
        "n_ops": n_ops,
        **ints,
        **flags,
        "wyckoff_mult": w_mult,
        "wyckoff_dof": w_dof,
        "wyckoff_mask": w_mask,
        "wyckoff_letter": w_letter,
        "wyckoff_rep": w_rep,
        "point_group_symbols": np.array(pg_symbols),
        "crystal_system_names": np.array(CRYSTAL_SYSTEM_NAMES),
        "lattice_system_names": np.array(LATTICE_SYSTEM_NAMES),
        "crystal_lattice_system_names": np.array(CRYSTAL_LATTICE_SYSTEM_NAMES),
        "crystal_family_names": np.array(CRYSTAL_FAMILY_NAMES),
        "point_symmetry_names": np.array(POINT_SYMMETRY_NAMES),
    }
    for key, values in symbols.items():
        out[key] = np.array(values)
    return out


def write_tables(path: Path = TABLES_PATH) -> Path:
    """Builds the tables and writes them compressed to ``path``."""
    tables = build_tables()
    np.savez_compressed(path, **tables)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TABLES_PATH, help="output npz path")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    path = write_tables(args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
