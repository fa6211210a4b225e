"""The orbit merge never fuses distinct sites and always merges a special position (issue 10, item 2).

For EVERY special Wyckoff position of EVERY group (1..230; pyxtal's tables in spglib's setting = pymatgen's),
a representative ``p0`` (random free parameters) is placed:

- ``general``: (one per group, also the 13 groups without special positions) a random point -> |G|;
- ``on``: exactly on it (cast to float32)                       -> the Wyckoff multiplicity (pyxtal);
- ``1e-6``: 1e-6 off it in each fractional coordinate            -> still the Wyckoff multiplicity;
- ``frac``: 1e-4..1e-3 off it in each fractional coordinate      -> pymatgen ``Structure.from_spacegroup``;
- ``axis``: 1e-4..1e-3 off it along ONE axis (often still on a lower special position: intermediate
  multiplicities)                                                -> pymatgen;
- ``cart``: 1e-4..1e-3 Angstrom off it in a random Cartesian direction of a realistic, skewed cell (lengths
  3..8 A, free angles 70..110 degrees)                           -> pymatgen;

and the ``frac`` / ``axis`` / ``cart`` cells are also checked with spglib: the expanded sites of every group
(one species per point) must have exactly that group's symmetry (a fused orbit is no longer invariant) and each
point's sites must be ONE crystallographic orbit of spglib's (a duplicate would be flagged as an overlap).

The off-position points are drawn so that the right answer is unambiguous: every image that is not the point
itself lies >= 5e-5 (periodic L1, fractional) and >= 1e-4 A away from it (float64, pyxtal's operations), else
redrawn. Everything is expanded by ONE jit over all ~7,500 points at the module's DEFAULT tolerance; pymatgen
and spglib run once per group.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from hgfn_jax.crystal import constraints, orbit
from hgfn_jax.crystal.orbit import expand_orbits_full

NEAR = ("frac", "axis", "cart")
MIN_SEP_FRAC = 5e-5  # periodic L1: 5x pymatgen's 1e-5, so pymatgen's answer is not borderline
MIN_SEP_ANG = 1e-4
N_MAX = 192


def _periodic(d: np.ndarray) -> np.ndarray:
    return d - np.rint(d)


def _separations(ops_r, ops_t, p, matrix):
    """Periodic fractional L1 and Cartesian distances [K] from p to each of its images (float64)."""
    d = _periodic(np.einsum("kij,j->ki", ops_r, p) + ops_t - p)
    return np.abs(d).sum(-1), np.linalg.norm(d @ matrix, axis=-1)


def _unambiguous(p, ops_r, ops_t, matrix) -> bool:
    """Every image of p is either p itself (exactly, float64) or >= MIN_SEP_FRAC and >= MIN_SEP_ANG away."""
    sep_f, sep_a = _separations(ops_r, ops_t, p, matrix)
    moved = sep_f > 1e-12
    return bool(np.all((sep_f[moved] >= MIN_SEP_FRAC) & (sep_a[moved] >= MIN_SEP_ANG)))


def _draw_near(rng, kind, w, p0, ops_r, ops_t, matrix, tries: int = 50):
    """A point 1e-4..1e-3 (fractional per coordinate, along one axis, or Angstrom) off p0; None if every
    draw was ambiguous."""
    for _ in range(tries):
        if kind == "frac":
            delta = rng.choice([-1.0, 1.0], 3) * rng.uniform(1e-4, 1e-3, 3)
        elif kind == "axis":  # may stay exactly on a lower special position
            delta = np.zeros(3)
            delta[(w + rng.integers(3)) % 3] = rng.choice([-1.0, 1.0]) * rng.uniform(1e-4, 1e-3)
        else:
            v = rng.normal(size=3)
            delta = np.linalg.solve(matrix.T, v / np.linalg.norm(v) * 10 ** rng.uniform(-4.0, -3.0))
        if _unambiguous(p0 + delta, ops_r, ops_t, matrix):
            return p0 + delta
    return None


def _lattice(rng, n):
    raw = np.r_[rng.uniform(3.0, 8.0, 3), rng.uniform(70.0, 110.0, 3)]
    return np.asarray(constraints.apply_spacegroup_constraints(raw, n), np.float64)


@pytest.fixture(scope="module")
def points():
    """Flat list of test points: group, kind, float64 coordinates, lattice, expected Wyckoff multiplicity."""
    from pymatgen.core import Lattice
    from pyxtal.symmetry import Group

    rng = np.random.default_rng(20261202)
    rows = []  # (group, kind, wyckoff index, p float64 [3], expected multiplicity or -1)
    lattices = {}
    for n in range(1, 231):
        wps = Group(n, style="spglib").Wyckoff_positions
        general = wps[0].ops
        ops_r = np.array([op.rotation_matrix for op in general], np.float64)  # [K, 3, 3]
        ops_t = np.array([op.translation_vector for op in general], np.float64)  # [K, 3]
        lat = _lattice(rng, n)
        lattices[n] = lat
        matrix = Lattice.from_parameters(*lat).matrix  # rows a, b, c (pymatgen's convention)
        # every group, also those without special positions (P1, P2_1, ...): one general position
        rows.append((n, "general", 0, rng.uniform(0.0, 1.0, 3), wps[0].multiplicity))
        for w, wp in enumerate(wps[1:], start=1):
            for _ in range(20):  # p0 itself must be unambiguous: its other images >= the minimum spacing
                p0 = np.mod(wp.ops[0].operate(rng.uniform(0.0, 1.0, 3)), 1.0)
                near = [_draw_near(rng, kind, w, p0, ops_r, ops_t, matrix) for kind in NEAR]
                if _unambiguous(p0, ops_r, ops_t, matrix) and all(q is not None for q in near):
                    break
            else:
                raise AssertionError(f"group {n}: no unambiguous points drawn near position {w}")
            rows.append((n, "on", w, p0, wp.multiplicity))
            rows.append((n, "1e-6", w, p0 + 1e-6 * rng.choice([-1.0, 1.0], 3), wp.multiplicity))
            rows.extend((n, kind, w, q, -1) for kind, q in zip(NEAR, near, strict=True))
    return rows, lattices


@pytest.fixture(scope="module")
def ours(points):
    """Our expansion of every point as a one-atom structure, one jit at the DEFAULT tolerance."""
    rows, _ = points
    frac = np.array([r[3] for r in rows], np.float32)[:, None, :]  # [M, 1, 3]
    groups = np.array([r[0] for r in rows], np.int32)  # [M]
    fn = jax.jit(
        jax.vmap(lambda f, g: expand_orbits_full(f, np.array([1], np.int32), np.array([True]), g, N_MAX))
    )
    out = fn(frac, groups)
    return jax.tree.map(np.asarray, out)


@pytest.fixture(scope="module")
def pymatgen_orbits(points):
    """Per near point: pymatgen's orbit (``Structure.from_spacegroup``, default tol), one call per group."""
    from pymatgen.core import Lattice, Structure

    rows, lattices = points
    by_group: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        if r[1] in NEAR:
            by_group.setdefault(r[0], []).append(i)
    result = {}
    for n, idx in by_group.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_spacegroup(
                n,
                Lattice.from_parameters(*lattices[n]),
                list(range(1, len(idx) + 1)),  # one element per point (at most 78 points per group)
                [rows[i][3] for i in idx],
            )
        z = np.array(s.atomic_numbers)
        for j, i in enumerate(idx):
            result[i] = s.frac_coords[z == j + 1]
    return result


def _same_sites(a: np.ndarray, b: np.ndarray, tol: float = 1e-5) -> bool:
    """Equal-size site lists that match one-to-one (periodic L1 below tol; sites are >= 5e-5 apart)."""
    if len(a) != len(b):
        return False
    d = np.abs(_periodic(a[:, None, :] - b[None, :, :])).sum(-1)
    return bool(np.all(d.min(1) < tol) and len(np.unique(d.argmin(1))) == len(a))


def test_issue_case_group_57_near_mirror():
    """Pbcm, (x, y, 0.7496): 4e-4 from the mirror z = 3/4 but a general position, 8 sites (pymatgen too)."""
    from pymatgen.core import Lattice, Structure

    p = np.array([0.1234, 0.3817, 0.7496])
    ref = Structure.from_spacegroup(57, Lattice.orthorhombic(5.0, 6.0, 7.0), ["O"], [p])
    out = expand_orbits_full(p[None].astype(np.float32), np.array([8]), np.array([True]), 57, 16)
    assert len(ref) == 8 and int(out.num_sites) == 8, (len(ref), int(out.num_sites))
    assert _same_sites(np.asarray(out.crystal.frac)[:8], ref.frac_coords)


@pytest.mark.parametrize("kind", ["general", "on", "1e-6"])
def test_special_positions_merge_to_wyckoff_multiplicity(kind, points, ours):
    rows, _ = points
    bad = [
        f"group {r[0]} position {r[2]}: {ours.orbit_size[i, 0]} sites, Wyckoff multiplicity {r[4]}"
        for i, r in enumerate(rows)
        if r[1] == kind and ours.orbit_size[i, 0] != r[4]
    ]
    total = sum(r[1] == kind for r in rows)
    assert not bad, f"{len(bad)} of {total} points wrong:\n" + "\n".join(bad[:20])


@pytest.mark.parametrize("kind", NEAR)
def test_points_near_special_positions_match_pymatgen(kind, points, ours, pymatgen_orbits):
    rows, _ = points
    bad, groups = [], set()
    for i, r in enumerate(rows):
        if r[1] != kind:
            continue
        groups.add(r[0])
        k = int(ours.orbit_size[i, 0])
        ref = pymatgen_orbits[i]
        if not _same_sites(ours.crystal.frac[i, :k], ref):
            bad.append(f"group {r[0]} near position {r[2]}: {k} sites, pymatgen {len(ref)}")
    special = {r[0] for r in rows if r[1] == "on"}
    assert len(special) == 230 - 13 and groups == special, "every group with a special position is covered"
    total = sum(r[1] == kind for r in rows)
    assert not bad, f"{len(bad)} of {total} points wrong:\n" + "\n".join(bad[:20])


def test_points_near_special_positions_keep_the_symmetry_spglib(points, ours):
    """One cell per group of all its near points (one species each): spglib finds exactly the group and one
    crystallographic orbit per point (symprec 5e-5 A: above float32 rounding, below the 1e-4 A spacing)."""
    import spglib
    from pymatgen.core import Lattice

    rows, lattices = points
    bad = []
    for n in sorted({r[0] for r in rows if r[1] == "on"}):
        idx = [i for i, r in enumerate(rows) if r[0] == n and r[1] in NEAR]
        pos = np.concatenate([ours.crystal.frac[i, : ours.orbit_size[i, 0]] for i in idx]).astype(np.float64)
        owner = np.concatenate([np.full(ours.orbit_size[i, 0], j) for j, i in enumerate(idx)])
        cell = (Lattice.from_parameters(*lattices[n]).matrix, pos, owner + 1)
        ds = spglib.get_symmetry_dataset(cell, symprec=5e-5)
        if ds is None:
            bad.append(f"group {n}: spglib found no symmetry ({spglib.get_error_message()})")
            continue
        if ds.number != n:
            bad.append(f"group {n}: spglib finds group {ds.number}")
            continue
        for j in range(len(idx)):
            classes = np.unique(ds.equivalent_atoms[owner == j])
            if len(classes) != 1:
                bad.append(f"group {n}: point {j} splits into {len(classes)} spglib orbits")
    assert not bad, f"{len(bad)} groups wrong:\n" + "\n".join(bad[:20])


def test_default_tolerance_is_shared_by_the_hierarchical_env():
    from hgfn_jax.envs.hierarchical.env import HierarchicalConfig

    assert HierarchicalConfig().orbit_tol == orbit.DEFAULT_TOL
