"""Tests of the crystal graph, the GCN / MEGNet state encoders and the embeddings (papers 000 and 002).

Invariances checked (and which hold):
- site permutation, amount of padding, padding content, integer shift of fractional coordinates: all encoders;
- global fractional translation and the 2x1x1 supercell (same K neighbours): only ``frac_mode="none"``
  (with position features the policy deliberately sees absolute positions: the embedding must change).
"""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest

from hgfn_jax.crystal.types import Crystal
from hgfn_jax.policies.embeddings import (
    ELEMENT_DESCRIPTORS,
    ElementEmbedding,
    LatticeMLP,
    SpaceGroupEmbedding,
    lattice_features,
)
from hgfn_jax.policies.gcn import GCNEncoder, position_features
from hgfn_jax.policies.graph import build_graph, gaussian_rbf, to_graphs_tuple
from hgfn_jax.policies.megnet import MEGNetEncoder, Set2Set

# Base crystal: 4 sites in a skewed triclinic cell, random (tie-free) positions.
LATTICE = np.array([4.1, 4.6, 5.3, 85.0, 95.0, 100.0], np.float32)
FRAC = np.array([[0.10, 0.20, 0.30], [0.55, 0.15, 0.70], [0.35, 0.65, 0.05], [0.80, 0.85, 0.45]], np.float32)
SPECIES = np.array([8, 26, 8, 3], np.int32)
TRANSLATION = np.array([0.31, 0.77, 0.12], np.float32)
SPARSE_LATTICE = np.array([11.0, 12.0, 13.0, 90.0, 95.0, 90.0], np.float32)
ONE_ATOM_LATTICE = np.array([9.0, 10.0, 11.0, 90.0, 90.0, 90.0], np.float32)
NB = 13  # crystals in variant_batch


def make_crystal(lattice, frac, species, n_max, slots=None, pad_frac=None, pad_species=None, sg=1) -> Crystal:
    """Unbatched numpy Crystal with the real sites placed at ``slots`` (default 0..n-1)."""
    n = len(species)
    slots = np.arange(n) if slots is None else np.asarray(slots)
    f = np.zeros((n_max, 3), np.float32) if pad_frac is None else np.array(pad_frac, np.float32)
    z = np.zeros(n_max, np.int32) if pad_species is None else np.array(pad_species, np.int32)
    mask = np.zeros(n_max, bool)
    f[slots] = frac
    z[slots] = species
    mask[slots] = True
    return Crystal(
        lattice=np.asarray(lattice, np.float32),
        frac=f,
        species=z,
        mask=mask,
        spacegroup=np.int32(sg),
        overflow=np.bool_(False),
    )


def stack(crystals) -> Crystal:
    return jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.stack(xs)), *crystals)


def supercell_2x1x1(lattice, frac, species):
    lat = np.array(lattice, np.float32)
    lat[0] *= 2.0
    f = np.concatenate([frac * [0.5, 1, 1], frac * [0.5, 1, 1] + [0.5, 0, 0]]).astype(np.float32)
    return lat, f, np.concatenate([species, species])


def variant_batch(n_max: int = 16) -> Crystal:
    """[NB] crystals at N = n_max (indices in the comments)."""
    rng = np.random.default_rng(7)
    species_s = SPECIES.copy()
    species_s[0] = 16  # O -> S
    lat_d = LATTICE.copy()
    lat_d[0] *= 1.1
    perm = np.array([2, 0, 3, 1])
    sc_lat, sc_frac, sc_species = supercell_2x1x1(LATTICE, FRAC, SPECIES)
    crystals = [
        make_crystal(LATTICE, FRAC, SPECIES, n_max),  # 0 base
        make_crystal(LATTICE, FRAC[perm], SPECIES[perm], n_max, slots=[13, 2, 7, 9]),  # 1 permuted, scattered
        make_crystal(LATTICE, (FRAC + TRANSLATION) % 1.0, SPECIES, n_max),  # 2 translated
        make_crystal(
            LATTICE, FRAC + np.array([1.0, 0.0, -1.0], np.float32), SPECIES, n_max
        ),  # 3 integer shift
        make_crystal(  # 4 garbage in the padding slots
            LATTICE,
            FRAC,
            SPECIES,
            n_max,
            pad_frac=rng.random((n_max, 3)),
            pad_species=rng.integers(1, 90, n_max),
        ),
        make_crystal(sc_lat, sc_frac, sc_species, n_max),  # 5 2x1x1 supercell
        make_crystal(LATTICE, FRAC, species_s, n_max),  # 6 one species changed
        make_crystal(lat_d, FRAC, SPECIES, n_max),  # 7 distances changed
        make_crystal(LATTICE, FRAC[:0], SPECIES[:0], n_max),  # 8 empty cell (s0)
        # Sparse cells: fewer than K neighbours within the cutoff (masked edge slots in use).
        make_crystal(SPARSE_LATTICE, FRAC[:3], SPECIES[:3], n_max),  # 9 sparse, 3 sites
        make_crystal(
            SPARSE_LATTICE, FRAC[[2, 0, 1]], SPECIES[[2, 0, 1]], n_max, slots=[11, 3, 6]
        ),  # 10 permuted
        make_crystal(ONE_ATOM_LATTICE, FRAC[:1], SPECIES[:1], n_max),  # 11 one atom, no neighbour (s1)
        make_crystal(ONE_ATOM_LATTICE, FRAC[:1], SPECIES[:1], n_max, slots=[5]),  # 12 same atom in slot 5
    ]
    return stack(crystals)


_build = jax.jit(build_graph, static_argnames=("k", "max_images"))
SMALL = dict(hidden=16, layers=2, num_rbf=8)
CONFIGS = {
    "gcn": lambda: GCNEncoder(**SMALL),
    "gcn_none": lambda: GCNEncoder(frac_mode="none", **SMALL),
    "megnet": lambda: MEGNetEncoder(**SMALL),  # Set2Set readout
    "megnet_none_mean": lambda: MEGNetEncoder(frac_mode="none", readout="mean", **SMALL),
}


@pytest.fixture(scope="module")
def batch16():
    return variant_batch(16)


@pytest.fixture(scope="module")
def built():
    """name -> (module, params, jitted apply, output on the base crystal padded to N = 8).

    Params are initialised (eager ``init_with_output``) on the graph of the base crystal padded to N = 8;
    ``apply`` is only ever called on [NB, 16] batches and may be traced once per config: a retrace raises."""
    out = {}
    # The modules also accept a prebuilt graph: build it once (jitted), initialise eagerly (no compile).
    graph8 = _build(stack([make_crystal(LATTICE, FRAC, SPECIES, 8)]), k=12, cutoff=8.0)
    for i, (name, make) in enumerate(CONFIGS.items()):
        module = make()
        out8, params = module.init_with_output(jax.random.PRNGKey(100 + i), graph8)

        def apply_fn(p, c, m=module):
            return m.apply(p, c)

        apply_fn.__name__ = f"apply_{name}"  # chex keys its trace counter on source + name: one per config
        apply = jax.jit(chex.assert_max_traces(n=1)(apply_fn))
        out[name] = (module, params, apply, np.asarray(out8))
    return out


def _close(x, y, tol=2e-5):
    return bool(np.allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol))


# ----------------------------------------------------------------------------------------------- graph


def brute_force_neighbors(lattice, frac, k, cutoff, m=3):
    """Sorted K nearest periodic-neighbour distances of every site: explicit [-m, m]^3 image sum (numpy)."""
    from hgfn_jax.crystal.lattice import params_to_matrix

    mat = np.asarray(params_to_matrix(jnp.asarray(lattice)), np.float64)
    cart = np.asarray(frac, np.float64) @ mat  # [n, 3]
    images = np.asarray(list(itertools.product(range(-m, m + 1), repeat=3)), np.float64) @ mat  # [G, 3]
    vec = cart[None, :, None, :] + images[None, None] - cart[:, None, None, :]  # [n, n, G, 3]
    dist = np.linalg.norm(vec, axis=-1).reshape(len(frac), -1)
    out = []
    for row in dist:
        row = np.sort(row[(row > 1e-9) & (row <= cutoff)])  # drop the site itself (zero image)
        out.append(row[:k])
    return out


def test_graph_neighbors_match_brute_force_and_flat_layout(batch16):
    graph = _build(batch16, k=12, cutoff=8.0)
    chex.assert_shape(graph.senders, (NB, 16, 12))
    ref = brute_force_neighbors(LATTICE, FRAC, 12, 8.0)
    for i in range(4):
        np.testing.assert_allclose(np.asarray(graph.dist[0, i]), ref[i], rtol=1e-4)
        assert int(graph.degree[0, i]) == 12
    # Small cutoff: fewer than K neighbours, counts follow the reference.
    small = _build(batch16, k=12, cutoff=3.0)
    ref3 = brute_force_neighbors(LATTICE, FRAC, 12, 3.0)
    assert [int(x) for x in small.degree[0, :4]] == [len(r) for r in ref3]
    np.testing.assert_array_equal(np.asarray(small.degree[0, 4:]), 0)  # padding sites: no edges
    assert not bool(jnp.any(graph.edge_mask[8]))  # empty cell: no edges
    ref_sparse = brute_force_neighbors(SPARSE_LATTICE, FRAC[:3], 12, 8.0)
    assert [int(x) for x in graph.degree[9, :3]] == [len(r) for r in ref_sparse]
    assert all(0 < len(r) < 12 for r in ref_sparse)  # partial neighbourhoods: masked edge slots in use
    assert int(jnp.sum(graph.degree[11])) == 0  # one atom, nearest image at 9 A > cutoff
    # Padding slots never send: every real edge's sender is a real site.
    senders_real = jnp.take_along_axis(graph.node_mask, graph.senders.reshape(NB, -1), axis=1).reshape(
        NB, 16, 12
    )
    assert bool(jnp.all(jnp.where(graph.edge_mask, senders_real, True)))
    # Flat jraph layout: per-receiver sums of distances agree with the dense layout.
    flat = to_graphs_tuple(graph)
    seg = jraph.segment_sum(
        jnp.where(flat.edge_mask, graph.dist.reshape(-1), 0.0), flat.graph.receivers, NB * 16
    )
    np.testing.assert_allclose(
        np.asarray(seg).reshape(NB, 16), np.asarray(jnp.sum(graph.dist, -1)), rtol=1e-6
    )
    # Flat senders point at the same sites (species agree).
    z_flat = graph.species.reshape(-1)[flat.graph.senders].reshape(NB, 16, 12)
    z_dense = jnp.take_along_axis(graph.species, graph.senders.reshape(NB, -1), axis=1).reshape(NB, 16, 12)
    assert bool(jnp.all(jnp.where(graph.edge_mask, z_flat == z_dense, True)))


def test_gaussian_rbf_and_position_features():
    centers = np.linspace(0.0, 8.0, 9)
    rbf = np.asarray(gaussian_rbf(jnp.asarray([2.0, 8.0, 9.0]), num=9, cutoff=8.0))
    assert int(np.argmax(rbf[0])) == 2  # d = 2 peaks at centre mu_2 = 2
    env = 0.5 * (np.cos(np.pi * 2.0 / 8.0) + 1.0)
    np.testing.assert_allclose(rbf[0], env * np.exp(-((2.0 - centers) ** 2)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rbf[1:], 0.0, atol=1e-7)  # at / beyond the cutoff
    f = jnp.asarray([[0.25, 0.5, 0.0]])
    pf = np.asarray(position_features(f, "fourier", 1))
    np.testing.assert_allclose(pf[0].reshape(3, 2), [[1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(position_features(f + 1.0, "raw"), f, atol=1e-6)
    assert position_features(f, "none").shape == (1, 0)
    with pytest.raises(ValueError):
        position_features(f, "bogus")


# -------------------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encoder_invariances_and_sensitivity(name, built, batch16):
    module, params, apply, out8 = built[name]
    out = np.asarray(apply(params, batch16))
    chex.assert_shape(out, (NB, SMALL["hidden"]))
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    base = out[0]
    assert _close(out[1], base), "site permutation"
    assert _close(out[3], base), "integer shift of fractional coordinates"
    assert _close(out[10], out[9]), "site permutation, sparse cell (partial neighbourhoods)"
    assert _close(out[12], out[11]), "one atom without neighbours, other slot"
    assert not _close(out[9], out[11], 1e-3)
    np.testing.assert_allclose(out[4], base, rtol=1e-6, atol=1e-6, err_msg="padding content leaked")
    # Same crystal padded to N = 8 (output of the initialisation call).
    assert _close(out8[0], base), "amount of padding"
    # Sensitivity: species and distances.
    assert not _close(out[6], base, 1e-3), "species change must change the embedding"
    assert not _close(out[7], base, 1e-3), "distance change must change the embedding"
    # Translation / supercell: invariant without position features, sensitive with them.
    if module.frac_mode == "none":
        assert _close(out[2], base, 5e-5), "global translation"
        assert _close(out[5], base, 5e-5), "2x1x1 supercell"
    else:
        assert not _close(out[2], base, 1e-3), "absolute positions must be visible"
        assert not _close(out[5], base, 1e-3)
    # Empty cell differs from a real crystal (and is finite, checked above).
    assert not _close(out[8], base, 1e-3)


def test_supercell_neighbours_are_unchanged(batch16):
    """Premise of the supercell invariance: same K-neighbour distance multisets, all K found."""
    graph = _build(batch16, k=12, cutoff=8.0)
    cell = np.sort(np.asarray(graph.dist[0, :4]), axis=-1)
    sc = np.sort(np.asarray(graph.dist[5, :8]), axis=-1)
    np.testing.assert_allclose(sc[:4], cell, rtol=1e-5)
    np.testing.assert_allclose(sc[4:], cell, rtol=1e-5)
    assert not bool(jnp.any(graph.truncated[:8]))


def test_gcn_gradients_finite_no_nan(built, batch16, debug_nans):
    """Gradients w.r.t. parameters, lattice and coordinates (through the neighbour list) are finite."""
    module, params, _, _ = built["gcn"]

    def loss(p, lattice, frac):
        c = batch16.replace(lattice=lattice, frac=frac)
        return jnp.sum(module.apply(p, c) ** 2)

    g_p, g_lat, g_frac = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(params, batch16.lattice, batch16.frac)
    leaves = jax.tree_util.tree_leaves(g_p)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert any(float(jnp.max(jnp.abs(x))) > 0 for x in leaves)
    assert bool(jnp.all(jnp.isfinite(g_lat))) and bool(jnp.all(jnp.isfinite(g_frac)))
    assert float(jnp.max(jnp.abs(g_frac[4, 4:]))) == 0.0  # padding coordinates have no influence
    assert float(jnp.max(jnp.abs(g_lat[0]))) > 0  # the embedding depends on the lattice through distances
    assert float(jnp.max(jnp.abs(g_lat[8]))) == 0.0  # empty cell: nothing depends on the lattice


def test_megnet_gradients_finite_no_nan(built, batch16, debug_nans):
    """Parameter gradients of MEGNet (Set2Set readout) are finite, empty cell included, under debug_nans."""
    module, params, _, _ = built["megnet"]
    graph = _build(batch16, k=12, cutoff=8.0)

    def loss(p):
        return jnp.sum(module.apply(p, graph) ** 2)

    leaves = jax.tree_util.tree_leaves(jax.jit(jax.grad(loss))(params))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert sum(int(jnp.any(x != 0)) for x in leaves) > len(leaves) // 2


def test_no_retrace_across_batches(built, batch16):
    """The jitted apply (wrapped in chex.assert_max_traces(n=1)) sees two batches of the same shape."""
    _, params, apply, _ = built["gcn_none"]
    other = batch16.replace(
        frac=(batch16.frac + 0.1) % 1.0, species=jnp.where(batch16.mask, 14, 0).astype(jnp.int32)
    )
    a = apply(params, batch16)
    b = apply(params, other)  # same shapes and dtypes: a retrace raises in assert_max_traces
    assert not _close(a, b, 1e-3)


def test_set2set_duplication_and_empty_set(rng):
    """Set2Set attention is unchanged when every member is duplicated (the supercell case), ignores masked
    members, and gives a finite r = 0 for an empty set."""
    x = jax.random.normal(rng(), (1, 5, 4))
    mask = jnp.asarray([[True, True, True, False, False]])
    module = Set2Set(steps=3)
    params = jax.jit(module.init)(rng(), x, mask)
    apply = jax.jit(module.apply)
    ref = apply(params, x, mask)
    chex.assert_shape(ref, (1, 8))
    dup = jnp.concatenate([x[:, :3], x[:, :3], jnp.full((1, 2, 4), 50.0)], axis=1)
    dup_mask = jnp.asarray([[True] * 6 + [False] * 2])
    np.testing.assert_allclose(apply(params, dup, dup_mask), ref, rtol=1e-5, atol=1e-6)
    garbage = x.at[:, 3:].set(1e3)
    np.testing.assert_allclose(apply(params, garbage, mask), ref, rtol=1e-6, atol=1e-6)
    assert not _close(apply(params, x.at[0, 0].add(1.0), mask), ref, 1e-4)
    empty = apply(params, x, jnp.zeros_like(mask))
    assert bool(jnp.all(jnp.isfinite(empty)))
    np.testing.assert_array_equal(np.asarray(empty[:, 4:]), 0.0)  # r = 0


# ------------------------------------------------------------------------------------------ embeddings


def test_lattice_features_and_mlp(rng):
    lat = jnp.asarray([[10.0, 5.0, 20.0, 90.0, 60.0, 120.0]])
    feats = np.asarray(lattice_features(lat))
    s3 = np.sqrt(3.0) / 2
    np.testing.assert_allclose(feats[0], [1.0, 0.5, 2.0, 1.0, 0.0, s3, 0.5, s3, -0.5], atol=1e-6)
    mlp = LatticeMLP(features=8)
    params = mlp.init(rng(), lat)
    out = mlp.apply(params, jnp.stack([lat[0], lat[0].at[3].set(80.0)]))
    chex.assert_shape(out, (2, 8))
    assert not _close(out[0], out[1], 1e-4)


def test_spacegroup_embedding_hierarchy(rng):
    sg = jnp.asarray([0, 1, 195, 198, 225, 230])
    emb = SpaceGroupEmbedding(features=8)
    params = emb.init(rng(), sg)
    out = np.asarray(emb.apply(params, sg))
    chex.assert_shape(out, (6, 8))
    assert len({tuple(np.round(r, 5)) for r in out}) == 6  # all distinct
    # Without the group-specific term, groups of the same crystal system AND point group (195 P23, 198 P2_13:
    # cubic, point group 23) coincide; a cubic group of another point group (225 Fm-3m, m-3m) does not.
    zeroed = jax.tree_util.tree_map(lambda x: x, params)
    zeroed["params"]["group"]["embedding"] = jnp.zeros_like(params["params"]["group"]["embedding"])
    z = np.asarray(emb.apply(zeroed, sg))
    np.testing.assert_allclose(z[2], z[3], atol=1e-6)
    assert not _close(z[2], z[4], 1e-3)
    flat = SpaceGroupEmbedding(features=8, hierarchical=False)
    assert set(flat.init(rng(), sg)["params"]) == {"group"}


def test_element_embedding_descriptors(rng):
    # Oxygen: period 2, group 16, p block, Pauling electronegativity 3.44, mass ~16.
    o = ELEMENT_DESCRIPTORS[8]
    np.testing.assert_allclose(o[:2], [2 / 7, 16 / 18], rtol=1e-6)
    np.testing.assert_array_equal(o[2:6], [0, 1, 0, 0])
    np.testing.assert_allclose(o[6:], [3.44 / 4, 1.0, 15.999 / 250], rtol=1e-3)
    np.testing.assert_array_equal(ELEMENT_DESCRIPTORS[0], 0.0)
    assert np.all(np.isfinite(ELEMENT_DESCRIPTORS))
    emb = ElementEmbedding(features=8)
    z = jnp.asarray([[1, 8], [26, 0]])
    out = emb.apply(emb.init(rng(), z), z)
    chex.assert_shape(out, (2, 2, 8))
    assert not _close(out[0, 0], out[0, 1], 1e-3)


def _megnet_block_reference(p, nodes, edges, u, graph, node_w, edge_w):
    """One MEGNet block written from its equations on the flat jraph graph (concatenated inputs, gathers by
    global sender / receiver index, ``jraph.segment_sum`` means): the reference for the dense block."""
    b, n, k = graph.senders.shape
    flat = to_graphs_tuple(graph)
    s, r = flat.graph.senders, flat.graph.receivers
    ssp = lambda x: jax.nn.softplus(x) - jnp.log(2.0)  # noqa: E731
    phi = lambda q, x: ssp(ssp(x @ q["Dense_0"]["kernel"] + q["Dense_0"]["bias"]) @ q["Dense_1"]["kernel"]
                           + q["Dense_1"]["bias"])  # noqa: E731

    def seg_mean(x, mask, ids, num, w=None):
        w = mask.astype(x.dtype) if w is None else jnp.where(mask, w, 0.0)
        tot = jraph.segment_sum(jnp.where(mask[:, None], x * w[:, None], 0.0), ids, num)
        return tot / jnp.maximum(jraph.segment_sum(w, ids, num), 1.0)[:, None]

    v, e = nodes.reshape(b * n, -1), edges.reshape(b * n * k, -1)
    e_new = jnp.where(flat.edge_mask[:, None], phi(p["phi_e"], jnp.concatenate(
        [v[s], v[r], e, u[flat.edge_graph]], -1)), 0.0)
    e_mean = seg_mean(e_new, flat.edge_mask, r, b * n)
    v_new = jnp.where(flat.node_mask[:, None], phi(p["phi_v"], jnp.concatenate(
        [e_mean, v, u[flat.node_graph]], -1)), 0.0)
    u_e = seg_mean(e_new, flat.edge_mask, flat.edge_graph, b, edge_w.reshape(-1))
    u_v = seg_mean(v_new, flat.node_mask, flat.node_graph, b, node_w.reshape(-1))
    u_new = phi(p["phi_u"], jnp.concatenate([u_e, u_v, u], -1))
    v_out = jnp.where(flat.node_mask[:, None], v + v_new, 0.0).reshape(nodes.shape)
    e_out = jnp.where(flat.edge_mask[:, None], e + e_new, 0.0).reshape(edges.shape)
    return v_out, e_out, u + u_new


def test_megnet_block_equals_flat_segment_reference(batch16, rng):
    """The dense MEGNet block (bond update applied part by part, sums over the K axis) equals the block written
    from its equations on the flat graph with concatenated inputs and segment sums, with random parameters,
    node / edge weights (orbit multiplicities) and padding; sparse, empty and one-atom cells included."""
    from hgfn_jax.policies.megnet import MEGNetBlock

    graph = _build(batch16, k=12)
    b, n, k = graph.senders.shape
    h = 16
    nodes = jax.random.normal(rng(), (b, n, h)) * graph.node_mask[..., None]
    edges = jax.random.normal(rng(), (b, n, k, h)) * graph.edge_mask[..., None]
    u = jax.random.normal(rng(), (b, h))
    node_w = jax.random.randint(rng(), (b, n), 1, 5).astype(jnp.float32)
    edge_w = jnp.broadcast_to(node_w[:, :, None], (b, n, k))
    block = MEGNetBlock(h)
    params = block.init(rng(), nodes, edges, u, graph, node_w, edge_w)
    params = jax.tree.map(lambda x: 0.5 * jax.random.normal(rng(), x.shape), params)  # not the zero biases
    got = jax.jit(block.apply)(params, nodes, edges, u, graph, node_w, edge_w)
    want = _megnet_block_reference(params["params"], nodes, edges, u, graph, node_w, edge_w)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
