"""GCN state encoder with skip connections and max-pool readout (paper 000 sec. 4.1, eqs. 4-5; paper 002
sec. 10.3, eqs. 13-14).

Per layer l (paper 000 eqs. 4-5):

    H^l = ReLU(H^{l-1} + F^l(H^{l-1})),    F^l(H) = W^{l-1} ReLU(GCN(H, E)),

with the Kipf-Welling convolution on the K-nearest-neighbour graph with self-loops (paper 002 eqs. 13-14,
A~ = A + I, D~ its degree):

    GCN(H, E)_i = sum_{j in N(i) + {i}} g_ij * (H_j Theta) / sqrt((d_i + 1)(d_j + 1)) + b,

where d_i is the number of real neighbours of i (<= K) and g_ii = 1. The paper's GCN has no edge features;
with ``edge_gate=True`` (default) each edge is weighted per channel by g_ij = sigmoid(Dense(RBF(|r_ij|)))
so that the distances (the "edges ... radius cut-off 8.0 A" of sec. 4.1) enter the encoding; with
``edge_gate=False`` g_ij = 1 (the paper's plain GCN: distances only select the neighbours).

Input node features H^0 = Dense([element embedding of Z, position features]) (paper 000 sec. 4.1: "the
atom's atomic number and its fractional coordinates"). ``frac_mode``: "raw" = frac wrapped to [0, 1)
(paper verbatim), "fourier" (default) = [sin 2 pi m f, cos 2 pi m f], m = 1..``num_frequencies`` (same
information, but continuous across the cell boundary: f = 0.999 and 0.001 are neighbours), "none" = no
position feature (then the encoder is invariant to a global translation of the sites).

Readout (paper 000 sec. 4.1): max pooling over the real sites, then a two-layer MLP -> h_G [B, hidden].
An empty cell (no real site, the GFlowNet's s0) pools to zeros and gives the finite h_G = MLP(0).

Orbit-reduced graphs (:func:`hgfn_jax.policies.graph.build_orbit_graph`, the hierarchical policy's default):
the same module on a graph with one node per orbit of a symmetric cell. Max pooling needs no multiplicity
weights; with ``frac_mode="none"`` the output equals the full-cell one (tests/policies/test_orbit_encoders.py).

Invariances (tests/policies/test_graph_encoders.py): permutation of the sites and the amount of padding
always; a global translation of the fractional coordinates and the 2x1x1 supercell (same K neighbours) only
for ``frac_mode="none"`` (absolute positions are deliberately visible to the policy otherwise: the next
atom's coordinates are absolute); adding 1 to any fractional coordinate for "fourier" and "raw".
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from hgfn_jax.crystal.types import Crystal
from hgfn_jax.policies.embeddings import ElementEmbedding
from hgfn_jax.policies.graph import (
    DEFAULT_CUTOFF,
    DEFAULT_K,
    CrystalGraph,
    as_graph,
    gather_senders,
    gaussian_rbf,
    masked_max,
)


def position_features(frac: jnp.ndarray, mode: str = "fourier", num_frequencies: int = 2) -> jnp.ndarray:
    """[..., 3] fractional coordinates -> [..., P] node position features (see the module docstring).

    "raw": P = 3, frac mod 1; "fourier": P = 6 num_frequencies, [sin(2 pi m f), cos(2 pi m f)] for
    m = 1..num_frequencies; "none": P = 0.
    """
    frac = jnp.asarray(frac, jnp.float32)
    if mode == "raw":
        return frac - jnp.floor(frac)
    if mode == "fourier":
        m = jnp.arange(1, num_frequencies + 1, dtype=jnp.float32)  # [M]
        ang = 2.0 * jnp.pi * frac[..., :, None] * m  # [..., 3, M]
        feats = jnp.concatenate([jnp.sin(ang), jnp.cos(ang)], axis=-1)  # [..., 3, 2M]
        return feats.reshape(frac.shape[:-1] + (6 * num_frequencies,))
    if mode == "none":
        return jnp.zeros(frac.shape[:-1] + (0,), jnp.float32)
    raise ValueError(f"frac_mode must be 'raw', 'fourier' or 'none', got {mode!r}")


class NodeInput(nn.Module):
    """H^0 [B, N, hidden] = Dense([ElementEmbedding(Z), position_features(frac)]), zero on padding sites."""

    hidden: int
    frac_mode: str = "fourier"
    num_frequencies: int = 2

    @nn.compact
    def __call__(self, graph: CrystalGraph) -> jnp.ndarray:
        elem = ElementEmbedding(self.hidden, name="element")(graph.species)  # [B, N, H]
        pos = position_features(graph.frac, self.frac_mode, self.num_frequencies)  # [B, N, P]
        h = nn.Dense(self.hidden, name="input")(jnp.concatenate([elem, pos], axis=-1))
        return jnp.where(graph.node_mask[..., None], h, 0.0)


class GCNLayer(nn.Module):
    """One residual GCN layer, paper 000 eqs. 4-5: H' = ReLU(H + W ReLU(GCN(H, E)))."""

    hidden: int
    edge_gate: bool = True

    @nn.compact
    def __call__(self, h: jnp.ndarray, graph: CrystalGraph, rbf: jnp.ndarray) -> jnp.ndarray:
        """h [B, N, H], rbf [B, N, K, R] -> [B, N, H] (zero on padding sites)."""
        xw = nn.Dense(self.hidden, use_bias=False, name="theta")(h)  # [B, N, H]  H Theta
        inv_sqrt = 1.0 / jnp.sqrt(graph.degree.astype(jnp.float32) + 1.0)  # [B, N]  (d_i + 1)^-1/2
        msg = gather_senders(xw * inv_sqrt[..., None], graph.senders)  # [B, N, K, H]  H_j Theta / sqrt(d_j+1)
        if self.edge_gate:
            msg = msg * nn.sigmoid(nn.Dense(self.hidden, name="gate")(rbf))  # g_ij per channel
        agg = jnp.sum(jnp.where(graph.edge_mask[..., None], msg, 0.0), axis=2)  # [B, N, H]
        agg = agg + xw * inv_sqrt[..., None]  # self-loop (A + I)
        bias = self.param("bias", nn.initializers.zeros, (self.hidden,))
        conv = agg * inv_sqrt[..., None] + bias  # GCN(H, E)
        f = nn.Dense(self.hidden, use_bias=False, name="w")(nn.relu(conv))  # F^l(H) = W ReLU(GCN(H, E))
        out = nn.relu(h + f)
        return jnp.where(graph.node_mask[..., None], out, 0.0)


class GCNEncoder(nn.Module):
    """Crystal batch -> h_G [B, hidden] (paper 000 sec. 4.1). Accepts a ``Crystal`` with leading [B] or a
    prebuilt :class:`CrystalGraph` (used as built; ``cutoff`` then only sets the RBF range)."""

    hidden: int = 64
    layers: int = 3
    k: int = DEFAULT_K
    cutoff: float = DEFAULT_CUTOFF
    max_images: int = 2
    num_rbf: int = 32
    frac_mode: str = "fourier"
    num_frequencies: int = 2
    edge_gate: bool = True

    @nn.compact
    def __call__(self, crystal: Crystal | CrystalGraph) -> jnp.ndarray:
        graph = as_graph(crystal, self.k, self.cutoff, self.max_images)
        rbf = gaussian_rbf(graph.dist, self.num_rbf, self.cutoff)  # [B, N, K, R]
        node_input = NodeInput(self.hidden, self.frac_mode, self.num_frequencies, name="node_input")
        h = node_input(graph)  # [B, N, H]
        for layer in range(self.layers):
            h = GCNLayer(self.hidden, self.edge_gate, name=f"layer_{layer}")(h, graph, rbf)
        pooled = masked_max(h, graph.node_mask, axis=1)  # [B, H], 0 for an empty cell
        x = nn.relu(nn.Dense(self.hidden, name="readout_0")(pooled))
        return nn.Dense(self.hidden, name="readout_1")(x).astype(jnp.float32)  # [B, H]
