"""Padded radius graphs for the in-graph energy models (matgl's graph, fixed capacity, overflow flag).

matgl (``Structure2Graph`` -> ``pymatgen.optimization.neighbors.find_points_in_spheres``) builds the directed
graph of every ordered pair (i, j image) with 0 < |r_j + offset - r_i| <= cutoff: each bond appears in both
directions, a site's own periodic images are neighbours. Here row ``i`` holds the ``K`` nearest neighbours of
atom ``i`` (ascending distance; :func:`hgfn_jax.crystal.geometry.neighbor_list`), which is at once the set of
edges leaving ``i`` (``i -> nbr[i, k]``) and, by symmetry, the set of edges arriving at ``i``
(``nbr[i, k] -> i``, same length). Each model reads the rows the way that keeps its updates local:
MEGNet (node update = mean over the edges ARRIVING at an atom, as the checkpoints were trained: matgl <= 2.0.x,
``hgfn_jax.models.matgl_fix`` fix 1) holds edge ``src -> i`` in row ``i`` and needs no scatter; M3GNet (three-body
terms over the bonds LEAVING an atom) holds bond ``i -> j`` in row ``i`` and scatter-adds the node messages.

``vec[i, k]`` is the Cartesian vector from atom ``i`` to the neighbour image: matgl's bond vector
(``pos[dst] + offshift - pos[src]``) of the edge ``i -> nbr[i, k]``.

``overflow`` is True when the graph is not matgl's graph: some real atom has more than ``K`` neighbours within
the cutoff, or the periodic-image window may have missed one (``NeighborList.truncated``). Energies of such a
graph are never reported (the models return ``valid = False``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from hgfn_jax.crystal.geometry import neighbor_list
from hgfn_jax.crystal.types import Crystal


class RadiusGraph(NamedTuple):
    """Edges of one crystal within ``cutoff``, grouped by destination atom (leading [B] when vmapped)."""

    src: jnp.ndarray  # [N, K] int32: neighbour atom (edge src -> i, or bond i -> src); 0 where edge_mask is False
    dist: jnp.ndarray  # [N, K] float32: bond length (Angstrom), ascending along K; 0 where masked
    vec: jnp.ndarray  # [N, K, 3] float32: Cartesian vector i -> src image; 0 where masked
    edge_mask: jnp.ndarray  # [N, K] bool: a real edge
    node_mask: jnp.ndarray  # [N] bool: a real atom
    n_edges: jnp.ndarray  # [] int32: number of real edges (directed)
    overflow: jnp.ndarray  # [] bool: the capacity K or the image window was too small (graph incomplete)


def radius_graph(crystal: Crystal, cutoff: float, k: int, max_images: int = 2) -> RadiusGraph:
    """matgl's radius graph of one (unbatched) crystal with at most ``k`` incoming edges per atom.

    Args: ``cutoff`` in Angstrom (inclusive, as ``find_points_in_spheres``); ``k`` and ``max_images`` static.
    Cost ~ N^2 (2 max_images + 1)^3; ``max_images=2`` covers every cell whose LLL-reduced interplanar spacings
    are at least cutoff / 2.5 (others get ``overflow``): 1.6 A for MEGNet, 2 A for M3GNet. Among 1,000 random
    data-set cells only hcp Be (mp-87, spacing 1.96 A) is refused that way by M3GNet; ``max_images=3`` takes it.
    """
    nl = neighbor_list(crystal, k=k, cutoff=cutoff, max_images=max_images)
    node_mask = jnp.asarray(crystal.mask, bool)
    over_capacity = jnp.any(node_mask & (nl.count > k))
    edge_mask = nl.nbr_mask & node_mask[:, None]
    return RadiusGraph(
        src=nl.idx,
        dist=nl.dist,
        vec=nl.vec,
        edge_mask=edge_mask,
        node_mask=node_mask,
        n_edges=jnp.sum(edge_mask).astype(jnp.int32),
        overflow=over_capacity | nl.truncated,
    )


def masked_mean(x: jnp.ndarray, mask: jnp.ndarray, axes: tuple[int, ...]) -> jnp.ndarray:
    """Mean of ``x`` over ``axes`` where ``mask`` (broadcast on the trailing feature axis); 0 if none."""
    m = mask[..., None].astype(x.dtype)
    total = jnp.sum(x * m, axis=axes)
    count = jnp.sum(m, axis=axes)
    return total / jnp.maximum(count, 1.0)


class PackedEdges(NamedTuple):
    """The real edges of a batch of radius graphs packed into one flat list of fixed capacity ``E``.

    Nodes are the ``V = B * N`` padded atom slots (flat index ``b * N + i``). Edges keep the order of the
    padded table (crystal, row atom, rank), so ``row`` and ``graph`` are sorted (the unused tail points at the
    last atom of the last crystal, masked).
    """

    slot: jnp.ndarray  # [E] int32: index into the padded [B * N * K] edge table (last slot where masked)
    row: jnp.ndarray  # [E] int32: flat index of the row atom i (sorted ascending)
    nbr: jnp.ndarray  # [E] int32: flat index of the neighbour atom
    graph: jnp.ndarray  # [E] int32: crystal b of the edge
    dist: jnp.ndarray  # [E] float32
    edge_mask: jnp.ndarray  # [E] bool: a real edge (False for the unused tail of the capacity)
    fits: jnp.ndarray  # [B] bool: every real edge of crystal b is in the list (capacity not exceeded)


def pack_edges(graphs: RadiusGraph, capacity: int, keep: jnp.ndarray | None = None) -> PackedEdges:
    """Pack the real edges of a batched :class:`RadiusGraph` ([B, N, K] fields) into ``capacity`` slots.

    Edges are taken in crystal order: when the batch holds more real edges than ``capacity``, the crystals
    whose edges do not all fit get ``fits = False`` (and must be reported invalid); the others are exact.
    ``keep`` [B] (optional): only these crystals' edges are packed. The models pass the crystals they would
    refuse anyway (overflowed graph, unsupported element) as False, so a refused crystal never takes the room
    of its batch mates (its ``fits`` is then meaningless: it is invalid for its own reason).
    """
    b, n, k = graphs.src.shape
    if keep is not None:
        keep = jnp.asarray(keep, bool)
        graphs = graphs._replace(edge_mask=graphs.edge_mask & keep[:, None, None],
                                 n_edges=jnp.where(keep, graphs.n_edges, 0))
    flat_mask = graphs.edge_mask.reshape(-1)
    total = b * n * k
    (slot,) = jnp.nonzero(flat_mask, size=capacity, fill_value=total)
    edge_mask = slot < total
    slot = jnp.where(edge_mask, slot, total - 1).astype(jnp.int32)  # tail -> last slot: row/graph stay sorted
    crystal = slot // (n * k)
    row = slot // k
    nbr = crystal * n + graphs.src.reshape(-1)[slot]
    dist = graphs.dist.reshape(-1)[slot]
    n_edges = graphs.n_edges.astype(jnp.int32)
    fits = jnp.cumsum(n_edges) <= capacity
    return PackedEdges(
        slot=slot,
        row=row.astype(jnp.int32),
        nbr=jnp.where(edge_mask, nbr, 0).astype(jnp.int32),
        graph=crystal.astype(jnp.int32),
        dist=jnp.where(edge_mask, dist, 0.0),
        edge_mask=edge_mask,
        fits=fits,
    )


def segment_mean(x: jnp.ndarray, mask: jnp.ndarray, segments: jnp.ndarray, num_segments: int, sorted_: bool = False):
    """[S, D] mean of the rows of ``x`` [M, D] where ``mask`` [M], per segment; 0 for an empty segment."""
    m = mask.astype(x.dtype)
    total = jax.ops.segment_sum(x * m[:, None], segments, num_segments, indices_are_sorted=sorted_)
    count = jax.ops.segment_sum(m, segments, num_segments, indices_are_sorted=sorted_)
    return total / jnp.maximum(count, 1.0)[:, None]
