"""Space-group tables: regeneration, operations vs spglib's database, class labels, Wyckoff data, symbols.

References are independent of the generator wherever possible: spglib's Hall-symbol database for the
operations, pymatgen's PointGroup operations (Cartesian) for the point-symmetry flags, literature counts (92
centrosymmetric, 65 Sohncke, 68 polar space groups; 1731 Wyckoff positions), ITA anchors for a few Wyckoff
positions, and paper 001's anchor for Crystal-GFN's classes.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.crystal import spacegroup as sgm
from hgfn_jax.crystal.tables import generate

NUMBERS = np.arange(1, 231)


@pytest.fixture(scope="module")
def host():
    return sgm.host_tables()


@pytest.fixture(scope="module")
def spglib_default_ops():
    """{n: (rotations, translations)} from spglib's database in its default (first) Hall setting of each
    group."""
    import spglib

    first_hall = {}
    for hall in range(1, 531):
        num = spglib.get_spacegroup_type(hall).number
        first_hall.setdefault(num, hall)
    out = {}
    for n in NUMBERS:
        sym = spglib.get_symmetry_from_database(first_hall[int(n)])
        out[int(n)] = (
            np.asarray(sym["rotations"], float),
            np.mod(np.asarray(sym["translations"], float), 1.0),
        )
    return out


def _op_keys(rot: np.ndarray, trans: np.ndarray) -> set[tuple]:
    t = np.mod(np.rint(np.asarray(trans) * 24), 24).astype(int)
    return {(tuple(np.rint(r).astype(int).ravel()), tuple(tt)) for r, tt in zip(rot, t, strict=True)}


def test_tables_regenerate_exactly(host):
    built = generate.build_tables()
    assert set(built) == set(host), f"keys differ: {set(built) ^ set(host)}"
    for key, arr in built.items():
        shipped = host[key]
        assert shipped.dtype == arr.dtype and shipped.shape == arr.shape, key
        assert np.array_equal(shipped, arr), f"{key} differs from a fresh generation"


def test_operations_match_spglib_database(host, spglib_default_ops):
    for n in NUMBERS:
        k = host["n_ops"][n]
        rot, trans = host["rotations"][n, :k], host["translations"][n, :k]
        ref_rot, ref_trans = spglib_default_ops[int(n)]
        assert k == len(ref_rot), f"group {n}: {k} ops vs spglib {len(ref_rot)}"
        assert _op_keys(rot, trans) == _op_keys(ref_rot, ref_trans), f"group {n}: operation sets differ"


def test_operation_layout_and_padding(host):
    rot, trans, mask, n_ops = host["rotations"], host["translations"], host["op_mask"], host["n_ops"]
    assert rot.shape == (231, 192, 3, 3) and rot.dtype == np.float32
    assert n_ops.max() == 192 and n_ops[225] == 192 and n_ops[1] == 1 and n_ops[0] == 0
    assert not mask[0].any()
    assert np.array_equal(mask.sum(axis=1), n_ops)
    assert np.all(rot == np.rint(rot)), "rotations must be exact integers"
    assert np.all((trans >= 0) & (trans < 1))
    pad = ~mask
    assert np.all(rot[pad] == np.eye(3, dtype=np.float32)), "padding must be the identity, not zeros"
    assert np.all(trans[pad] == 0)
    assert np.all(rot[1:, 0] == np.eye(3)) and np.all(trans[1:, 0] == 0), "op 0 must be the identity"
    dets = np.rint(np.linalg.det(rot[mask].astype(np.float64)))
    assert set(np.unique(dets)) <= {-1.0, 1.0}


def test_product_table_and_repeat_bits(host):
    rot, trans, prod = host["rotations"], host["translations"], host["op_product"]
    for n in (2, 14, 68, 166, 194, 227, 230):
        k = host["n_ops"][n]
        r, t = rot[n, :k].astype(np.float64), trans[n, :k].astype(np.float64)
        comp_r = np.einsum("iab,jbc->ijac", r, r)
        comp_t = np.mod(np.einsum("iab,jb->ija", r, t) + t[:, None], 1.0)
        idx = prod[n, :k, :k].astype(int)
        assert np.all(r[idx] == comp_r)
        d = t[idx] - comp_t
        assert np.all(np.abs(d - np.rint(d)) < 1e-6)
        assert np.all(np.sort(idx, axis=1) == np.arange(k)), "each row of a group table is a permutation"
        # Padding behaves as the identity (lowest index 0): pad o g_j = g_j, g_i o pad = g_i, pad o pad = 0.
        if k < 192:
            assert np.all(prod[n, k:, :k] == np.arange(k)) and np.all(
                prod[n, :k, k:] == np.arange(k)[:, None]
            )
            assert np.all(prod[n, k:, k:] == 0)
    bits = host["repeat_bits"]
    kk = np.arange(192)
    unpacked = (bits[:, :, kk // 32] >> (kk % 32).astype(np.uint32)) & 1  # [n, s, k]
    expected = prod < kk[None, :, None]
    assert np.array_equal(unpacked.astype(bool), expected.transpose(0, 2, 1))


def test_crystal_and_lattice_systems(host):
    from pyxtal.symmetry import Group

    cs_names = [str(x) for x in host["crystal_system_names"]]
    assert tuple(cs_names) == sgm.CRYSTAL_SYSTEMS
    for n in NUMBERS:
        g = Group(int(n), quick=True)
        assert sgm.CRYSTAL_SYSTEMS[host["crystal_system"][n]] == g.lattice_type, n
        is_r = str(host["symbol"][n]).startswith("R")
        assert is_r == (n in sgm.RHOMBOHEDRAL_SPACEGROUPS)
        ls = sgm.LATTICE_SYSTEMS[host["lattice_system"][n]]
        cls = sgm.CRYSTAL_LATTICE_SYSTEMS[host["crystal_lattice_system"][n]]
        fam = sgm.CRYSTAL_FAMILIES[host["crystal_family"][n]]
        if g.lattice_type == "trigonal":
            assert ls == ("rhombohedral" if is_r else "hexagonal")
            assert cls == ("trigonal-rhombohedral" if is_r else "trigonal-hexagonal")
            assert fam == "hexagonal"
        elif g.lattice_type == "hexagonal":
            assert (ls, cls, fam) == ("hexagonal", "hexagonal-hexagonal", "hexagonal")
        else:
            assert ls == cls == fam == g.lattice_type
    counts = np.bincount(host["crystal_lattice_system"][1:], minlength=8)
    assert counts.tolist() == [2, 13, 59, 68, 7, 18, 27, 36]


def _pg_flags(symbol: str) -> tuple[bool, bool, bool]:
    from pymatgen.symmetry.groups import PointGroup

    ops = np.array([op.rotation_matrix for op in PointGroup(symbol).symmetry_ops])
    centro = bool(np.any(np.all(np.isclose(ops, -np.eye(3)), axis=(1, 2))))
    chiral = bool(np.all(np.isclose(np.linalg.det(ops), 1.0)))
    # Polar: a non-zero vector fixed by every operation (Cartesian), via the null space of stacked (R - I).
    sv = np.linalg.svd((ops - np.eye(3)).reshape(-1, 3), compute_uv=False)
    polar = bool(sv[-1] < 1e-8)
    return centro, chiral, polar


def test_point_groups_and_point_symmetry(host):
    from pyxtal.symmetry import Group

    symbols = [str(x) for x in host["point_group_symbols"]]
    assert tuple(symbols) == sgm.POINT_GROUPS and len(set(symbols)) == 32
    ref_flags = {s: _pg_flags(s) for s in symbols}
    alias = {"-62m": "-6m2", "-4m2": "-42m", "312": "32", "321": "32", "3m1": "3m", "31m": "3m"}
    for n in NUMBERS:
        pg = symbols[host["point_group"][n]]
        pyx = Group(int(n), quick=True)
        assert alias.get(pyx.point_group, pyx.point_group) == pg, n
        centro, chiral, polar = ref_flags[pg]
        assert bool(host["centrosymmetric"][n]) == centro == bool(pyx.inversion), n
        assert bool(host["enantiomorphic"][n]) == chiral == bool(pyx.chiral), n
        assert bool(host["polar"][n]) == polar == bool(pyx.polar), n
        expected = (
            0 if centro else 4 if (chiral and polar) else 2 if chiral else 3 if polar else 1
        )  # Crystal-GFN's five classes
        assert host["point_symmetry"][n] == expected, n
    # Literature counts: 92 centrosymmetric, 65 Sohncke (chiral), 68 polar space groups.
    assert host["centrosymmetric"][1:].sum() == 92
    assert host["enantiomorphic"][1:].sum() == 65
    assert host["polar"][1:].sum() == 68


def test_paper_anchor_non_centrosymmetric():
    """Paper 001: choosing 'non-centrosymmetric' leaves 3 crystal-lattice systems and 25 space groups."""
    host = sgm.host_tables()
    groups = sgm.spacegroups_where(point_symmetry=sgm.POINT_SYMMETRIES.index("non-centrosymmetric"))
    assert len(groups) == 25
    systems = {sgm.CRYSTAL_LATTICE_SYSTEMS[i] for i in host["crystal_lattice_system"][groups]}
    assert systems == {"tetragonal", "hexagonal-hexagonal", "cubic"}
    counts = [len(sgm.spacegroups_where(point_symmetry=i)) for i in range(5)]
    assert counts == [92, 25, 45, 48, 20] and sum(counts) == 230


def test_wyckoff_positions(host):
    from pyxtal.symmetry import Group

    assert host["n_wyckoff"][1:].sum() == 1731  # total number of Wyckoff positions in ITA volume A
    assert host["n_wyckoff"].max() == 27 and host["n_wyckoff"][47] == 27
    rng = np.random.default_rng(0)
    for n in NUMBERS:
        nw = host["n_wyckoff"][n]
        g = Group(int(n), style="spglib")
        assert nw == len(g.Wyckoff_positions)
        assert np.array_equal(host["wyckoff_mask"][n], np.arange(27) < nw)
        mult, dof, rep = (
            host["wyckoff_mult"][n, :nw],
            host["wyckoff_dof"][n, :nw],
            host["wyckoff_rep"][n, :nw],
        )
        assert [str(x) for x in host["wyckoff_letter"][n, :nw]] == [wp.letter for wp in g.Wyckoff_positions]
        assert mult.tolist() == [wp.multiplicity for wp in g.Wyckoff_positions]
        assert mult[0] == host["n_ops"][n] and dof[0] == 3, "index 0 must be the general position"
        assert np.all(host["n_ops"][n] % mult == 0)
        assert np.all(host["wyckoff_mult"][n, nw:] == 0) and np.all(host["wyckoff_rep"][n, nw:] == 0)
        k = host["n_ops"][n]
        rot, trans = host["rotations"][n, :k].astype(float), host["translations"][n, :k].astype(float)
        for w in range(nw):
            assert np.linalg.matrix_rank(rep[w, :, :3]) == dof[w]
            point = rep[w, :, :3].astype(float) @ rng.uniform(0.05, 0.95, 3) + rep[w, :, 3]
            img = np.mod(np.einsum("kij,j->ki", rot, point) + trans, 1.0)
            d = img[:, None] - img[None]
            close = np.abs(d - np.rint(d)).sum(-1) < 1e-5
            n_distinct = len({tuple(np.flatnonzero(row)) for row in close})
            assert n_distinct == mult[w], (
                f"group {n} {host['wyckoff_letter'][n, w]}: orbit {n_distinct} != {mult[w]}"
            )


def _orbit_contains(n: int, letter: str, point) -> bool:
    host = sgm.host_tables()
    w = [str(x) for x in host["wyckoff_letter"][n]].index(letter)
    rep = host["wyckoff_rep"][n, w].astype(float)
    k = host["n_ops"][n]
    free = np.array([0.123, 0.234, 0.345])
    base = rep[:, :3] @ free + rep[:, 3]
    img = np.mod(np.einsum("kij,j->ki", host["rotations"][n, :k], base) + host["translations"][n, :k], 1.0)
    d = img - np.asarray(point, float)
    return bool(np.any(np.abs(d - np.rint(d)).sum(-1) < 1e-5))


def test_wyckoff_setting_anchors():
    """ITA (origin choice 1, hexagonal R axes, unique axis b) positions of a few well-known sites."""
    host = sgm.host_tables()
    # Fd-3m origin choice 1: 8a at 0,0,0 (diamond), 8b at 1/2,1/2,1/2, 16c at 1/8,1/8,1/8, 16d at 5/8,5/8,5/8.
    assert _orbit_contains(227, "a", [0, 0, 0]) and _orbit_contains(227, "a", [0.25, 0.25, 0.25])
    assert _orbit_contains(227, "b", [0.5, 0.5, 0.5]) and not _orbit_contains(227, "a", [0.5, 0.5, 0.5])
    assert _orbit_contains(227, "c", [0.125, 0.125, 0.125]) and _orbit_contains(
        227, "d", [0.625, 0.625, 0.625]
    )
    # Fm-3m: 4a 0,0,0; 4b 1/2,1/2,1/2; 8c 1/4,1/4,1/4.
    assert _orbit_contains(225, "a", [0, 0, 0]) and _orbit_contains(225, "b", [0.5, 0.5, 0.5])
    assert _orbit_contains(225, "c", [0.25, 0.25, 0.25])
    # R-3m (hexagonal axes): 3a 0,0,0; 3b 0,0,1/2; 9e 1/2,0,0.
    assert _orbit_contains(166, "a", [0, 0, 0]) and _orbit_contains(166, "b", [0, 0, 0.5])
    assert _orbit_contains(166, "e", [0.5, 0, 0])
    mult = dict(zip([str(x) for x in host["wyckoff_letter"][166]], host["wyckoff_mult"][166], strict=True))
    assert (mult["a"], mult["b"], mult["e"], mult["h"]) == (3, 3, 9, 18)
    # P2_1/c (unique axis b): 2a at 0,0,0 and the 2-fold screw along b: (-x, y+1/2, -z+1/2).
    assert _orbit_contains(14, "a", [0, 0, 0]) and _orbit_contains(14, "a", [0, 0.5, 0.5])


def test_symbols_and_validation():
    assert sgm.symbol(14) == "P2_1/c" and sgm.symbol(225) == "Fm-3m" and sgm.symbol(166) == "R-3m"
    assert sgm.symbol(np.int64(227)) == "Fd-3m" and sgm.symbol(1) == "P1"
    host = sgm.host_tables()
    assert str(host["setting"][227]) == "Fd-3m:1" and str(host["setting"][166]) == "R-3m:H"
    assert {str(c) for c in host["centring"][1:]} == {"P", "A", "C", "F", "I", "R"}
    assert sgm.wyckoff_letters(221)[-2:] == ("b", "a")
    rot, trans = sgm.operations(2)
    assert rot.shape == (2, 3, 3) and np.array_equal(rot[1], -np.eye(3))
    for bad, text in [
        (0, "got 0"),
        (231, "got 231"),
        (-3, "got -3"),
        (5.0, "got 5.0"),
        (True, "got True"),
        ("12", "got '12'"),
        (np.array([1, 2]), "shape (2,)"),
    ]:
        with pytest.raises(ValueError, match="space group must be an integer in 1..230") as err:
            sgm.validate_spacegroup(bad)
        assert text in str(err.value)
    assert str(pytest.raises(ValueError, sgm.validate_spacegroup, 0).value) == (
        "space group must be an integer in 1..230, got 0"
    )
    assert sgm.validate_spacegroup(np.int32(12)) == 12 and sgm.validate_spacegroup(jnp.asarray(3)) == 3
    with pytest.raises(ValueError, match="unknown per-group label"):
        sgm.spacegroups_where(wyckoff_mult=1)


def test_get_tables_types():
    tables = sgm.get_tables()
    assert tables is sgm.get_tables(), "tables must be cached"
    assert isinstance(tables.rotations, jnp.ndarray) and tables.rotations.dtype == jnp.float32
    assert tables.rotations.shape == (231, 192, 3, 3) and tables.translations.shape == (231, 192, 3)
    assert tables.op_mask.dtype == jnp.bool_ and tables.wyckoff_rep.shape == (231, 27, 3, 4)
    assert tables.point_symmetry.dtype == jnp.int32 and tables.repeat_bits.shape == (231, 192, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        host = sgm.host_tables()
        with pytest.raises(ValueError):
            host["n_ops"][1] = 5  # read-only
