"""MEGNet-MP-2018.6.1-Eform in JAX on matgl's weights: formation energy per atom inside a jitted program.

Reproduces the fixed host model (``hgfn_jax.models.matgl``, i.e. matgl 4.1.2 with the destination
aggregation of ``hgfn_jax.models.matgl_fix``, fix 1) on one padded :class:`~hgfn_jax.crystal.types.Crystal`.
Architecture (matgl ``MEGNet``, init args in the checkpoint's ``model.json``, checked on load):

- graph: every directed pair within 4 A (:func:`hgfn_jax.models.graph.radius_graph`, ``K`` incoming edges
  per atom at most); node input = embedding of the element (89 elements, ``matgl.config.DEFAULT_ELEMENTS``),
  edge input = 100 Gaussians exp(-0.5 (d - mu_k)^2), mu_k = linspace(0, 5, 100) (stored centres), state = [0, 0];
- encoders: MLP [100|16|2 -> 64 -> 32] with softplus2 (softplus - log 2) after every layer;
- 3 MEGNet blocks (block 0 without, blocks 1-2 with pre-dense MLPs [32 -> 64 -> 32]); in each, for the edge
  src -> dst: e' = phi_e([v_src, v_dst, e, u]); v'_i = phi_v([v_i, mean_{edges into i} e', u]);
  u' = phi_u([u, mean_edges e', mean_atoms v']) (phi: [.. -> 64 -> 64 -> 32] softplus2 MLPs), then residuals
  e += e', v += v', u += u' (around the pre-dense layers too);
- readout: Set2Set over atoms and over edges (1 LSTM layer, 2 iterations each), [node 64, edge 64, u 32] ->
  MLP [160 -> 32 -> 16 -> 1] (softplus2 between, none last); E = out * 1.07266128 - 1.65459073 eV/atom
  (the checkpoint's ``Normalizer``, read from ``model.pt``).

``energy(params, crystal)`` is pure (jit / vmap / grad-able) and returns ``(e_form_per_atom, valid)``. ``valid``
is False, and the energy NaN, wherever the host model would refuse or this graph would differ from matgl's:
the crystal overflowed its padding, an element outside the 89, no real atom, no edge at all (host:
``no_bonds``), more than ``k`` neighbours within 4 A for some atom or a too-thin cell for the image window
(``RadiusGraph.overflow``), or a non-finite result. Default ``k = 48``: the largest count within 4 A among
3,000 random data-set cells of <= 40 sites is 44 (median 17).

``energy_batch(params, crystals[B], edge_capacity=None)`` gives the same numbers for a batch with the real
edges of all crystals packed into one list (:func:`hgfn_jax.models.graph.pack_edges`; default capacity
``B * N * EDGES_PER_SITE``): the per-edge layers then run on real edges only, not on N * K padded slots per
crystal (several times faster for data-like batches). Crystals whose edges do not fit are refused (valid False).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal.types import Crystal
from hgfn_jax.models import convert
from hgfn_jax.models.graph import masked_mean, pack_edges, radius_graph, segment_mean
from hgfn_jax.models.layers import mlp, segment_set2set, set2set, softplus2

NAME = "MEGNet-MP-2018.6.1-Eform"
CUTOFF = 4.0
GAUSS_WIDTH = 0.5
DEFAULT_K = 48
EDGES_PER_SITE = 24  # energy_batch: packed edge capacity per padded site (data set: median 17 within 4 A)
N_BLOCKS = 3
S2S_ITERS = 2

_EXPECTED_CONFIG = {
    "dim_node_embedding": 16,
    "dim_edge_embedding": 100,
    "dim_state_embedding": 2,
    "ntypes_state": None,
    "nblocks": N_BLOCKS,
    "hidden_layer_sizes_input": [64, 32],
    "hidden_layer_sizes_conv": [64, 64, 32],
    "hidden_layer_sizes_output": [32, 16],
    "nlayers_set2set": 1,
    "niters_set2set": S2S_ITERS,
    "activation_type": "softplus2",
    "is_classification": False,
    "include_state": True,
    "cutoff": CUTOFF,
    "gauss_width": GAUSS_WIDTH,
    "bond_expansion": None,
    "@class": "MEGNet",
}


def params_from_arrays(arrays: dict[str, np.ndarray]) -> dict:
    """The parameter PyTree of :func:`energy` from :func:`hgfn_jax.models.convert.checkpoint_arrays`."""
    convert.check_config(arrays, _EXPECTED_CONFIG, NAME)
    a = arrays
    blocks = []
    for b in range(N_BLOCKS):
        pre = f"blocks.{b}"
        block = {
            "edge": convert.mlp(a, f"{pre}.conv.edge_func.layers", 3),
            "node": convert.mlp(a, f"{pre}.conv.node_func.layers", 3),
            "state": convert.mlp(a, f"{pre}.conv.state_func.layers", 3),
        }
        if b > 0:
            block["pre_edge"] = convert.mlp(a, f"{pre}.edge_func.layers", 2)
            block["pre_node"] = convert.mlp(a, f"{pre}.node_func.layers", 2)
            block["pre_state"] = convert.mlp(a, f"{pre}.state_func.layers", 2)
        blocks.append(block)
    params = {
        "z_to_index": a["_meta.z_to_index"].astype(np.int32),
        "target_mean": np.float32(a["_meta.target_mean"]),
        "target_std": np.float32(a["_meta.target_std"]),
        "centers": a["bond_expansion.rbf.centers"],
        "node_embedding": a["embedding.layer_node_embedding.weight"],
        "edge_encoder": convert.mlp(a, "edge_encoder.layers", 2),
        "node_encoder": convert.mlp(a, "node_encoder.layers", 2),
        "state_encoder": convert.mlp(a, "state_encoder.layers", 2),
        "blocks": blocks,
        "node_s2s": convert.lstm(a, "node_s2s.lstm", 1),
        "edge_s2s": convert.lstm(a, "edge_s2s.lstm", 1),
        "output": convert.mlp(a, "output_proj.layers", 3),
    }
    return jax.tree_util.tree_map(jnp.asarray, params)


def load_params(model_dir: str | Path | None = None) -> dict:
    """Parameters of MEGNet-MP-2018.6.1-Eform (converted once, cached on disk and per process)."""
    return convert.cached_params(NAME, None if model_dir is None else str(model_dir), params_from_arrays)


def _edge_update(layers: list, v: jnp.ndarray, e: jnp.ndarray, u: jnp.ndarray, src: jnp.ndarray) -> jnp.ndarray:
    """phi_e([v_src, v_dst, e, u]) for the edges src -> i held in row i (destination).

    The first layer is applied blockwise, [v_src, v_dst, e, u] @ W = (v @ W_s)[src] + (v @ W_d)_i + e @ W_e
    + u @ W_u: the atom and state terms are computed once per atom instead of once per edge (same sum).
    """
    d = v.shape[-1]
    w, b = layers[0]["w"], layers[0]["b"]
    at_src = (v @ w[:d])[src]  # [N, K, H]
    at_dst = (v @ w[d : 2 * d])[:, None, :]  # [N, 1, H]
    per_edge = e @ w[2 * d : 3 * d]  # [N, K, H]
    shared = u @ w[3 * d :] + b  # [H]
    h = softplus2(at_src + at_dst + per_edge + shared)
    return mlp(layers[1:], h, softplus2, True)


def _pre_block(block: dict, e: jnp.ndarray, v: jnp.ndarray, u: jnp.ndarray):
    """The dense layers before a MEGNet block's updates (absent in the first block); same on padded and packed
    edges."""
    if "pre_edge" not in block:
        return e, v, u
    return (mlp(block["pre_edge"], e, softplus2, True), mlp(block["pre_node"], v, softplus2, True),
            mlp(block["pre_state"], u, softplus2, True))


def energy(params: dict, crystal: Crystal, k: int = DEFAULT_K, max_images: int = 2):
    """(formation energy per atom in eV/atom [], valid []) of one unbatched crystal; NaN where not valid.

    ``k`` (incoming edges per atom) and ``max_images`` are static; vmap over a batched Crystal.
    """
    g = radius_graph(crystal, CUTOFF, k, max_images)
    z = jnp.asarray(crystal.species, jnp.int32)
    index = params["z_to_index"][jnp.clip(z, 0, 118)]
    supported = jnp.all(~g.node_mask | (index >= 0))
    nodes = params["node_embedding"][jnp.maximum(index, 0)]  # [N, 16]
    nm, em = g.node_mask, g.edge_mask

    rbf = jnp.exp(-GAUSS_WIDTH * jnp.square(g.dist[..., None] - params["centers"]))  # [N, K, 100]
    e = mlp(params["edge_encoder"], rbf, softplus2, True)  # [N, K, 32]
    v = mlp(params["node_encoder"], nodes, softplus2, True)  # [N, 32]
    u = mlp(params["state_encoder"], jnp.zeros((2,), jnp.float32), softplus2, True)  # [32]

    n, kk = g.src.shape
    for block in params["blocks"]:
        e0, v0, u0 = e, v, u
        e, v, u = _pre_block(block, e, v, u)
        e = _edge_update(block["edge"], v, e, u, g.src)
        ve = masked_mean(e, em, axes=(1,))  # [N, D]: mean over the edges arriving at each atom
        u_n = jnp.broadcast_to(u, (n, u.shape[-1]))
        v = mlp(block["node"], jnp.concatenate([v, ve, u_n], axis=-1), softplus2, True)
        u_in = jnp.concatenate([u, masked_mean(e, em, axes=(0, 1)), masked_mean(v, nm, axes=(0,))])
        u = mlp(block["state"], u_in, softplus2, True)
        e, v, u = e + e0, v + v0, u + u0

    node_vec = set2set(params["node_s2s"], v, nm, S2S_ITERS)
    edge_vec = set2set(params["edge_s2s"], e.reshape(n * kk, -1), em.reshape(-1), S2S_ITERS)
    out = mlp(params["output"], jnp.concatenate([node_vec, edge_vec, u]), softplus2, False)[0]
    value = out * params["target_std"] + params["target_mean"]
    valid = (
        ~jnp.asarray(crystal.overflow, bool)
        & ~g.overflow
        & supported
        & jnp.any(nm)
        & (g.n_edges > 0)
        & jnp.isfinite(value)
    )
    return jnp.where(valid, value, jnp.nan), valid


def energy_batch(
    params: dict,
    crystals: Crystal,
    edge_capacity: int | None = None,
    k: int = DEFAULT_K,
    max_images: int = 2,
):
    """:func:`energy` of a batch ([B] leading axis), the real edges packed into one list of ``edge_capacity``.

    Same numbers as ``vmap(energy)`` (same graph, same layers) at a fraction of the cost: the per-edge layers
    run on the real edges only instead of N * K padded slots per crystal. Default capacity
    ``B * N * EDGES_PER_SITE``. Crystals whose edges do not fit (in batch order) get ``valid = False``;
    crystals refused for another reason take no room (their edges are not packed).
    """
    b, n = crystals.species.shape
    capacity = b * n * EDGES_PER_SITE if edge_capacity is None else int(edge_capacity)
    graphs = jax.vmap(lambda c: radius_graph(c, CUTOFF, k, max_images))(crystals)
    nv = b * n
    node_graph = jnp.arange(nv, dtype=jnp.int32) // n
    nm = graphs.node_mask.reshape(-1)
    z = jnp.asarray(crystals.species, jnp.int32).reshape(-1)
    index = params["z_to_index"][jnp.clip(z, 0, 118)]
    supported = jnp.all((~nm | (index >= 0)).reshape(b, n), axis=1)
    pe = pack_edges(graphs, capacity, keep=supported & ~graphs.overflow & ~jnp.asarray(crystals.overflow, bool))
    em = pe.edge_mask
    src, dst = pe.nbr, pe.row  # edge src -> dst held in the row of dst (sorted by dst)

    rbf = jnp.exp(-GAUSS_WIDTH * jnp.square(pe.dist[:, None] - params["centers"]))  # [E, 100]
    e = mlp(params["edge_encoder"], rbf, softplus2, True)  # [E, 32]
    v = mlp(params["node_encoder"], params["node_embedding"][jnp.maximum(index, 0)], softplus2, True)  # [V, 32]
    u = mlp(params["state_encoder"], jnp.zeros((b, 2), jnp.float32), softplus2, True)  # [B, 32]
    for block in params["blocks"]:
        e0, v0, u0 = e, v, u
        e, v, u = _pre_block(block, e, v, u)
        d = v.shape[-1]
        w0, b0 = block["edge"][0]["w"], block["edge"][0]["b"]
        h = (v @ w0[:d])[src] + (v @ w0[d : 2 * d])[dst] + e @ w0[2 * d : 3 * d] + (u @ w0[3 * d :] + b0)[pe.graph]
        e = mlp(block["edge"][1:], softplus2(h), softplus2, True)
        ve = segment_mean(e, em, dst, nv, sorted_=True)
        v = mlp(block["node"], jnp.concatenate([v, ve, u[node_graph]], axis=-1), softplus2, True)
        u_in = jnp.concatenate(
            [u, segment_mean(e, em, pe.graph, b, sorted_=True), segment_mean(v, nm, node_graph, b, sorted_=True)],
            axis=-1,
        )
        u = mlp(block["state"], u_in, softplus2, True)
        e, v, u = e + e0, v + v0, u + u0

    node_vec = segment_set2set(params["node_s2s"], v, nm, node_graph, b, S2S_ITERS)
    edge_vec = segment_set2set(params["edge_s2s"], e, em, pe.graph, b, S2S_ITERS)
    out = mlp(params["output"], jnp.concatenate([node_vec, edge_vec, u], axis=-1), softplus2, False)[:, 0]
    value = out * params["target_std"] + params["target_mean"]
    valid = (
        ~jnp.asarray(crystals.overflow, bool)
        & ~graphs.overflow
        & supported
        & jnp.any(graphs.node_mask, axis=1)
        & (graphs.n_edges > 0)
        & pe.fits
        & jnp.isfinite(value)
    )
    return jnp.where(valid, value, jnp.nan), valid
