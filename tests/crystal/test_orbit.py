"""Orbit expansion against pymatgen's ``Structure.from_spacegroup`` on all 230 groups, plus flags and
invariants.

Reference atoms: for every group, two random general positions and one atom on EACH special Wyckoff position
(placed with pyxtal's Wyckoff data in spglib's setting = pymatgen's, random free parameters), on a random
lattice allowed by the group. Our expansion runs as one jit over groups; pymatgen builds each cell
independently.
"""

from __future__ import annotations

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.crystal import constraints, orbit
from hgfn_jax.crystal import spacegroup as sgm
from hgfn_jax.crystal.orbit import (
    OrbitExpansion,
    expand_orbits,
    expand_orbits_checked,
    expand_orbits_full,
    periodic_l1,
    wrap_frac,
)

A_MAX = 29  # 27 Wyckoff positions (Pmmm) + 2 general atoms
N_CHUNKS = 4
TOL = 1e-5  # same tolerance as pymatgen's default


@pytest.fixture(scope="module")
def references():
    """Per group: reference frac [A_MAX, 3] float64 (exact special coordinates; cast to float32 for us),
    species, mask, lattice params [6], Wyckoff multiplicities."""
    from pyxtal.symmetry import Group

    rng = np.random.default_rng(20240521)
    frac = np.zeros((230, A_MAX, 3), np.float64)
    species = np.zeros((230, A_MAX), np.int32)
    mask = np.zeros((230, A_MAX), bool)
    lattice = np.zeros((230, 6), np.float32)
    mults = []
    for i, n in enumerate(range(1, 231)):
        wps = Group(n, style="spglib").Wyckoff_positions
        sites = [wps[0], wps[0], *wps[1:]]  # two general atoms, then every special position
        for j, wp in enumerate(sites):
            frac[i, j] = np.mod(wp.ops[0].operate(rng.uniform(0.0, 1.0, 3)), 1.0)
        species[i, : len(sites)] = np.arange(1, len(sites) + 1)
        mask[i, : len(sites)] = True
        mults.append([wp.multiplicity for wp in sites])
        raw = np.r_[rng.uniform(3.0, 9.0, 3), rng.uniform(75.0, 105.0, 3)]
        lattice[i] = np.asarray(constraints.apply_spacegroup_constraints(raw, n))
    return frac, species, mask, lattice, mults


@pytest.fixture(scope="module")
def expanded(references):
    """Our expansion of every group, one jit over all 230 (vmapped over the space group)."""
    frac, species, mask, lattice, mults = references
    n_max = max(sum(m) for m in mults)
    fn = jax.jit(jax.vmap(lambda f, s, m, g, lat: expand_orbits_full(f, s, m, g, n_max, TOL, lat)))
    out = fn(frac.astype(np.float32), species, mask, jnp.arange(1, 231, dtype=jnp.int32), lattice)
    return jax.tree.map(np.asarray, out)


def _match_multisets(ours_frac, ours_sp, ref_frac, ref_sp, tol: float = 1e-4) -> str | None:
    """None if both site lists are the same multiset (periodic tolerance, species respected), else a
    reason."""
    if len(ours_frac) != len(ref_frac):
        return f"{len(ours_frac)} sites vs pymatgen {len(ref_frac)}"
    for z in np.union1d(ours_sp, ref_sp):
        a, b = ours_frac[ours_sp == z], ref_frac[ref_sp == z]
        if len(a) != len(b):
            return f"species {z}: {len(a)} sites vs pymatgen {len(b)}"
        d = a[:, None, :] - b[None, :, :]
        d = np.abs(d - np.rint(d)).sum(-1)
        # Sites of one orbit are distinct, so nearest matches both ways + equal counts = a bijection.
        if not (np.all(d.min(1) < tol) and np.all(d.min(0) < tol)):
            return (
                f"species {z}: sites differ (max nearest distance {max(d.min(1).max(), d.min(0).max()):.2e})"
            )
        if len(np.unique(d.argmin(1))) != len(a):
            return f"species {z}: sites are not a one-to-one match"
    return None


@pytest.mark.parametrize("chunk", range(N_CHUNKS))
def test_matches_pymatgen_from_spacegroup_all_groups(chunk, references, expanded):
    from pymatgen.core import Lattice, Structure

    frac, species, mask, lattice, mults = references
    failures = []
    for n in range(1 + chunk, 231, N_CHUNKS):
        i = n - 1
        real = mask[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = Structure.from_spacegroup(
                n,
                Lattice.from_parameters(*lattice[i].astype(float)),
                [int(z) for z in species[i, real]],
                frac[i, real],  # float64: pymatgen's non-periodic merge needs exact special coordinates
                tol=TOL,
            )
        site_mask = expanded.crystal.mask[i]
        problem = _match_multisets(
            expanded.crystal.frac[i, site_mask],
            expanded.crystal.species[i, site_mask],
            ref.frac_coords,
            np.array(ref.atomic_numbers),
        )
        orbit = expanded.orbit_size[i, : real.sum()].tolist()
        if orbit != mults[i]:
            problem = (problem or "") + f" orbit sizes {orbit} != Wyckoff multiplicities {mults[i]}"
        if expanded.crystal.overflow[i] or expanded.invalid[i] or expanded.crystal.spacegroup[i] != n:
            problem = (problem or "") + " unexpected flags"
        if problem:
            failures.append(f"group {n}: {problem}")
    assert not failures, "\n".join(failures)


def test_output_invariants(references, expanded):
    frac, species, mask, lattice, _ = references
    cr = expanded.crystal
    assert cr.frac.dtype == np.float32 and cr.species.dtype == np.int32
    assert np.all((cr.frac >= 0) & (cr.frac < 1))
    assert np.array_equal(cr.lattice, lattice), "lattice must be passed through unchanged"
    assert np.array_equal(cr.mask.sum(1), expanded.num_sites)
    # Compacted: real sites first, padding zeros.
    assert np.all(np.diff(cr.mask.astype(int), axis=1) <= 0)
    assert np.all(cr.frac[~cr.mask] == 0) and np.all(cr.species[~cr.mask] == 0)
    assert np.all(expanded.ref_index[~cr.mask] == -1) and np.all(expanded.op_index[~cr.mask] == -1)
    # Provenance: each site is op_index applied to reference atom ref_index (independent numpy evaluation).
    host = sgm.host_tables()
    for i in (0, 13, 166, 226, 229):
        m = cr.mask[i]
        ref, op = expanded.ref_index[i, m], expanded.op_index[i, m]
        rot, trans = host["rotations"][i + 1, op], host["translations"][i + 1, op]
        expect = np.mod(
            np.einsum("sij,sj->si", rot.astype(float), frac[i, ref].astype(np.float32)) + trans, 1.0
        )
        d = cr.frac[i, m] - expect
        assert np.all(np.abs(d - np.rint(d)) < 1e-5)
        assert np.array_equal(cr.species[i, m], species[i, ref])
        # Sites are ordered by (reference atom, operation index).
        key = ref * 192 + op
        assert np.all(np.diff(key) > 0)


A_SMALL, N_SMALL = 4, 80  # one compiled shape shared by the single-structure tests (and the checked wrapper)


def _run(frac, species, mask, spacegroup, tol: float = orbit.DEFAULT_TOL) -> OrbitExpansion:
    """expand_orbits_full on one structure padded to A_SMALL reference atoms, n_max = N_SMALL (jit, one
    shape)."""
    frac, species, mask = np.asarray(frac, np.float32), np.asarray(species), np.asarray(mask, bool)
    pad = A_SMALL - len(frac)
    frac = np.concatenate([frac, np.zeros((pad, 3), np.float32)])
    species = np.concatenate([species, np.zeros(pad, species.dtype)]).astype(np.int32)
    mask = np.concatenate([mask, np.zeros(pad, bool)])
    return jax.tree.map(np.asarray, orbit._expand_jit(frac, species, mask, spacegroup, N_SMALL, tol, None))


def _reference_orbit(n: int, point: np.ndarray, tol: float = 1e-5) -> np.ndarray:
    """Distinct images of ``point`` in operation order (first occurrence kept), plain numpy."""
    host = sgm.host_tables()
    k = host["n_ops"][n]
    rot, trans = host["rotations"][n, :k].astype(float), host["translations"][n, :k].astype(float)
    kept: list[np.ndarray] = []
    for img in np.mod(np.einsum("kij,j->ki", rot, point) + trans, 1.0):
        if not any(np.abs((img - q) - np.rint(img - q)).sum() < tol for q in kept):
            kept.append(img)
    return np.array(kept)


def test_padded_ops_never_move_atoms(rng):
    """Padding ops are identities: applied without the mask they only repeat real images, never the origin."""
    host = sgm.host_tables()
    x = np.asarray(jax.random.uniform(rng(), (3, 3)))
    for n in (1, 2, 47, 166, 221):
        images = np.mod(np.einsum("kij,j->ki", host["rotations"][n], x[0]) + host["translations"][n], 1.0)
        real = images[: host["n_ops"][n]]
        d = images[:, None] - real[None]
        assert np.all(np.abs(d - np.rint(d)).sum(-1).min(1) < 1e-6), f"group {n}: a padded op moved the atom"
    # A consumer that ignores op_mask (all True) in the expansion still gets the same cell.
    tables = sgm.get_tables()
    careless = tables.replace(op_mask=jnp.ones_like(tables.op_mask))
    fn = jax.jit(
        lambda t, g: expand_orbits_full(
            x, jnp.array([8, 26, 3]), jnp.array([1, 1, 0], bool), g, 200, tables=t
        )
    )
    for n in (1, 2, 47, 166, 221):
        good, bad = fn(tables, n), fn(careless, n)
        assert int(good.num_sites) == int(bad.num_sites), n
        assert np.array_equal(np.asarray(good.crystal.frac), np.asarray(bad.crystal.frac)), n
    # And no site is ever sent to the origin by padding: P1 gives exactly the reference atoms.
    out = _run(x, [8, 26, 3], [1, 1, 0], 1)
    assert np.allclose(out.crystal.frac[:2], x[:2], atol=1e-7)
    assert out.crystal.mask.tolist() == [True, True] + [False] * (N_SMALL - 2)


def test_special_positions_and_periodic_merge():
    # Pm-3m: 1a at the origin -> 1 site; 3c (0, 1/2, 1/2) -> 3 sites; general -> 48.
    out = _run([[0.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.1, 0.2, 0.3]], [1, 2, 3], [1, 1, 1], 221)
    assert out.orbit_size.tolist() == [1, 3, 48, 0] and int(out.num_sites) == 52
    # A point just below 1: its inversion image wraps to just above 0; periodic merge -> special position 1
    # site.
    out = _run([[0.5, 0.5, 1.0 - 2e-6]], [8], [1], 2)
    assert int(out.num_sites) == 1 and np.all(out.crystal.frac[0] < 1.0)
    # Coordinates outside [0, 1) are wrapped before expansion.
    out2 = _run([[1.1, -0.8, 2.3]], [8], [1], 2)
    ref = _run([[0.1, 0.2, 0.3]], [8], [1], 2)
    assert np.allclose(out2.crystal.frac, ref.crystal.frac, atol=1e-6)


def test_coinciding_atoms_of_different_references_are_kept():
    out = _run([[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]], [8, 8], [1, 1], 14)
    assert int(out.num_sites) == 8 and out.orbit_size.tolist() == [4, 4, 0, 0]
    f = out.crystal.frac[:8]
    assert np.allclose(f[:4], f[4:]), "both copies must be present (an overlap the reward has to see)"


def test_overflow_flag_and_first_sites():
    x = np.array([[0.11, 0.22, 0.33], [0.0, 0.0, 0.0]])
    out = _run(x, [8, 26], [1, 1], 229)  # Im-3m: 96 + 2 sites, n_max = 80
    assert bool(out.crystal.overflow) and int(out.num_sites) == 98 and out.orbit_size.tolist()[:2] == [96, 2]
    assert bool(out.crystal.mask.all()) and np.all(out.ref_index == 0) and np.all(np.diff(out.op_index) > 0)
    # The slots hold the first 80 sites of the full cell in (reference, operation) order.
    expected = _reference_orbit(229, x[0].astype(np.float32).astype(float))[:N_SMALL]
    d = out.crystal.frac - expected
    assert np.all(np.abs(d - np.rint(d)).sum(-1) < 1e-5)
    with pytest.raises(ValueError, match=r"^cell has 96 sites, n_max=80$"):
        expand_orbits_checked(x[:1], [8], [True], 229, 80)


def test_invalid_inputs_flagged_inside_jit():
    x = [[0.1, 0.2, 0.3], [np.nan, 0.0, 0.0], [0.25, 0.5, 0.75]]
    out = _run(x, [8, 26, 3], [1, 1, 0], 14)
    assert bool(out.invalid) and out.orbit_size.tolist() == [4, 0, 0, 0]
    assert int(out.num_sites) == 4 and np.all(np.isfinite(out.crystal.frac))
    # NaN in a padded (masked) reference atom is not an error.
    out = _run(x, [8, 26, 3], [1, 0, 0], 14)
    assert not bool(out.invalid) and int(out.num_sites) == 4
    for bad_sg in (0, 231, -5):
        out = _run(x[:1], [8], [1], bad_sg)
        assert bool(out.invalid) and int(out.num_sites) == 0 and int(out.crystal.spacegroup) == 0
        assert not bool(out.crystal.mask.any())


def test_checked_wrapper_errors():
    x, sp, m = np.zeros((A_SMALL, 3)), np.full(A_SMALL, 8), np.zeros(A_SMALL, bool)
    x[0], m[0] = [0.1, 0.2, 0.3], True
    cr = expand_orbits_checked(x, sp, m, 14, N_SMALL)
    assert int(cr.num_sites) == 4 and np.all(np.asarray(cr.lattice) == 0)
    cr = expand_orbits_checked(x, sp, m, 14, N_SMALL, lattice=[3.0, 4.0, 5.0, 90.0, 100.0, 90.0])
    assert np.allclose(np.asarray(cr.lattice), [3, 4, 5, 90, 100, 90])
    nan_x = x.copy()
    nan_x[0, 0] = np.nan
    cases = [
        ((x, sp, m, 0, 8), "space group must be an integer in 1..230, got 0"),
        ((x, sp, m, 231, 8), "space group must be an integer in 1..230, got 231"),
        ((nan_x, sp, m, 14, 8), r"non-finite fractional coordinates .*\[0\]"),
        ((x, np.zeros(A_SMALL, int), m, 14, 8), "atomic numbers must be in 1..118"),
        ((x[0], sp, m, 14, 8), r"frac_ref must have shape \[A, 3\]"),
        ((x, sp, m.astype(int), 14, 8), "mask_ref must be boolean"),
        ((x, sp, m, 14, 0), "n_max must be a positive integer"),
    ]
    for args, msg in cases:
        with pytest.raises(ValueError, match=msg):
            expand_orbits_checked(*args)
    with pytest.raises(ValueError, match="lattice must be 6 finite numbers"):
        expand_orbits_checked(x, sp, m, 14, 8, lattice=[1.0, 2.0])
    with pytest.raises(ValueError, match="tol must be in"):
        expand_orbits_checked(x, sp, m, 14, 8, tol=0.0)
    with pytest.raises(ValueError, match="smaller values split exact special positions"):
        expand_orbits_checked(x, sp, m, 14, 8, tol=1e-7)


def test_no_retrace_across_batches_and_no_nans(rng, debug_nans):
    n_max = 64

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched(frac, species, mask, sg):
        return jax.vmap(lambda f, s, m, g: expand_orbits(f, s, m, g, n_max))(frac, species, mask, sg)

    for _ in range(3):
        key_f, key_g = jax.random.split(rng())
        frac = jax.random.uniform(key_f, (16, 4, 3))
        sg = jax.random.randint(key_g, (16,), 1, 231)
        out = batched(frac, jnp.full((16, 4), 8), jnp.ones((16, 4), bool), sg)
        assert out.frac.shape == (16, n_max, 3) and np.all(np.isfinite(np.asarray(out.frac)))
    chex.clear_trace_counter()


def test_helpers():
    x = jnp.array([-1e-9, 0.0, 0.999999999, 1.0, 2.25, -0.25])
    w = np.asarray(wrap_frac(x))
    assert np.all((w >= 0) & (w < 1)) and np.isclose(w[4], 0.25) and np.isclose(w[5], 0.75)
    assert np.isclose(float(periodic_l1(jnp.array([0.99, -0.98, 0.5]))), 0.01 + 0.02 + 0.5)
