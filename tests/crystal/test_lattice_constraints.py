"""Lattice constraints against pymatgen's lattice constructors and spglib's symmetry finder.

- pymatgen ``Lattice.cubic/tetragonal/orthorhombic/monoclinic/hexagonal/rhombohedral`` give the same matrices
  as ``Lattice.from_parameters`` of our constrained parameters;
- for every one of the 230 groups, a random constrained lattice plus a general-position orbit (3 atoms) is
  recognised by ``SpacegroupAnalyzer(symprec=1e-3)`` as exactly that group;
- the monoclinic setting of paper 000 (gamma free) breaks the symmetry of pymatgen's unique-axis-b operations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.crystal import constraints as C
from hgfn_jax.crystal import spacegroup as sgm
from hgfn_jax.crystal.orbit import expand_orbits_full


def _random_params(rng: np.random.Generator) -> np.ndarray:
    return np.r_[rng.uniform(3.0, 9.0, 3), rng.uniform(70.0, 110.0, 3)].astype(np.float32)


def _matrix(params) -> np.ndarray:
    from pymatgen.core import Lattice

    return Lattice.from_parameters(*np.asarray(params, float)).matrix


def test_tables_and_counts():
    assert C.FREE_MASK.shape == C.FIXED_MASK.shape == C.FIXED_VALUE.shape == C.TIE_INDEX.shape == (7, 6)
    tied = ~C.FREE_MASK & ~C.FIXED_MASK
    assert not np.any(C.FREE_MASK & C.FIXED_MASK)
    assert np.all(C.TIE_INDEX[~tied] == np.arange(6)[None].repeat(7, 0)[~tied]), (
        "free/fixed tie to themselves"
    )
    rows, cols = np.nonzero(tied)
    assert np.all(C.FREE_MASK[rows, C.TIE_INDEX[rows, cols]]), "a tied parameter copies a free one"
    assert np.all(np.isin(C.FIXED_VALUE[C.FIXED_MASK], [90.0, 120.0]))
    # Free parameters per lattice system (triclinic .. cubic); rhombohedral defaults to hexagonal axes.
    assert [int(C.num_free(ls)) for ls in range(7)] == [6, 4, 3, 2, 2, 2, 1]
    assert int(C.num_free(sgm.RHOMBOHEDRAL, rhombohedral_axes=True)) == 2
    assert C.free_mask(sgm.MONOCLINIC).tolist() == [True, True, True, False, True, False]  # beta free
    assert C.free_mask(sgm.RHOMBOHEDRAL, True).tolist() == [True, False, False, True, False, False]
    assert C.free_mask(sgm.RHOMBOHEDRAL).tolist() == C.free_mask(sgm.HEXAGONAL).tolist()


def test_match_pymatgen_lattice_constructors():
    from pymatgen.core import Lattice

    rng = np.random.default_rng(7)
    for _ in range(5):
        p = _random_params(rng)
        a, b, c, _, beta, _ = (float(v) for v in p)
        alpha = float(p[3])
        cases = {
            (sgm.TRICLINIC, False): Lattice.from_parameters(*p.astype(float)).matrix,
            (sgm.MONOCLINIC, False): Lattice.monoclinic(a, b, c, beta).matrix,
            (sgm.ORTHORHOMBIC, False): Lattice.orthorhombic(a, b, c).matrix,
            (sgm.TETRAGONAL, False): Lattice.tetragonal(a, c).matrix,
            (sgm.RHOMBOHEDRAL, False): Lattice.hexagonal(a, c).matrix,
            (sgm.RHOMBOHEDRAL, True): Lattice.rhombohedral(a, alpha).matrix,
            (sgm.HEXAGONAL, False): Lattice.hexagonal(a, c).matrix,
            (sgm.CUBIC, False): Lattice.cubic(a).matrix,
        }
        for (ls, rh_axes), expected in cases.items():
            got = _matrix(C.apply_constraints(p, ls, rh_axes))
            np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=f"lattice system {ls}, rh {rh_axes}")


def test_every_group_recognised_by_spglib():
    """Constrained lattice + 3 general atoms -> SpacegroupAnalyzer finds exactly the group (never lower).

    tol=1e-5: with the default 1e-3, a random point within ~1e-3 of a mirror plane is (by design) merged onto
    the plane.
    """
    from pymatgen.core import Lattice, Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    rng = np.random.default_rng(11)
    groups = np.arange(1, 231, dtype=np.int32)
    raw = np.stack([_random_params(rng) for _ in groups])
    frac = rng.uniform(0.0, 1.0, (230, 3, 3)).astype(np.float32)
    params = jax.jit(jax.vmap(C.apply_spacegroup_constraints))(raw, groups)
    expand = jax.jit(
        jax.vmap(lambda f, g: expand_orbits_full(f, jnp.array([8, 26, 3]), jnp.ones(3, bool), g, 576, 1e-5))
    )
    out = jax.tree.map(np.asarray, expand(frac, groups))
    params = np.asarray(params)
    order = {name: i for i, name in enumerate(sgm.CRYSTAL_SYSTEMS)}
    wrong = []
    for i, n in enumerate(groups):
        m = out.crystal.mask[i]
        assert (
            not out.crystal.overflow[i] and out.orbit_size[i].tolist() == [sgm.host_tables()["n_ops"][n]] * 3
        )
        st = Structure(
            Lattice.from_parameters(*params[i].astype(float)),
            out.crystal.species[i, m],
            out.crystal.frac[i, m],
        )
        sga = SpacegroupAnalyzer(st, symprec=1e-3)
        found = sga.get_space_group_number()
        expected_system = sgm.CRYSTAL_SYSTEMS[sgm.host_tables()["crystal_system"][n]]
        assert order[sga.get_crystal_system()] >= order[expected_system], f"group {n}: lower crystal system"
        if found != n:
            wrong.append((int(n), found))
    assert not wrong, f"(group, found) pairs: {wrong}"


def test_paper_monoclinic_setting_breaks_unique_axis_b_symmetry():
    """With gamma free (paper 000, unique axis c) pymatgen's P2_1/c operations are no symmetry of the cell."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    rng = np.random.default_rng(3)
    rot, trans = sgm.operations(14)
    frac = rng.uniform(0.0, 1.0, (3, 3))
    sites = np.mod(np.einsum("kij,aj->aki", rot, frac) + trans, 1.0).reshape(-1, 3)  # 3 general orbits of 4
    species = np.repeat([8, 26, 3], len(rot))
    ours = Structure(
        Lattice.from_parameters(
            *np.asarray(C.apply_constraints([4.0, 5.0, 6.0, 90.0, 104.0, 90.0], sgm.MONOCLINIC), float)
        ),
        species,
        sites,
    )
    paper = Structure(Lattice.from_parameters(4.0, 5.0, 6.0, 90.0, 90.0, 104.0), species, sites)
    assert SpacegroupAnalyzer(ours, symprec=1e-3).get_space_group_number() == 14
    assert SpacegroupAnalyzer(paper, symprec=1e-3).get_space_group_number() != 14


def _expected_projection(p: np.ndarray, ls: int, rh_axes: bool) -> np.ndarray:
    """Closed-form least-squares projections, written out per lattice system."""
    a, b, c, al, be, ga = p
    if ls == sgm.TRICLINIC:
        return p
    if ls == sgm.MONOCLINIC:
        return np.array([a, b, c, 90, be, 90])
    if ls == sgm.ORTHORHOMBIC:
        return np.array([a, b, c, 90, 90, 90])
    if ls == sgm.TETRAGONAL:
        return np.array([(a + b) / 2, (a + b) / 2, c, 90, 90, 90])
    if ls == sgm.HEXAGONAL or (ls == sgm.RHOMBOHEDRAL and not rh_axes):
        return np.array([(a + b) / 2, (a + b) / 2, c, 90, 90, 120])
    if ls == sgm.RHOMBOHEDRAL:
        s, t = (a + b + c) / 3, (al + be + ga) / 3
        return np.array([s, s, s, t, t, t])
    s = (a + b + c) / 3
    return np.array([s, s, s, 90, 90, 90])


def test_project_and_apply_are_consistent_and_jittable():
    rng = np.random.default_rng(5)
    jit_apply = jax.jit(C.apply_constraints)
    jit_project = jax.jit(C.project)
    for _ in range(2):
        p = _random_params(rng)
        for ls in range(7):
            for rh_axes in (False, True):
                proj = np.asarray(C.project(p, ls, rh_axes))
                np.testing.assert_allclose(
                    proj, _expected_projection(p.astype(float), ls, rh_axes), rtol=1e-6
                )
                # The projection is allowed (apply_constraints leaves it unchanged) and idempotent.
                np.testing.assert_allclose(
                    np.asarray(C.apply_constraints(proj, ls, rh_axes)), proj, rtol=1e-6
                )
                np.testing.assert_allclose(np.asarray(C.project(proj, ls, rh_axes)), proj, rtol=1e-6)
                applied = np.asarray(C.apply_constraints(p, ls, rh_axes))
                free = np.asarray(C.free_mask(ls, rh_axes))
                assert np.array_equal(applied[free], p[free]), "free parameters are kept"
                # Traced lattice system / axes choice give the same values as the concrete path.
                np.testing.assert_array_equal(np.asarray(jit_apply(p, ls, rh_axes)), applied)
                np.testing.assert_allclose(np.asarray(jit_project(p, ls, rh_axes)), proj, rtol=1e-6)
    batched = jax.vmap(C.apply_spacegroup_constraints, in_axes=(None, 0))(
        p, jnp.array([1, 12, 62, 139, 166, 191])
    )
    assert np.asarray(batched)[:, 5].tolist() == pytest.approx([p[5], 90, 90, 90, 120, 120])


def test_bad_inputs():
    p = np.ones(6, np.float32)
    for bad in (7, -1, 2.0, True):
        with pytest.raises(ValueError, match="lattice system must be an integer in 0..6"):
            C.apply_constraints(p, bad)
    with pytest.raises(ValueError, match="space group must be an integer in 1..230, got 0"):
        C.apply_spacegroup_constraints(p, 0)
    assert (
        int(C.lattice_system_of(166)) == sgm.RHOMBOHEDRAL and int(C.lattice_system_of(150)) == sgm.HEXAGONAL
    )
