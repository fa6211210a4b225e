"""Orbit-reduced crystal graphs and encoders (``policies.graph.build_orbit_graph``) against the full cell.

A cell expanded from T reference atoms by its space group has a group-invariant K-NN graph, so with
symmetry-invariant node inputs (``frac_mode="none"``) a message-passing encoder gives every site of an orbit
the embedding of the orbit's representative. The orbit graph (T nodes, neighbours of the representatives
among all sites and images, senders mapped to orbits, means weighted by orbit multiplicities) must then give
the full-cell encoder's output with the same parameters. Checked for generic reference positions (random,
no ties between different orbits) and exact special positions (merged orbits) in groups 225, 229, 194, 166,
62, 14, 2 and 1, with 1 to 3 reference atoms; with position features, against the full-cell encoder whose
per-site positions are replaced by their representative's. Also: the centre neighbour search equals
``neighbor_list`` on random cells, and the hierarchical policy runs with every encoder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.crystal import constraints as cons
from hgfn_jax.crystal.geometry import center_neighbor_list, center_neighbor_list_batch, neighbor_list
from hgfn_jax.crystal.orbit import expand_orbits_full
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.policies.gcn import GCNEncoder
from hgfn_jax.policies.graph import build_graph, build_orbit_graph
from hgfn_jax.policies.megnet import MEGNetEncoder

N_MAX = 128
T = 3
K = 12
CUTOFF = 8.0
RTOL, ATOL = 1e-4, 2e-5  # float32 round-off of different summation orders (observed <= ~1e-6)

# (group, reference atoms): None = a random generic position; a tuple = an exact special position
# (Wyckoff multiplicity in the comment), where the orbit merge happens.
CASES = [
    (225, [(0.0, 0.0, 0.0), (0.25, 0.25, 0.25), "x00"]),  # 4a + 8c + 24e
    (225, [(0.5, 0.5, 0.5)]),  # 4b alone: fcc
    (229, [(0.0, 0.0, 0.0), "xxx"]),  # 2a + 16f
    (229, [None]),  # 96 general
    (194, [(1 / 3, 2 / 3, 0.25), None]),  # 2c + 24
    (166, [(0.0, 0.0, 0.5), "00z", None]),  # 3b + 6c + 36 (hexagonal axes)
    (62, ["x1/4z", (0.0, 0.0, 0.0), None]),  # 4c + 4a + 8
    (14, [None, (0.0, 0.0, 0.0), None]),  # 4 + 2a + 4
    (2, [None, (0.5, 0.5, 0.5), None]),  # 2 + 1h + 2
    (1, [None, None, None]),
    (1, [None]),
]


def _position(spec, rng):
    x = np.float32(rng.uniform(0.05, 0.45))
    if spec is None:
        return rng.random(3).astype(np.float32)
    if spec == "x00":
        return np.array([x, 0, 0], np.float32)
    if spec == "xxx":
        return np.array([x, x, x], np.float32)
    if spec == "00z":
        return np.array([0, 0, x], np.float32)
    if spec == "x1/4z":
        return np.array([x, 0.25, rng.uniform(0.05, 0.95)], np.float32)
    return np.array(spec, np.float32)


def symmetric_cells(seed: int = 0):
    """Batch of expanded cells (Crystal [B]) and their site_ref [B, N_MAX] for CASES."""
    rng = np.random.default_rng(seed)
    crystals, site_refs = [], []
    for group, specs in CASES:
        frac = np.zeros((T, 3), np.float32)
        mask = np.zeros(T, bool)
        for i, spec in enumerate(specs):
            frac[i] = _position(spec, rng)
            mask[i] = True
        species = rng.integers(1, 40, T).astype(np.int32)
        lat = np.concatenate([rng.uniform(3.5, 7.0, 3), rng.uniform(75.0, 105.0, 3)]).astype(np.float32)
        lat = cons.apply_spacegroup_constraints(jnp.asarray(lat), group)
        out = expand_orbits_full(jnp.asarray(frac), species, jnp.asarray(mask), group, N_MAX, lattice=lat)
        assert not bool(out.crystal.overflow) and not bool(out.invalid), (group, int(out.num_sites))
        crystals.append(out.crystal)
        site_refs.append(out.ref_index)
    stack = lambda *xs: jnp.stack(xs)  # noqa: E731
    return jax.tree_util.tree_map(stack, *crystals), jnp.stack(site_refs)


@pytest.fixture(scope="module")
def graphs():
    crystal, site_ref = symmetric_cells()
    full = jax.jit(lambda c: build_graph(c, K, CUTOFF))(crystal)
    orbit = jax.jit(lambda c, s: build_orbit_graph(c, s, T, K, CUTOFF))(crystal, site_ref)
    assert not np.any(np.asarray(full.truncated)) and not np.any(np.asarray(orbit.truncated))
    # representative site of every orbit node, to map per-site quantities
    rep = jnp.argmax(site_ref[:, None, :] == jnp.arange(T)[None, :, None], axis=-1)  # [B, T]
    return crystal, site_ref, full, orbit, rep


def test_orbit_graph_structure(graphs):
    crystal, site_ref, full, orbit, rep = graphs
    site_ref, rep = np.asarray(site_ref), np.asarray(rep)
    n_ref = np.array([len(s) for _, s in CASES])
    np.testing.assert_array_equal(np.asarray(orbit.node_mask).sum(1), n_ref)
    # multiplicities are the orbit sizes; degrees and sorted distances are those of the representatives
    for b in range(len(CASES)):
        for r in range(n_ref[b]):
            assert orbit.multiplicity[b, r] == np.sum(site_ref[b] == r)
            s = rep[b, r]
            assert orbit.degree[b, r] == full.degree[b, s]
            np.testing.assert_allclose(orbit.dist[b, r], full.dist[b, s], rtol=1e-5, atol=1e-5)
            # senders are the orbits of the representative's neighbours (compare as multisets per distance)
            got = sorted(np.asarray(orbit.senders[b, r])[np.asarray(orbit.edge_mask[b, r])])
            want = sorted(site_ref[b][np.asarray(full.senders[b, s])[np.asarray(full.edge_mask[b, s])]])
            assert got == want, (CASES[b][0], r)
            # every site of the orbit has the same sorted neighbour distances (the graph is invariant)
            for s2 in np.nonzero(site_ref[b] == r)[0]:
                np.testing.assert_allclose(full.dist[b, s2], full.dist[b, s], rtol=1e-4, atol=1e-4)
    assert np.all(np.asarray(orbit.multiplicity)[~np.asarray(orbit.node_mask)] == 0)


ENCODERS = {
    "gcn": lambda fm: GCNEncoder(hidden=16, layers=3, num_rbf=8, frac_mode=fm),
    "gcn_plain": lambda fm: GCNEncoder(hidden=16, layers=2, num_rbf=8, frac_mode=fm, edge_gate=False),
    "megnet_set2set": lambda fm: MEGNetEncoder(hidden=16, layers=2, num_rbf=8, frac_mode=fm),
    "megnet_mean": lambda fm: MEGNetEncoder(hidden=16, layers=2, num_rbf=8, frac_mode=fm, readout="mean"),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_orbit_encoder_equals_full_cell_encoder(name, graphs):
    """frac_mode="none": identical outputs (same parameters); with position features: the full-cell encoder
    seeing every site at its representative's position."""
    crystal, site_ref, full, orbit, rep = graphs
    for frac_mode in ("none", "fourier"):
        module = ENCODERS[name](frac_mode)
        params = jax.jit(module.init)(jax.random.PRNGKey(1), full)
        apply = jax.jit(module.apply)
        if frac_mode == "none":
            ref = apply(params, full)
        else:
            rep_of_site = jnp.take_along_axis(rep, jnp.maximum(site_ref, 0), axis=1)  # [B, N]
            frac_rep = jnp.take_along_axis(crystal.frac, rep_of_site[..., None], axis=1)
            ref = apply(params, full._replace(frac=frac_rep))
        got = apply(params, orbit)
        assert np.all(np.isfinite(np.asarray(got)))
        assert float(jnp.max(jnp.abs(ref))) > 1e-2  # not trivially zero
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=RTOL, atol=ATOL, err_msg=frac_mode)
    # and the full-cell encoder with per-site positions differs: the position features are not invariant
    module = ENCODERS[name]("fourier")
    params = jax.jit(module.init)(jax.random.PRNGKey(1), full)
    diff = np.abs(np.asarray(module.apply(params, full) - module.apply(params, orbit))).max(axis=1)
    assert diff[0] > 1e-4  # 225 with three orbits


def _random_cells(seed: int, n_max: int = 10):
    rng = np.random.default_rng(seed)
    lats = [
        [4.1, 4.6, 5.3, 85.0, 95.0, 100.0],
        [2.1, 2.4, 9.5, 62.0, 118.0, 75.0],  # thin, skewed: search window may be truncated
        [11.0, 12.0, 13.0, 90.0, 95.0, 90.0],  # sparse: fewer than K neighbours
        [9.0, 10.0, 11.0, 90.0, 90.0, 90.0],
        [3.0, 7.5, 5.0, 100.0, 70.0, 110.0],
    ]
    counts = [7, 5, 3, 1, 10]
    out = []
    for lat, n in zip(lats, counts, strict=True):
        mask = np.zeros(n_max, bool)
        mask[rng.permutation(n_max)[:n]] = True
        frac = (rng.random((n_max, 3)) * 3 - 1).astype(np.float32)  # unwrapped, garbage in padding
        species = rng.integers(1, 50, n_max).astype(np.int32)
        out.append(
            Crystal(
                lattice=np.asarray(lat, np.float32),
                frac=frac,
                species=species,
                mask=mask,
                spacegroup=np.int32(1),
                overflow=np.bool_(False),
            )
        )
    return jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.stack(xs)), *out)


def test_center_neighbor_list_matches_neighbor_list():
    cells = _random_cells(3)
    n = cells.mask.shape[1]
    for max_images in (1, 2):
        full = jax.vmap(lambda c, m=max_images: neighbor_list(c, K, CUTOFF, m))(cells)
        cen = jax.vmap(
            lambda c, m=max_images: center_neighbor_list(
                c.lattice, c.frac, jnp.arange(n), c.mask, c.frac, c.mask, K, CUTOFF, m
            )
        )(cells)
        np.testing.assert_array_equal(np.asarray(cen.nbr_mask), np.asarray(full.nbr_mask))
        np.testing.assert_allclose(np.asarray(cen.dist), np.asarray(full.dist), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(cen.idx), np.asarray(full.idx))
        np.testing.assert_array_equal(np.asarray(cen.truncated), np.asarray(full.truncated))



def test_center_neighbor_list_batch_equals_the_one_pass_search():
    """The two-pass batch search (27 translations, the full window only where its certificate fails) returns
    the single-pass ``max_images = 2`` search on every crystal: thin / skewed cells that need the full window,
    sparse cells (fewer than K within the cutoff: the cutoff is the radius), one-atom and empty cells, a
    symmetric cell with ties (distances compared there, the tied choice may differ); through each path: some
    crystals redone in the sub-batch, more failures than the sub-batch holds (whole batch redone), none."""
    cells = jax.tree.map(lambda *x: jnp.concatenate(x), *[_random_cells(s) for s in range(8)])  # 40 cells
    thin = [[2.0, 2.0, 10.0, 90.0, 90.0, 90.0],  # a square net of 2 A: the 12th neighbour is 2 cells away
            [2.0, 2.1, 9.0, 80.0, 100.0, 95.0],
            [2.0, 9.0, 9.5, 80.0, 100.0, 95.0],  # a chain: even the full window is truncated
            [2.2, 2.0, 2.1, 60.0, 65.0, 70.0]]  # a small, strongly skewed cell
    one = np.zeros((len(thin), 10), bool)
    one[:, 0] = True
    one[1, 1] = True  # two atoms in one of them
    extra = Crystal(lattice=jnp.asarray(thin, jnp.float32), frac=cells.frac[: len(thin)], species=cells.species[
        : len(thin)], mask=jnp.asarray(one), spacegroup=cells.spacegroup[: len(thin)],
        overflow=cells.overflow[: len(thin)])
    cells = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), cells, extra)
    sym = symmetric_cells()[0]  # CASES[1]: fcc (225, 4b), 4 sites: tied neighbour shells
    sym = jax.tree.map(lambda x: x[1:2, :10] if x.ndim > 1 else x[1:2], sym)
    assert int(sym.mask.sum()) == 4
    cells = jax.tree.map(lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]), cells, sym)
    cells = cells.replace(mask=cells.mask.at[3].set(False))  # an empty cell
    n = cells.mask.shape[1]
    centres = (cells.lattice, cells.frac, jnp.broadcast_to(jnp.arange(n), cells.mask.shape), cells.mask,
               cells.frac, cells.mask)
    want = jax.vmap(lambda *x: center_neighbor_list(*x, K, CUTOFF, 2))(*centres)
    near = jax.vmap(lambda *x: center_neighbor_list(*x, K, CUTOFF, 1))(*centres)
    n_need = int(np.sum(np.asarray(near.truncated)))
    assert 2 <= n_need < 20, n_need  # the thin cells need the full window, most cells do not
    assert np.any(np.asarray(want.truncated))  # and one is truncated even there (the flag is compared too)

    def check(rows, share):
        sub = jax.tree.map(lambda x: x[rows], centres)
        got = jax.jit(lambda *x: center_neighbor_list_batch(*x, K, CUTOFF, 2, far_share=share))(*sub)
        ref = jax.tree.map(lambda x: np.asarray(x)[rows], want)
        np.testing.assert_array_equal(np.asarray(got.truncated), ref.truncated)
        np.testing.assert_array_equal(np.asarray(got.nbr_mask), ref.nbr_mask)
        np.testing.assert_allclose(np.asarray(got.dist), ref.dist, rtol=1e-6, atol=1e-6)
        no_ties = np.asarray(rows) != fcc  # the fcc cell has tied neighbour shells
        np.testing.assert_array_equal(np.asarray(got.idx)[no_ties], ref.idx[no_ties])

    everything = np.arange(cells.mask.shape[0])
    fcc = everything[-1]
    check(everything, 8)  # cap 6 >= n_need: the failing crystals redone in the sub-batch
    check(everything, 1000)  # cap 1 < n_need: the whole batch redone with the full window
    check(np.arange(40), 8)  # no crystal needs the full window

def test_identity_orbits_give_the_full_graph():
    """site_ref = arange(N) (no symmetry used): the orbit graph is the full graph, all encoders agree."""
    cells = _random_cells(5)
    n = cells.mask.shape[1]
    site_ref = jnp.where(cells.mask, jnp.arange(n)[None], -1)
    full = build_graph(cells, K, CUTOFF)
    orbit = build_orbit_graph(cells, site_ref, n, K, CUTOFF)
    for name in ("gcn", "megnet_set2set"):
        module = ENCODERS[name]("fourier")
        params = jax.jit(module.init)(jax.random.PRNGKey(2), full)
        np.testing.assert_allclose(
            np.asarray(module.apply(params, orbit)),
            np.asarray(module.apply(params, full)),
            rtol=RTOL,
            atol=ATOL,
        )


def test_hierarchical_policy_encoders():
    """Rollout with the default (orbit) GCN policy; the other encoders on its states; site_ref provenance."""
    from hgfn_jax.envs.hierarchical import HierarchicalConfig, HierarchicalEnv
    from hgfn_jax.gflownet.env import Exploration
    from hgfn_jax.gflownet.rollout import init_states, rollout
    from hgfn_jax.policies.hierarchical import make_hierarchical_policy

    env = HierarchicalEnv(HierarchicalConfig(num_steps=2, n_max=24, spacegroups=(1, 2, 14, 62, 166, 225)))
    make = lambda enc: make_hierarchical_policy(env, encoder=enc, hidden=16, layers=2, head_hidden=(16,))  # noqa
    policy = make("gcn")
    params = jax.jit(policy.init)(jax.random.PRNGKey(0), init_states(env, 2))
    tr = jax.jit(
        lambda k: rollout(k, env, policy.apply, params, 8, Exploration.make(0.0, 1.0), return_states=True)
    )(jax.random.PRNGKey(1))
    assert np.all(np.asarray(tr.done))
    assert np.all(np.isfinite(np.asarray(tr.log_pf)))
    final = tr.final
    # site_ref is the provenance of every site: species of the reference atom, padding -1
    sr = np.asarray(final.site_ref)
    mask = np.asarray(final.crystal.mask)
    assert np.all((sr >= 0) == mask)
    ref_z = np.take_along_axis(np.asarray(final.ref_species), np.maximum(sr, 0), axis=1)
    np.testing.assert_array_equal(np.where(mask, ref_z, 0), np.asarray(final.crystal.species))
    mid = jax.tree_util.tree_map(lambda x: x[:, 2], tr.states)  # one atom placed, phase 0
    states = jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), final, mid, init_states(env, 8))
    # (megnet_full takes the dispatch path of gcn_full, its module is tested in test_graph_encoders; deepsets runs
    # through the policy in test_hierarchical_env: compiling them here again costs ~50 s)
    for enc in ("gcn", "gcn_full", "megnet"):
        pol = make(enc)
        p = params if enc == "gcn_full" else jax.jit(pol.init)(jax.random.PRNGKey(0), init_states(env, 2))
        if enc == "gcn_full":  # same parameter tree as the orbit GCN
            tree = jax.tree_util.tree_structure(jax.jit(pol.init)(jax.random.PRNGKey(0), init_states(env, 2)))
            assert tree == jax.tree_util.tree_structure(params)
        fwd, _ = jax.jit(pol.apply)(p, states)
        assert fwd.shape == (24, env.fwd_dim)
        assert np.all(np.isfinite(np.asarray(fwd)))
    with pytest.raises(ValueError, match="unknown encoder"):
        make("gnn")
