"""PGCGM data: masked affine expansion vs pymatgen for the 20 groups, element table, augmentation, split."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from hgfn_jax.crystal import spacegroup as sgm
from hgfn_jax.data import pgcgm


def _lattice(sg: int) -> Lattice:
    system = sgm.CRYSTAL_SYSTEMS[int(sgm.host_tables()["crystal_system"][sg])]
    if system == "cubic":
        return Lattice.cubic(5.0)
    if system in ("trigonal", "hexagonal"):
        return Lattice.hexagonal(4.0, 6.5)
    if system == "tetragonal":
        return Lattice.tetragonal(4.2, 7.1)
    return Lattice.orthorhombic(4.1, 5.3, 7.7)


def _sites_equal(a: list[tuple[str, np.ndarray]], b: Structure, tol: float = 1e-4) -> bool:
    if len(a) != len(b):
        return False
    fb = np.mod(b.frac_coords, 1.0)
    sb = [s.specie.symbol for s in b]
    used = np.zeros(len(b), bool)
    for sym, f in a:
        d = f[None] - fb
        d = np.max(np.abs(d - np.round(d)), axis=1)
        hit = np.flatnonzero((d < tol) & ~used & (np.asarray(sb) == sym))
        if hit.size == 0:
            return False
        used[hit[0]] = True
    return True


def _positions(sg: int, rng) -> np.ndarray:
    """Three sites: a generic point, a point of the most special position with free parameters (if any), and a
    fixed special position (last Wyckoff position: no free parameter)."""
    host = sgm.host_tables()
    n_w = int(host["n_wyckoff"][sg])
    rep, dof = host["wyckoff_rep"][sg, :n_w], host["wyckoff_dof"][sg, :n_w]
    generic = rng.uniform(0.05, 0.95, 3)
    free = [w for w in range(1, n_w) if 0 < dof[w] < 3]
    w1 = free[-1] if free else 0
    special = rep[w1] @ np.append(rng.uniform(0.05, 0.45, 3), 1.0)
    fixed = rep[n_w - 1] @ np.array([0.0, 0.0, 0.0, 1.0])
    return np.stack([generic, special, fixed])


@pytest.mark.parametrize("sg", pgcgm.PGCGM_SPACEGROUPS)
def test_masked_affine_expansion_equals_pymatgen(sg):
    o, mask = pgcgm.affine_tables((sg,))
    assert o.shape == (1, 192, 4, 4) and mask.shape == (1, 192)
    assert mask[0].sum() == sgm.host_tables()["n_ops"][sg]
    assert np.all(o[0][~mask[0]] == 0.0)  # padding is zero AND masked
    rng = np.random.default_rng(sg)
    pos = _positions(sg, rng)
    species = ["Li", "Fe", "O"]
    ours = [(s, img) for s, p in zip(species, pos, strict=True) for img in pgcgm.unique_images(o[0], mask[0], p)]
    ref = Structure.from_spacegroup(sg, _lattice(sg), species, pos.tolist())
    assert _sites_equal(ours, ref), (sg, len(ours), len(ref))
    # Without the mask, a zero-padded matrix sends the atom to the origin (what the reference code does).
    if mask[0].sum() < 192:
        img = np.einsum("kij,j->ki", o[0], np.append(pos[0], 1.0))[:, :3]
        assert np.any(np.all(img == 0.0, axis=1))


def test_element_properties_table():
    p = pgcgm.element_properties()
    assert p.shape == (104, 23) and len(pgcgm.PROPERTY_NAMES) == 23
    assert np.all(np.isfinite(p)) and p.min() >= 0.0 and p.max() <= 1.0
    assert np.all(p[0] == 0.0)
    r = pgcgm.atomic_radii()
    assert r[8] == pytest.approx(0.6) and r[26] == pytest.approx(1.4)
    assert np.all(r[1:] > 0)  # noble gases filled (He, Ne, Kr, Xe)
    noble = pgcgm.PROPERTY_NAMES.index("is_noble_gas")
    assert p[10, noble] == 1.0 and p[11, noble] == 0.0


def test_process_crystal_and_augmentation_are_symmetry_equivalent():
    """A real crystal (row of the data set): base sites expand to the refined cell; every augmented site of
    every set is an image of its element's base site; each set holds the nearest neighbours of its first atom."""
    from hgfn_jax.data.mp import load_mp

    ds = load_mp(n_max=200, n_elements=3, spacegroups=(225, 221, 194), limit=6)
    done = 0
    for i in range(len(ds)):
        m = ds.mask[i]
        status, rec = pgcgm._process((int(ds.row[i]), ds.lattice[i].astype(float), ds.frac[i][m].astype(float),
                                      ds.species[i][m], 0, 4))
        if status != "ok":
            continue
        o, mask = pgcgm.affine_tables((rec["spacegroup"],))
        for e in range(3):
            orbit = pgcgm.unique_images(o[0], mask[0], rec["base"][e])
            for f in rec["aug"][:, :, e].reshape(-1, 3):
                d = f[None] - orbit
                assert np.max(np.abs(d - np.round(d)), axis=1).min() < 1e-4
        assert np.all(np.diff(rec["elements"]) > 0)
        done += 1
    assert done >= 3


def _fake_data(m: int) -> pgcgm.PGCGMData:
    z = np.zeros
    return pgcgm.PGCGMData(row=np.arange(m, dtype=np.int32), spacegroup=np.full(m, 225, np.int32),
                           group_index=z(m, np.int32), elements=z((m, 3), np.int32), lengths=z((m, 3)),
                           base=z((m, 3, 3)), aug=z((m, 2, 3, 3, 3)), nsites=z(m, np.int32), reasons={})


def test_split_is_fixed_disjoint_80_20():
    d = _fake_data(1001)
    tr, va = pgcgm.split_pgcgm(d, seed=0)
    tr2, va2 = pgcgm.split_pgcgm(d, seed=0)
    assert len(tr) == 801 and len(va) == 200
    assert np.array_equal(tr.row, tr2.row) and np.array_equal(va.row, va2.row)
    assert not set(tr.row) & set(va.row) and len(set(tr.row) | set(va.row)) == 1001
    assert not np.array_equal(pgcgm.split_pgcgm(d, seed=1)[1].row, va.row)


def test_every_augmented_set_expands_to_the_original_crystal():
    """Self-augmentation (paper sec. "Crystal Symmetry based Self-augmentation") only re-chooses base sites
    among symmetry-equivalent positions, so EVERY stored set of every augmented triple, expanded through the
    project's jitted orbit expansion (Algorithm 1, ``gan.generate.expand``) with the crystal's refined lengths,
    must be the crystal of the data set: pymatgen StructureMatcher against the data-set structure as stored
    (independent of spglib's refinement and of our tables). One crystal of each of 8 of the 20 groups (all five
    crystal systems; Fd-3m and I4_1/amd have two origin choices), 8 triples = 24 sets each."""
    import jax
    import jax.numpy as jnp
    from pymatgen.analysis.structure_matcher import StructureMatcher

    from hgfn_jax.crystal.convert import to_structure, unstack
    from hgfn_jax.data.mp import load_mp
    from hgfn_jax.gan.generate import expand

    rows = {225: 47, 139: 184, 194: 85, 166: 648, 62: 438, 227: 8, 141: 1014, 71: 1336}  # shared data set rows
    ds = load_mp(n_max=200, rows=sorted(rows.values()))
    matcher = StructureMatcher()  # pymatgen defaults: ltol 0.2, stol 0.3, angle_tol 5
    groups, checked = set(), 0
    for i in range(len(ds)):
        m = ds.mask[i]
        status, rec = pgcgm._process((int(ds.row[i]), ds.lattice[i].astype(float), ds.frac[i][m].astype(float),
                                      ds.species[i][m], 0, 8))
        assert status == "ok", (int(ds.row[i]), status)
        sets = rec["aug"].reshape(-1, 3, 3)  # 24 sets, expanded in one batch (one compiled shape)
        b = len(sets)
        lattice = np.concatenate([rec["lengths"], pgcgm.fixed_angles(rec["spacegroup"])]).astype(np.float32)
        cells = unstack(jax.device_get(expand(
            jnp.asarray(sets), jnp.tile(jnp.asarray(rec["elements"]), (b, 1)),
            jnp.full((b,), rec["spacegroup"], jnp.int32), jnp.tile(jnp.asarray(lattice), (b, 1)))))
        _, distinct = np.unique(sets.round(4), axis=0, return_index=True)
        original = ds.get_structure(i)
        for j in distinct:
            s = to_structure(cells[j])
            assert len(s) == rec["nsites"]
            assert matcher.fit(s, original), (int(ds.row[i]), rec["spacegroup"], sets[j])
            checked += 1
        groups.add(rec["spacegroup"])
    assert groups == set(rows) and checked >= 3 * len(rows)
