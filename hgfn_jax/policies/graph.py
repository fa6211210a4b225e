"""Padded crystal graphs for the GNN state encoders (paper 000 sec. 4.1, paper 002 sec. 10.1).

A batch of padded crystals (``Crystal`` with leading ``[B]``, ``N`` sites each) becomes a fixed-shape directed
graph: nodes are the ``N`` padded sites (``node_mask`` = site mask), and every node ``i`` receives ``K`` edges
from its K nearest periodic neighbours within ``cutoff`` (paper 000: "k-nearest neighbor with the maximum
number of neighbors being 12 and the radius cut-off is 8.0 A"), taken from
:func:`hgfn_jax.crystal.geometry.neighbor_list`. A site's own periodic images count as neighbours (a one-atom
cell has edges). Padding sites have no edges, and no edge ever starts at a padding site, so padding can never
influence a real node. Empty cells (the GFlowNet's first state s0) give a graph with no real node and no edge.

Two equivalent layouts:
- dense (:class:`CrystalGraph`): edge ``[b, i, k]`` goes from node ``senders[b, i, k]`` to node ``i``;
  messages are gathered with ``take_along_axis`` and reduced over the K axis (fast, no scatter);
- flat jraph (:func:`to_graphs_tuple`): ``B * N`` nodes and ``B * N * K`` edges with global indices, for the
  ``jraph.segment_*`` operations. Padding nodes/edges stay in the arrays and are masked (fixed shapes).

Conventions: distances in Angstrom, float32; all functions are pure and jit/vmap-safe.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jraph

from hgfn_jax.crystal.geometry import center_neighbor_list_batch, neighbor_list
from hgfn_jax.crystal.types import Crystal

DEFAULT_K = 12  # paper 000 sec. 4.1
DEFAULT_CUTOFF = 8.0  # Angstrom, paper 000 sec. 4.1


class CrystalGraph(NamedTuple):
    """Dense padded directed graph of a batch of crystals. Edge [b, i, k]: senders[b, i, k] -> i."""

    species: jnp.ndarray  # [B, N] int32: atomic number Z, 0 for padding
    frac: jnp.ndarray  # [B, N, 3] float32: fractional coordinates (as stored, not wrapped)
    node_mask: jnp.ndarray  # [B, N] bool: real site
    senders: jnp.ndarray  # [B, N, K] int32: local index (0..N-1) of the neighbour sending to node i
    dist: jnp.ndarray  # [B, N, K] float32: neighbour distance in Angstrom (0 where masked)
    edge_mask: jnp.ndarray  # [B, N, K] bool: real edge (both ends real, within the cutoff)
    degree: jnp.ndarray  # [B, N] int32: number of real incoming edges of each node (<= K)
    lattice: jnp.ndarray  # [B, 6] float32: a, b, c (Angstrom), alpha, beta, gamma (degrees)
    spacegroup: jnp.ndarray  # [B] int32
    truncated: jnp.ndarray  # [B] bool: the neighbour search window may have missed a neighbour
    # [B, N] float32: number of cell sites each node stands for (orbit graphs, :func:`build_orbit_graph`);
    # None = 1 for every node (the full graph). Used by the mean / attention readouts, never by max pooling.
    multiplicity: jnp.ndarray | None = None

    @property
    def batch_size(self) -> int:
        return self.species.shape[0]

    @property
    def n_max(self) -> int:
        return self.species.shape[1]

    @property
    def k(self) -> int:
        return self.senders.shape[2]


def ensure_batched(crystal: Crystal) -> Crystal:
    """Adds a leading batch axis to an unbatched crystal (``lattice`` of shape [6]), else returns it."""
    if crystal.lattice.ndim == 1:
        return jax.tree_util.tree_map(lambda x: x[None], crystal)
    return crystal


def build_graph(
    crystal: Crystal, k: int = DEFAULT_K, cutoff: float = DEFAULT_CUTOFF, max_images: int = 2
) -> CrystalGraph:
    """Dense K-nearest-neighbour graph of a batch of crystals (leading [B]; an unbatched crystal gets B = 1).

    Args:
        crystal: padded ``Crystal`` with leading [B] (fields [B, 6], [B, N, 3], [B, N], [B, N], [B], [B]).
        k: neighbours per node (static); must be <= N (2 max_images + 1)^3 - 1.
        cutoff: neighbour radius in Angstrom.
        max_images: periodic image window of :func:`neighbor_list` (static); see ``truncated``.
    """
    crystal = ensure_batched(crystal)
    nl = jax.vmap(lambda c: neighbor_list(c, k, cutoff, max_images))(crystal)
    edge_mask = nl.nbr_mask & crystal.mask[:, :, None]  # [B, N, K]; neighbor_list already masks both ends
    return CrystalGraph(
        species=jnp.where(crystal.mask, crystal.species, 0).astype(jnp.int32),
        frac=jnp.asarray(crystal.frac, jnp.float32),
        node_mask=jnp.asarray(crystal.mask, bool),
        senders=jnp.where(edge_mask, nl.idx, 0).astype(jnp.int32),
        dist=jnp.where(edge_mask, nl.dist, 0.0).astype(jnp.float32),
        edge_mask=edge_mask,
        degree=jnp.sum(edge_mask, axis=-1).astype(jnp.int32),
        lattice=jnp.asarray(crystal.lattice, jnp.float32),
        spacegroup=jnp.asarray(crystal.spacegroup, jnp.int32),
        truncated=nl.truncated,
    )


def build_orbit_graph(
    crystal: Crystal,
    site_ref: jnp.ndarray,
    num_ref: int,
    k: int = DEFAULT_K,
    cutoff: float = DEFAULT_CUTOFF,
    max_images: int = 2,
) -> CrystalGraph:
    """Orbit-reduced (quotient) K-nearest-neighbour graph of a batch of symmetric crystals: one node per orbit.

    ``crystal`` is a cell expanded from ``num_ref`` reference atoms by the operations of its space group
    (:func:`hgfn_jax.crystal.orbit.expand_orbits_full`) and ``site_ref [B, N]`` that expansion's
    ``ref_index`` (reference atom of every site, -1 for padding). Node r (r < num_ref) is the orbit of
    reference atom r, represented by its FIRST site (the identity image, i.e. the wrapped reference position;
    species and frac are that site's); it is real iff that site is present. Its K edges are the K nearest
    periodic neighbours of the representative among ALL sites and images (exactly the edges of the
    representative in :func:`build_graph`), and an edge's sender is the ORBIT of the neighbour site.
    ``multiplicity [B, num_ref]`` = number of sites of each orbit present in the cell.

    Why: the K-NN graph of a symmetric crystal is invariant under the group, so any message passing whose node
    inputs are symmetry invariant (no absolute position: ``frac_mode="none"``) gives every site of an orbit
    the same embedding as its representative, up to the choice among exactly equidistant neighbours. Then
    max pooling over the N sites equals max pooling over the orbit nodes, and a mean / softmax over sites
    equals the ``multiplicity``-weighted one over orbits: the GCN / MEGNet on this graph reproduce the
    full-cell encoders (tests/policies/test_orbit_encoders.py) at a cost of num_ref N images for the
    neighbour search and num_ref nodes for the network, instead of N^2 images and N nodes. With position
    features each orbit is seen at its reference atom's position (the policy's own choices); that is not the
    full-cell encoder, whose per-site position features are not symmetry invariant. Exactness also needs a
    complete cell (``crystal.overflow`` False: a truncated orbit breaks the symmetry) and exact special
    positions (merged orbit images lie within the merge tolerance of each other).

    A cell without symmetry information is covered too: ``site_ref = arange(N)`` (masked) and
    ``num_ref = N`` give :func:`build_graph` (up to ties). The search is
    :func:`hgfn_jax.crystal.geometry.center_neighbor_list_batch` (a 27-translation pass, the full
    ``max_images`` window only for the crystals whose certificate needs it; same neighbours up to ties).
    """
    crystal = ensure_batched(crystal)
    site_ref = jnp.asarray(site_ref, jnp.int32)
    if site_ref.ndim == 1:
        site_ref = site_ref[None]
    site_ref = jnp.where(crystal.mask, site_ref, -1)

    is_r = site_ref[:, None, :] == jnp.arange(num_ref, dtype=jnp.int32)[None, :, None]  # [B, T, N]
    present = jnp.any(is_r, axis=2)  # [B, T]
    rep = jnp.argmax(is_r, axis=2)  # [B, T] first site of each orbit
    take = jax.vmap(lambda x, i: x[i])
    nl = center_neighbor_list_batch(
        crystal.lattice, take(crystal.frac, rep), jnp.where(present, rep, -1), present, crystal.frac, crystal.mask,
        k, cutoff, max_images,
    )
    senders = take(site_ref, nl.idx)  # [B, T, K] orbit of the neighbour site (-1 only if masked)
    edge_mask = nl.nbr_mask & (senders >= 0)
    species = jnp.where(present, take(crystal.species, rep), 0).astype(jnp.int32)
    frac = jnp.asarray(take(crystal.frac, rep), jnp.float32)
    node_mask, truncated, mult = present, nl.truncated, jnp.sum(is_r, axis=2).astype(jnp.float32)
    senders = jnp.where(edge_mask, senders, 0).astype(jnp.int32)
    dist = jnp.where(edge_mask, nl.dist, 0.0).astype(jnp.float32)
    return CrystalGraph(
        species=species,
        frac=frac,
        node_mask=node_mask,
        senders=senders,
        dist=dist,
        edge_mask=edge_mask,
        degree=jnp.sum(edge_mask, axis=-1).astype(jnp.int32),
        lattice=jnp.asarray(crystal.lattice, jnp.float32),
        spacegroup=jnp.asarray(crystal.spacegroup, jnp.int32),
        truncated=truncated,
        multiplicity=mult,
    )


def as_graph(x, k: int, cutoff: float, max_images: int) -> CrystalGraph:
    """``x`` itself if it is already a ``CrystalGraph`` (e.g. cached by the caller), else ``build_graph(x, ...)``."""
    return x if isinstance(x, CrystalGraph) else build_graph(x, k, cutoff, max_images)

def gaussian_rbf(
    dist: jnp.ndarray, num: int = 32, cutoff: float = DEFAULT_CUTOFF, width: float | None = None
):
    """[..., num] Gaussian expansion exp(-(d - mu_m)^2 / width^2), mu_m = linspace(0, cutoff, num) (MEGNet's
    bond expansion, Chen et al. 2019; default width = centre spacing), times the smooth cosine envelope
    0.5 (cos(pi d / cutoff) + 1) for d < cutoff (0 beyond), so an edge fades out continuously at the cutoff.
    """
    dist = jnp.asarray(dist, jnp.float32)
    centers = jnp.linspace(0.0, cutoff, num, dtype=jnp.float32)  # [num]
    width = cutoff / max(num - 1, 1) if width is None else width
    rbf = jnp.exp(-(((dist[..., None] - centers) / width) ** 2))
    envelope = jnp.where(
        dist < cutoff, 0.5 * (jnp.cos(jnp.pi * jnp.minimum(dist, cutoff) / cutoff) + 1.0), 0.0
    )
    return rbf * envelope[..., None]


SELECT_GATHER_MAX_NODES = 8  # up to this many nodes (orbit graphs), gather by selects instead of a gather op


def gather_senders(node_values: jnp.ndarray, senders: jnp.ndarray) -> jnp.ndarray:
    """[B, N, K, F] value of the sending node of every edge, from node values [B, N, F], senders [B, N, K].

    For N <= ``SELECT_GATHER_MAX_NODES`` (the orbit-reduced graphs, N = T reference atoms) the gather is an
    unrolled chain of selects, which XLA fuses with its consumers (several times faster on CPU than a gather
    op on tiny operands); the values are identical."""
    b, n, k = senders.shape
    if node_values.shape[1] <= SELECT_GATHER_MAX_NODES:
        out = jnp.broadcast_to(node_values[:, None, None, 0, :], (b, n, k, node_values.shape[-1]))
        for j in range(1, node_values.shape[1]):
            out = jnp.where((senders == j)[..., None], node_values[:, None, None, j, :], out)
        return out
    flat = jnp.take_along_axis(node_values, senders.reshape(b, n * k, 1), axis=1)  # [B, N K, F]
    return flat.reshape(b, n, k, node_values.shape[-1])


def masked_max(x: jnp.ndarray, mask: jnp.ndarray, axis: int) -> jnp.ndarray:
    """Max of x over ``axis`` among entries where mask (broadcast over trailing feature dims); 0 if none."""
    m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    big = jnp.finfo(x.dtype).max
    out = jnp.max(jnp.where(m, x, -big), axis=axis)
    return jnp.where(jnp.any(m, axis=axis), out, 0.0)


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray, axis: int) -> jnp.ndarray:
    """Mean of x over ``axis`` among entries where mask (broadcast over trailing feature dims); 0 if none."""
    m = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)).astype(x.dtype)
    return jnp.sum(jnp.where(m > 0, x, 0.0), axis=axis) / jnp.maximum(jnp.sum(m, axis=axis), 1.0)


class FlatGraph(NamedTuple):
    """Flat jraph graph plus the masks and the graph index of every node/edge (all fixed-shape)."""

    graph: jraph.GraphsTuple  # nodes/edges: whatever was passed; senders/receivers [B N K] global int32
    node_mask: jnp.ndarray  # [B N] bool
    edge_mask: jnp.ndarray  # [B N K] bool
    node_graph: jnp.ndarray  # [B N] int32: graph index of each node
    edge_graph: jnp.ndarray  # [B N K] int32: graph index of each edge


def to_graphs_tuple(graph: CrystalGraph, nodes=None, edges=None, globals_=None) -> FlatGraph:
    """Flattens the dense graph into one ``jraph.GraphsTuple`` of B graphs with N nodes and N K edges each
    (padding included, masked). Edge (b, i, k) -> flat index (b N + i) K + k, receiver b N + i,
    sender b N + senders[b, i, k]. Masked edges point from and to their own receiver (a harmless self-loop
    that every consumer must mask)."""
    b, n, k = graph.senders.shape
    base = (jnp.arange(b, dtype=jnp.int32) * n)[:, None, None]  # [B, 1, 1]
    receivers = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[None, :, None], (b, n, k)) + base
    senders = jnp.where(graph.edge_mask, graph.senders + base, receivers)
    gt = jraph.GraphsTuple(
        nodes=nodes,
        edges=edges,
        senders=senders.reshape(-1),
        receivers=receivers.reshape(-1),
        n_node=jnp.full((b,), n, jnp.int32),
        n_edge=jnp.full((b,), n * k, jnp.int32),
        globals=globals_,
    )
    node_graph = jnp.repeat(jnp.arange(b, dtype=jnp.int32), n)
    edge_graph = jnp.repeat(jnp.arange(b, dtype=jnp.int32), n * k)
    return FlatGraph(gt, graph.node_mask.reshape(-1), graph.edge_mask.reshape(-1), node_graph, edge_graph)
