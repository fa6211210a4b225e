"""M3GNet-MP-2018.6.1-Eform in JAX on matgl's weights: formation energy per atom inside a jitted program.

Reproduces the fixed host model (``hgfn_jax.models.matgl``: matgl 4.1.2 with ``matgl_fix`` fixes 1 and
2, destination aggregation and the checkpoint's own-bond three-body term) on one padded Crystal.
Architecture (matgl ``M3GNet``, init args of the checkpoint's ``model.json``, checked on load):

- graph: every directed pair within 5 A (:func:`hgfn_jax.models.graph.radius_graph`); row ``i`` holds the
  bonds ``i -> j`` leaving atom ``i`` (``vec`` = matgl's bond vector); node input = element embedding (89
  elements, 64 wide); bond input = 9 spherical Bessel functions
  ``j_l(z_ln r / 5) sqrt(2 / 5^3) / |j_{l+1}(z_ln)|`` (l, n < 3, l-major) -> Linear + SiLU to 64;
- 3 blocks, each a three-body update then a graph convolution:
  three-body (checkpoint semantics, ``matgl_fix`` fix 2), for bond ``i -> j`` and the other bonds ``i -> k``
  within 5 A: ``m_ij = sum_k SBF(r_ij) * Y_l0(cos theta_jik) * sigmoid(W v_j + b) * f_c(r_ij) f_c(r_ik)``
  (9 = 3 x 3 features, Y_l0 real spherical harmonics, f_c the polynomial cutoff 1 - 10 t^3 + 15 t^4 - 6 t^5 of
  t = r / 5), ``e_ij += SiLU(m W_1) * sigmoid(m W_2)``; convolution (fix 1) with gated MLPs
  ``G(x) = SiLU-MLP(x) * sigmoid-gate-MLP(x)`` [192 -> 64 -> 64 -> 64]:
  ``e_ij += G_e([v_i, v_j, e_ij]) * (rbf_ij W_e)``, ``v_j += sum_{i -> j} G_v([v_i, v_j, e_ij]) * (rbf_ij W_v)``;
- readout: Set2Set over the atoms (3 LSTM layers, 3 iterations) -> MLP [128 -> 64 -> 64 -> 1] (SiLU, none
  last); E = out * 1.07266128 - 1.65459073 eV/atom (the checkpoint's ``Normalizer``).

The three-body angular sums ``S_l(i -> j) = sum_{k != j} f_c(r_ik) Y_l0(cos theta_jik)`` depend on geometry
only, so they are formed once ([N, K, K] pairs per crystal) and reused by the three blocks.

``energy(params, crystal) -> (e_form_per_atom, valid)``: pure, jit / vmap-able; ``valid`` False (energy NaN)
exactly as for :mod:`hgfn_jax.models.megnet` (padding overflow, unsupported element, no atom, no bond,
neighbour capacity or image window exceeded, non-finite). Default ``k = 80``: the largest count within 5 A
among 3,000 random data-set cells of <= 40 sites is 80 (median 33).

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
from hgfn_jax.models.graph import RadiusGraph, pack_edges, radius_graph
from hgfn_jax.models.layers import dense, mlp, segment_set2set, set2set

NAME = "M3GNet-MP-2018.6.1-Eform"
CUTOFF = 5.0
THREEBODY_CUTOFF = 5.0
DEFAULT_K = 80
EDGES_PER_SITE = 48  # energy_batch: packed bond capacity per padded site (data set: median 33 within 5 A)
N_BLOCKS = 3
MAX_N = 3
MAX_L = 3
S2S_ITERS = 3
S2S_LAYERS = 3
_COS_EPS = 1e-7  # matgl's clamp of cos(theta) to [-1 + eps, 1 - eps]
# Real spherical harmonics Y_l^0(cos theta), l = 0, 1, 2 (matgl's sympy expressions).
_Y00 = 0.5 * np.sqrt(1.0 / np.pi)
_Y10 = 0.5 * np.sqrt(3.0 / np.pi)
_Y20 = 0.25 * np.sqrt(5.0 / np.pi)

_EXPECTED_CONFIG = {
    "@class": "M3GNet",
    "dim_node_embedding": 64,
    "dim_edge_embedding": 64,
    "units": 64,
    "max_n": MAX_N,
    "max_l": MAX_L,
    "nblocks": N_BLOCKS,
    "rbf_type": "SphericalBessel",
    "is_intensive": True,
    "readout_type": "set2set",
    "task_type": "regression",
    "cutoff": CUTOFF,
    "threebody_cutoff": THREEBODY_CUTOFF,
    "ntargets": 1,
    "use_smooth": False,
    "use_phi": False,
    "niters_set2set": S2S_ITERS,
    "nlayers_set2set": S2S_LAYERS,
    "field": "node_feat",
    "activation_type": "swish",
    "include_state": False,
    "dim_state_feats": None,
}


def _gated(arrays: dict, prefix: str, n_layers: int, bias: bool = True) -> dict:
    return {
        "layers": [convert.linear(arrays, f"{prefix}.layers.{2 * i}", bias) for i in range(n_layers)],
        "gates": [convert.linear(arrays, f"{prefix}.gates.{2 * i}", bias) for i in range(n_layers)],
    }


def params_from_arrays(arrays: dict[str, np.ndarray]) -> dict:
    """The parameter PyTree of :func:`energy` from :func:`hgfn_jax.models.convert.checkpoint_arrays`."""
    convert.check_config(arrays, _EXPECTED_CONFIG, NAME)
    a = arrays
    params = {
        "target_mean": np.float32(a["_meta.target_mean"]),
        "target_std": np.float32(a["_meta.target_std"]),
        **shared_params(a),
        "readout": convert.lstm(a, "readout.lstm", S2S_LAYERS),
        "final": convert.mlp(a, "final_layer.layers", 3),
    }
    return jax.tree_util.tree_map(jnp.asarray, params)


def shared_params(a: dict[str, np.ndarray]) -> dict:
    """The parts every M3GNet checkpoint (Eform, PES) has alike: element index, bases, embeddings, blocks."""
    blocks = []
    for b in range(N_BLOCKS):
        tb = f"three_body_interactions.{b}"
        conv = f"graph_layers.{b}.conv"
        blocks.append(
            {
                "atom": convert.linear(a, f"{tb}.update_network_atom.layers.0"),
                "bond": _gated(a, f"{tb}.update_network_bond", 1, bias=False),
                "edge": _gated(a, f"{conv}.edge_update_func", 3),
                "edge_weight": convert.linear(a, f"{conv}.edge_weight_func", bias=False),
                "node": _gated(a, f"{conv}.node_update_func", 3),
                "node_weight": convert.linear(a, f"{conv}.node_weight_func", bias=False),
            }
        )
    return {
        "z_to_index": a["_meta.z_to_index"].astype(np.int32),
        "rbf_roots": a["_meta.rbf_roots"],
        "rbf_inv_norm": a["_meta.rbf_inv_norm"],
        "sbf_roots": a["_meta.sbf_roots"],
        "sbf_inv_norm": a["_meta.sbf_inv_norm"],
        "node_embedding": a["embedding.layer_node_embedding.weight"],
        "edge_embedding": convert.linear(a, "embedding.layer_edge_embedding.layers.0"),
        "blocks": blocks,
    }


def conv_gated_packed(p: dict, v: jnp.ndarray, e: jnp.ndarray, src: jnp.ndarray, dst: jnp.ndarray) -> jnp.ndarray:
    """Gated MLP of ``[v_src, v_dst, e]`` over a packed bond list (``v`` [V, D], ``e`` [E, D'], ``src`` / ``dst``
    [E]) with the first layer split per atom: ``v @ W`` once per atom, then gathered (the concatenation's
    matmul over every bond would be E x 2D x H larger)."""
    d = v.shape[-1]
    first = {}
    for name in ("layers", "gates"):
        w, bias = p[name][0]["w"], p[name][0]["b"]
        first[name] = (v @ w[:d])[src] + (v @ w[d : 2 * d])[dst] + e @ w[2 * d :] + bias
    return _gated_mlp(p, None, first=first)


def load_params(model_dir: str | Path | None = None) -> dict:
    """Parameters of M3GNet-MP-2018.6.1-Eform (converted once, cached on disk and per process)."""
    return convert.cached_params(NAME, None if model_dir is None else str(model_dir), params_from_arrays)


def _spherical_bessel(r: jnp.ndarray, roots: jnp.ndarray, inv_norm: jnp.ndarray, cutoff: float) -> jnp.ndarray:
    """[..., 9]: j_l(root_ln * min(r, cutoff) / cutoff) * inv_norm_ln, l-major (matgl ``_call_sbf``); r > 0."""
    x = jnp.minimum(r, cutoff)[..., None] / cutoff
    out = []
    for l in range(MAX_L):
        z = x * roots[l]
        s, c = jnp.sin(z), jnp.cos(z)
        if l == 0:
            j = s / z
        elif l == 1:
            j = -c / z + s / (z * z)
        else:
            j = (-1.0 / z + 3.0 / (z * z * z)) * s - 3.0 * c / (z * z)
        out.append(j * inv_norm[l])
    return jnp.concatenate(out, axis=-1)


def _polynomial_cutoff(r: jnp.ndarray, cutoff: float) -> jnp.ndarray:
    t = r / cutoff
    t3 = t * t * t
    return jnp.where(r <= cutoff, 1.0 - 10.0 * t3 + 15.0 * t3 * t - 6.0 * t3 * t * t, 0.0)


def _gated_mlp(p: dict, x: jnp.ndarray | None, first: dict | None = None, activate_last: bool = True) -> jnp.ndarray:
    """matgl ``GatedMLP``: SiLU-MLP(x) * gate-MLP(x), the gate's last activation a sigmoid.

    ``first``: optional precomputed first-layer pre-activations ``{"layers": ..., "gates": ...}`` (replace x).
    ``activate_last=False`` (the PES per-atom readout): no SiLU after the last layer of the value stack.
    """

    def stack(name: str, last) -> jnp.ndarray:
        layers = p[name]
        h = first[name] if first is not None else dense(layers[0], x)
        for layer in layers[1:]:
            h = dense(layer, jax.nn.silu(h))
        return last(h)

    return stack("layers", jax.nn.silu if activate_last else (lambda h: h)) * stack("gates", jax.nn.sigmoid)


def _first_layer_split(p: dict, v: jnp.ndarray, e: jnp.ndarray, nbr: jnp.ndarray) -> jnp.ndarray:
    """[v_i, v_j, e_ij] @ W + b for the bonds i -> nbr[i, k] in row i, the atom terms formed once per atom."""
    d = v.shape[-1]
    w, b = p["w"], p["b"]
    return (v @ w[:d])[:, None, :] + (v @ w[d : 2 * d])[nbr] + e @ w[2 * d :] + b


def _conv_gated(p: dict, v: jnp.ndarray, e: jnp.ndarray, nbr: jnp.ndarray) -> jnp.ndarray:
    first = {name: _first_layer_split(p[name][0], v, e, nbr) for name in ("layers", "gates")}
    return _gated_mlp(p, None, first=first)


def _angular_sums(g: RadiusGraph, r: jnp.ndarray, fc: jnp.ndarray) -> jnp.ndarray:
    """[N, K, 3]: S_l(i -> j) = sum_{k != j} f_c(r_ik) Y_l0(cos theta_jik) over the other bonds of row i."""
    kk = g.src.shape[1]
    unit = g.vec / r[..., None]
    cos = jnp.clip(jnp.einsum("nkd,nmd->nkm", unit, unit), -1.0 + _COS_EPS, 1.0 - _COS_EPS)  # [N, K, K]
    w = jnp.where(~jnp.eye(kk, dtype=bool), fc[:, None, :], 0.0)  # neighbour bond i -> k != j
    s0 = jnp.sum(w, axis=-1) * _Y00
    s1 = jnp.sum(w * cos, axis=-1) * _Y10
    s2 = jnp.sum(w * (3.0 * cos * cos - 1.0), axis=-1) * _Y20
    return jnp.stack([s0, s1, s2], axis=-1)


def _geometry(crystal: Crystal, k: int, max_images: int):
    """Radius graph, safe bond lengths (masked slots: cutoff / 2) and three-body cutoff weights of one crystal."""
    g = radius_graph(crystal, CUTOFF, k, max_images)
    r = jnp.where(g.edge_mask, g.dist, 0.5 * CUTOFF)  # masked slots get a harmless length (no 0/0)
    fc = jnp.where(g.edge_mask, _polynomial_cutoff(r, THREEBODY_CUTOFF), 0.0)  # [N, K]
    return g, r, fc


def energy(params: dict, crystal: Crystal, k: int = DEFAULT_K, max_images: int = 2):
    """(formation energy per atom in eV/atom [], valid []) of one unbatched crystal; NaN where not valid.

    ``k`` (bonds per atom) and ``max_images`` are static; vmap over a batched Crystal.
    """
    g, r, fc = _geometry(crystal, k, max_images)
    n, kk = g.src.shape
    z = jnp.asarray(crystal.species, jnp.int32)
    index = params["z_to_index"][jnp.clip(z, 0, 118)]
    supported = jnp.all(~g.node_mask | (index >= 0))
    nm, em = g.node_mask, g.edge_mask
    nbr = g.src  # row i: bonds i -> nbr[i, k]

    # Three-body geometry, shared by the blocks: SBF(r_ij) f_c(r_ij) * sum_k f_c(r_ik) Y_l0(cos theta_jik).
    angular = jnp.repeat(_angular_sums(g, r, fc), MAX_N, axis=-1)  # [N, K, 9], l-major
    sbf = _spherical_bessel(r, params["sbf_roots"], params["sbf_inv_norm"], CUTOFF)
    three_body = sbf * angular * fc[..., None]  # [N, K, 9]

    rbf = _spherical_bessel(r, params["rbf_roots"], params["rbf_inv_norm"], CUTOFF)  # [N, K, 9]
    v = params["node_embedding"][jnp.maximum(index, 0)]  # [N, 64]
    e = jax.nn.silu(dense(params["edge_embedding"], rbf))  # [N, K, 64]
    emf = em[..., None].astype(e.dtype)
    for block in params["blocks"]:
        atom = jax.nn.sigmoid(dense(block["atom"], v))  # [N, 9]
        m = three_body * atom[nbr]  # end atom j of bond i -> j
        e = e + _gated_mlp(block["bond"], m)
        e = e + _conv_gated(block["edge"], v, e, nbr) * (rbf @ block["edge_weight"]["w"])
        mess = _conv_gated(block["node"], v, e, nbr) * (rbf @ block["node_weight"]["w"]) * emf
        v = v + jax.ops.segment_sum(mess.reshape(n * kk, -1), nbr.reshape(-1), num_segments=n)

    pooled = set2set(params["readout"], v, nm, S2S_ITERS)
    out = mlp(params["final"], pooled, jax.nn.silu, False)[0]
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
    """:func:`energy` of a batch ([B] leading axis), the real bonds packed into one list of ``edge_capacity``.

    Same numbers as ``vmap(energy)``; the three-body angular sums are formed per crystal on the padded rows,
    everything per bond runs on the packed real bonds only. Default capacity ``B * N * EDGES_PER_SITE``.
    Crystals whose bonds do not fit (in batch order) get ``valid = False``; crystals refused for another
    reason take no room (their bonds are not packed).
    """
    b, n = crystals.species.shape
    capacity = b * n * EDGES_PER_SITE if edge_capacity is None else int(edge_capacity)

    def per_crystal(c):
        g, r, fc = _geometry(c, k, max_images)
        return g, _angular_sums(g, r, fc)

    graphs, angular = jax.vmap(per_crystal)(crystals)
    nv = b * n
    node_graph = jnp.arange(nv, dtype=jnp.int32) // n
    nm = graphs.node_mask.reshape(-1)
    z = jnp.asarray(crystals.species, jnp.int32).reshape(-1)
    index = params["z_to_index"][jnp.clip(z, 0, 118)]
    supported = jnp.all((~nm | (index >= 0)).reshape(b, n), axis=1)
    pe = pack_edges(graphs, capacity, keep=supported & ~graphs.overflow & ~jnp.asarray(crystals.overflow, bool))
    em = pe.edge_mask
    src, dst = pe.row, pe.nbr  # bond src -> dst held in the row of src (sorted by src)

    r = jnp.where(em, pe.dist, 0.5 * CUTOFF)
    fc = jnp.where(em, _polynomial_cutoff(r, THREEBODY_CUTOFF), 0.0)
    ang = jnp.repeat(angular.reshape(b * n * graphs.src.shape[-1], 3)[pe.slot], MAX_N, axis=-1)  # [E, 9]
    three_body = _spherical_bessel(r, params["sbf_roots"], params["sbf_inv_norm"], CUTOFF) * ang * fc[:, None]
    rbf = _spherical_bessel(r, params["rbf_roots"], params["rbf_inv_norm"], CUTOFF)  # [E, 9]
    v = params["node_embedding"][jnp.maximum(index, 0)]  # [V, 64]
    e = jax.nn.silu(dense(params["edge_embedding"], rbf))  # [E, 64]
    emf = em[:, None].astype(e.dtype)

    def conv_gated(p, v, e):
        return conv_gated_packed(p, v, e, src, dst)

    for block in params["blocks"]:
        atom = jax.nn.sigmoid(dense(block["atom"], v))  # [V, 9]
        e = e + _gated_mlp(block["bond"], three_body * atom[dst])
        e = e + conv_gated(block["edge"], v, e) * (rbf @ block["edge_weight"]["w"])
        mess = conv_gated(block["node"], v, e) * (rbf @ block["node_weight"]["w"]) * emf
        v = v + jax.ops.segment_sum(mess, dst, num_segments=nv)

    pooled = segment_set2set(params["readout"], v, nm, node_graph, b, S2S_ITERS)
    out = mlp(params["final"], pooled, jax.nn.silu, False)[:, 0]
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
