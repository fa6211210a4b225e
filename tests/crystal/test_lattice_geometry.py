"""Lattice maths and periodic geometry against pymatgen, brute force and closed forms."""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pymatgen.core import Element, Lattice, Structure

from hgfn_jax.crystal import geometry as G
from hgfn_jax.crystal import lattice as L
from hgfn_jax.crystal.types import Crystal

N_SITES = 8
SYMBOLS = ["H", "Li", "O", "Si", "Fe", "Ba", "U", "Cs"]
K_NBR = 12
N_NBR_CELLS = 60

# One compiled function per geometry entry point, shared by the tests (same batch shapes), each guarded by
# chex.assert_max_traces: any retrace for a batch of an already-seen shape fails the test that causes it.
_DIST = jax.jit(jax.vmap(chex.assert_max_traces(G.distance_matrix, n=1)))
_MIN_DIST = jax.jit(jax.vmap(chex.assert_max_traces(G.min_distance, n=1)))
_NBRS = jax.jit(
    jax.vmap(
        chex.assert_max_traces(lambda c, cut: G.neighbor_list(c, K_NBR, cut, max_images=3), n=1), (0, None)
    )
)


def _random_params(rs: np.random.Generator, n: int) -> np.ndarray:
    """Strongly skewed valid cells: angles 50-130 deg, length ratios up to 4, V/abc >= 0.1 (pymatgen)."""
    out = []
    while len(out) < n:
        p = np.r_[2.0 * rs.uniform(1.0, 4.0, 3), rs.uniform(50.0, 130.0, 3)]
        lat = Lattice.from_parameters(*p)
        if lat.volume / np.prod(p[:3]) >= 0.1:
            out.append(p)
    return np.asarray(out)


def _sheared_params(rs: np.random.Generator, n: int) -> np.ndarray:
    """Non-reduced bases: a valid cell multiplied by a random unimodular matrix with entries up to +-2."""
    out = []
    base = _random_params(rs, 4 * n)
    i = 0
    while len(out) < n:
        u = rs.integers(-2, 3, (3, 3))
        if round(abs(np.linalg.det(u))) != 1:
            continue
        m = u @ Lattice.from_parameters(*base[i]).matrix
        i += 1
        out.append(np.asarray(Lattice(m).parameters))
    return np.asarray(out)


@pytest.fixture(scope="module")
def cells():
    rs = np.random.default_rng(7)
    params = np.concatenate([_random_params(rs, 120), _sheared_params(rs, 40)])
    # float32-representable inputs: the references see exactly the numbers the float32 code sees
    params = params.astype(np.float32).astype(np.float64)
    frac = rs.uniform(0.0, 1.0, (len(params), N_SITES, 3)).astype(np.float32).astype(np.float64)
    species = rs.integers(0, len(SYMBOLS), (len(params), N_SITES))
    return params, frac, species


def _crystal(params, frac, z, mask=None) -> Crystal:
    n = np.shape(frac)[0]
    mask = jnp.ones(n, bool) if mask is None else jnp.asarray(mask)
    return Crystal(
        lattice=jnp.asarray(params, jnp.float32),
        frac=jnp.asarray(frac, jnp.float32),
        species=jnp.where(mask, jnp.asarray(z), 0).astype(jnp.int32),
        mask=jnp.asarray(mask),
        spacegroup=jnp.int32(1),
        overflow=jnp.bool_(False),
    )


def _window(matrix: np.ndarray, bound: float) -> np.ndarray:
    """All integer vectors n with |n_i| <= bound / h_i + 1/2 (h_i = V / |a_j x a_k|): a lattice vector with
    fractional component n_i is at least |n_i| h_i long, so this window holds every translate within ``bound``
    of a point whose fractional coordinates are wrapped to [-1/2, 1/2]."""
    vol = abs(np.linalg.det(matrix))
    h = vol / np.linalg.norm(np.cross(matrix[[1, 2, 0]], matrix[[2, 0, 1]]), axis=1)
    r = np.ceil(bound / h + 0.5).astype(int)
    return np.asarray(list(itertools.product(*(range(-k, k + 1) for k in r))), np.float64)


def _brute_distances(lat: Lattice, frac: np.ndarray) -> np.ndarray:
    """Exact minimum-image distances by exhaustive search over a provably sufficient window (some image is
    within D = (|a| + |b| + |c|) / 2). Searched in pymatgen's LLL basis to keep the window small."""
    matrix = lat.lll_matrix
    f = lat.get_lll_frac_coords(frac)
    d = f[None, :, :] - f[:, None, :]
    d -= np.round(d)
    im = _window(matrix, 0.5 * np.linalg.norm(matrix, axis=1).sum())
    v = (d[:, :, None, :] + im) @ matrix
    return np.sqrt((v**2).sum(-1).min(-1))


def _brute_shortest_vector(lat: Lattice) -> float:
    matrix = lat.lll_matrix
    im = _window(matrix, np.linalg.norm(matrix, axis=1).min())
    im = im[np.any(im != 0, axis=1)]
    return float(np.sqrt(((im @ matrix) ** 2).sum(-1).min()))


# ------------------------------------------------------------------------------------------------ lattice


def test_params_matrix_agree_with_pymatgen(cells):
    params = cells[0]
    mats = np.asarray(jax.jit(jax.vmap(L.params_to_matrix))(jnp.asarray(params, jnp.float32)))
    ref = np.stack([Lattice.from_parameters(*p).matrix for p in params])
    np.testing.assert_allclose(mats, ref, atol=2e-5 * params[:, :3].max())
    # matrix -> params on arbitrary orientations (random rotations of pymatgen's matrices).
    rs = np.random.default_rng(3)
    rot = np.linalg.qr(rs.normal(size=(len(params), 3, 3)))[0]
    rotated = ref @ rot
    back = np.asarray(jax.jit(jax.vmap(L.matrix_to_params))(jnp.asarray(rotated, jnp.float32)))
    ref_params = np.stack([Lattice(m).parameters for m in rotated])
    np.testing.assert_allclose(back[:, :3], ref_params[:, :3], rtol=1e-5)
    np.testing.assert_allclose(back[:, 3:], ref_params[:, 3:], atol=2e-3)


def test_volume_and_density_agree_with_pymatgen(cells):
    params, frac, species = cells
    z = np.asarray([Element(s).Z for s in SYMBOLS])[species]
    vol = np.asarray(jax.vmap(L.volume)(jnp.asarray(params, jnp.float32)))
    mask = (
        np.arange(N_SITES)[None, :] < np.random.default_rng(0).integers(1, N_SITES + 1, len(params))[:, None]
    )
    crystals = jax.vmap(_crystal)(params, frac, z, mask)
    dens = np.asarray(jax.jit(jax.vmap(L.density))(crystals))
    for i, p in enumerate(params):
        s = Structure(
            Lattice.from_parameters(*p), [SYMBOLS[k] for k in species[i][mask[i]]], frac[i][mask[i]]
        )
        assert vol[i] == pytest.approx(s.volume, rel=1e-5)
        assert dens[i] == pytest.approx(s.density, rel=1e-5)


def test_degenerate_lattices_flagged_and_rejected():
    good = np.array([3.0, 4.0, 5.0, 80.0, 95.0, 100.0])
    bad = {
        "non-finite": [3.0, np.nan, 5.0, 90.0, 90.0, 90.0],
        "lengths must be positive": [3.0, 0.0, 5.0, 90.0, 90.0, 90.0],
        "angles must lie in": [3.0, 4.0, 5.0, 90.0, 180.0, 90.0],
        "impossible angle triple": [3.0, 4.0, 5.0, 30.0, 30.0, 90.0],
        "nearly flat": [3.0, 4.0, 5.0, 90.0, 90.0, 179.95],
    }
    assert not bool(L.is_degenerate(good))
    np.testing.assert_allclose(L.check_lattice(good), good)
    flags = jax.jit(jax.vmap(L.is_degenerate))(jnp.asarray(list(bad.values()), jnp.float32))
    assert np.all(np.asarray(flags))
    for message, p in bad.items():
        with pytest.raises(ValueError, match=f"degenerate lattice: {message}"):
            L.check_lattice(p)
    with pytest.raises(ValueError, match="shape"):
        L.check_lattice([1.0, 2.0, 3.0])


def test_lll_reduce_is_reduced_unimodular_and_matches_pymatgen(cells):
    params = cells[0]
    mats = np.stack([Lattice.from_parameters(*p).matrix for p in params]).astype(np.float32)
    red, t, ok = jax.jit(jax.vmap(L.lll_reduce_with_status))(jnp.asarray(mats))
    red, t = np.asarray(red, np.float64), np.asarray(t, np.float64)
    assert np.all(np.asarray(ok))
    np.testing.assert_array_equal(t, np.round(t))
    np.testing.assert_allclose(np.abs(np.linalg.det(t)), 1.0)
    np.testing.assert_allclose(red, t @ mats, atol=1e-4)
    for i, m in enumerate(red):
        # LLL conditions (delta = 0.75): size reduced and Lovasz, via numpy Gram-Schmidt.
        q, r = np.linalg.qr(m.T)
        diag = np.diag(r)
        mu = (r / diag[:, None]).T  # mu[i, j] = <b_i, b*_j> / |b*_j|^2 = r[j, i] / r[j, j]
        assert np.all(np.abs(mu[np.tril_indices(3, -1)]) <= 0.5 + 1e-4)
        for k in (1, 2):
            assert diag[k] ** 2 >= (0.75 - mu[k, k - 1] ** 2) * diag[k - 1] ** 2 - 1e-3
        ref = Lattice(mats[i].astype(np.float64)).get_lll_reduced_lattice()
        np.testing.assert_allclose(np.sort(np.linalg.norm(m, axis=1)), np.sort(ref.abc), rtol=1e-4)


# ------------------------------------------------------------------------------------------------ geometry


def test_distance_matrix_matches_pymatgen_and_brute_force(cells):
    params, frac, _ = cells
    d = np.asarray(_DIST(jnp.asarray(params, jnp.float32), jnp.asarray(frac, jnp.float32)))
    for i, p in enumerate(params):
        s = Structure(Lattice.from_parameters(*p), ["Si"] * N_SITES, frac[i])
        np.testing.assert_allclose(d[i], s.distance_matrix, atol=1e-4)
        np.testing.assert_allclose(d[i], _brute_distances(s.lattice, frac[i]), atol=1e-4)
        assert np.all(np.diag(d[i]) == 0.0)


def test_pair_mask_closed_form():
    mask = jnp.array([True, False, True, True])
    pm = np.asarray(G.pair_mask(mask))
    expected = np.array([[i != j and bool(mask[i]) and bool(mask[j]) for j in range(4)] for i in range(4)])
    np.testing.assert_array_equal(pm, expected)


def test_min_distance_includes_self_images_and_empty_cell(cells):
    params, frac, z = cells
    rs = np.random.default_rng(11)
    n_real = rs.integers(1, 4, len(params))  # few sites: the shortest lattice vector often wins
    # closed forms in the last 3 slots: simple cubic one site -> a = 3; fcc primitive one site ->
    # a_conv / sqrt(2) = a; empty cell -> +inf
    a = 4.0 / np.sqrt(2.0)
    params = np.concatenate(
        [params[:-3], [[3.0, 3.0, 3.0, 90, 90, 90], [a, a, a, 60, 60, 60], [3, 3, 3, 90, 90, 90]]]
    )
    n_real[-3:] = [1, 1, 0]
    mask = np.arange(N_SITES)[None, :] < n_real[:, None]
    crystals = jax.vmap(_crystal)(params, frac, z + 1, mask)
    got = np.asarray(_MIN_DIST(crystals))
    for i, p in enumerate(params[:-3]):
        lat = Lattice.from_parameters(*p)
        pairs = _brute_distances(lat, frac[i][: n_real[i]])[~np.eye(n_real[i], dtype=bool)]
        shortest = _brute_shortest_vector(lat)
        ref = min(pairs.min(initial=np.inf), shortest)
        assert got[i] == pytest.approx(ref, abs=1e-4)
    np.testing.assert_allclose(got[-3:-1], [3.0, a], rtol=1e-5)
    assert np.isposinf(got[-1])


def _pymatgen_neighbors(s: Structure, cutoff: float, k: int):
    centers, points, images, dists = s.get_neighbor_list(cutoff)
    out = []
    for i in range(len(s)):
        sel = np.flatnonzero(centers == i)
        order = sel[np.argsort(dists[sel], kind="stable")]
        out.append((dists[order], points[order], images[order]))
    return out


@pytest.mark.parametrize("cutoff", [5.0, 8.0])
def test_neighbor_list_matches_pymatgen(cells, cutoff):
    k = K_NBR
    params, frac, z = cells
    params, frac, z = params[:N_NBR_CELLS], frac[:N_NBR_CELLS], z[:N_NBR_CELLS]
    n_real = np.random.default_rng(5).integers(1, N_SITES + 1, len(params))
    mask = np.arange(N_SITES)[None, :] < n_real[:, None]
    crystals = jax.vmap(_crystal)(params, frac, z + 1, mask)
    nl = jax.tree.map(np.asarray, _NBRS(crystals, cutoff))
    assert not nl.truncated.any()
    for b, p in enumerate(params):
        n = n_real[b]
        s = Structure(Lattice.from_parameters(*p), ["Si"] * n, frac[b][:n])
        ref = _pymatgen_neighbors(s, cutoff, k)
        matrix = s.lattice.matrix
        lll = s.lattice.lll_matrix
        h_min = (
            abs(np.linalg.det(lll)) / np.linalg.norm(np.cross(lll[[1, 2, 0]], lll[[2, 0, 1]]), axis=1).max()
        )
        for i in range(N_SITES):
            m = nl.nbr_mask[b, i]
            if i >= n:
                assert not m.any()
                continue
            rd, rp, rimg = ref[i]
            assert m.sum() == min(k, len(rd))
            # count covers the searched window only: a lower bound, exact when the window spans the cutoff
            assert nl.count[b, i] <= len(rd)
            if cutoff <= 3.5 * h_min:
                assert nl.count[b, i] == len(rd)
            np.testing.assert_allclose(nl.dist[b, i][m], rd[:k], atol=1e-4)
            # every returned (site, image) is a distinct pymatgen neighbour at that distance, and vec is the
            # Cartesian vector to that image (pymatgen's orientation of the lattice is ours)
            keys = [(int(j), *map(int, o)) for j, o in zip(nl.idx[b, i][m], nl.offset[b, i][m], strict=True)]
            assert len(set(keys)) == len(keys)
            refset = {(int(j), *map(int, o)): d for j, o, d in zip(rp, rimg, rd, strict=True)}
            for (j, *o), dist, vec in zip(keys, nl.dist[b, i][m], nl.vec[b, i][m], strict=True):
                assert refset[(j, *o)] == pytest.approx(dist, abs=1e-4)
                expected_vec = (frac[b][j] + np.asarray(o) - frac[b][i]) @ matrix
                np.testing.assert_allclose(vec, expected_vec, atol=1e-4)


def test_neighbor_list_closed_form_and_truncation_flag():
    a = 2.5
    sc = _crystal([a, a, a, 90.0, 90.0, 90.0], np.zeros((1, 3)), np.array([84]))
    nbrs = jax.jit(G.neighbor_list, static_argnums=(1, 3))
    # within 3.6 A: 6 at a and 12 at a sqrt(2) (the 8 at a sqrt(3) = 4.33 A are beyond); the search radius
    # a sqrt(2) = 3.54 A is below (1 + 0.5) * 2.5 A, so one image shell provably suffices
    nl = nbrs(sc, 26, 3.6, 1)
    assert not bool(nl.truncated)
    np.testing.assert_array_equal(np.asarray(nl.nbr_mask[0]), np.arange(26) < 18)
    np.testing.assert_allclose(np.asarray(nl.dist[0, :6]), a, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(nl.dist[0, 6:18]), a * np.sqrt(2), rtol=1e-6)
    assert int(nl.count[0]) == 18
    # K = 26 within 8 A: the 26th is at a sqrt(3) = 4.33 A > 3.75 A: max_images=1 cannot prove it, must say so
    assert bool(nbrs(sc, 26, 8.0, 1).truncated)
    many = nbrs(sc, 26, 8.0, 3)  # (3 + 0.5) * 2.5 = 8.75 A >= 8 A: complete
    assert not bool(many.truncated)
    s = Structure(Lattice.cubic(a), ["Po"], [[0, 0, 0]])
    assert int(many.count[0]) == len(s.get_neighbor_list(8.0)[0])
    np.testing.assert_allclose(np.asarray(many.dist[0, 18:26]), a * np.sqrt(3), rtol=1e-6)
    with pytest.raises(ValueError, match="exceeds"):
        G.neighbor_list(sc, 27, 8.0, max_images=1)


def test_geometry_gradients_are_finite(debug_nans, cells):
    params, frac, z = cells
    c = _crystal(params[0], frac[0], z[0] + 1)

    def loss(f):
        return jnp.sum(G.distance_matrix(c.lattice, f)) + G.min_distance(c.replace(frac=f))

    g = jax.jit(jax.grad(loss))(c.frac)
    assert np.all(np.isfinite(np.asarray(g)))


def test_no_retrace_across_batches(cells):
    """Batches of the same shape reuse one trace (assert_max_traces(n=1) wraps every shared function)."""
    params, frac, z = cells
    order = np.random.default_rng(2).permutation(len(params))
    for perm in (np.arange(len(params)), order, order[::-1]):
        jax.block_until_ready(
            _DIST(jnp.asarray(params[perm], jnp.float32), jnp.asarray(frac[perm], jnp.float32))
        )
        crystals = jax.vmap(_crystal)(params[perm], frac[perm], z[perm] + 1)
        jax.block_until_ready(_MIN_DIST(crystals))
        sub = jax.tree.map(lambda x: x[:N_NBR_CELLS], crystals)
        for cutoff in (5.0, 6.5):  # a traced cutoff: no retrace either
            jax.block_until_ready(_NBRS(sub, cutoff))
    with pytest.raises(AssertionError):  # the guard itself works: a new shape traces again
        _DIST(jnp.asarray(params[:8], jnp.float32), jnp.asarray(frac[:8], jnp.float32))
