"""MEGNet state encoder (paper 002 sec. 4.3 and App. 10.2; Chen et al. 2019, "Graph Networks as a Universal
Machine Learning Framework for Molecules and Crystals").

Graph (App. 10.1): the K-nearest-neighbour crystal graph of :mod:`hgfn_jax.policies.graph`, node input =
[element embedding of Z, position features of the fractional coordinates] (as the GCN), edge input = Gaussian
RBF of the bond length, global state u = zeros [2] (matgl's default state attribute; ``global_from_lattice``
uses the 9 lattice features of paper 000 eq. 6 instead).

Each of the ``layers`` MEGNet blocks (paper 002 eqs. 10-12, Chen et al. eqs. 1-6), on the flat
``jraph.GraphsTuple`` with ``jraph.segment_sum`` (padding nodes and edges masked out of every sum/mean):

    e'_k = phi_e([v_{s_k}, v_{r_k}, e_k, u])                                 (bond update, eq. 10)
    v'_i = phi_v([mean_{k: r_k = i} e'_k, v_i, u])                            (atom update, eqs. 11-12)
    u'   = phi_u([mean_k e'_k, mean_i v'_i, u])                               (state update)

with 2-layer softplus MLPs phi (MEGNet's ``[64, 32]`` pre-block dense layers folded into one width
``hidden``) and residual connections e += e', v += v', u += u' (as in MEGNet). Readout (Chen et al.):
Set2Set over the real nodes and over the real edges (``readout="set2set"``, 3 steps) or masked means
(``readout="mean"``), concatenated with u, then a 2-layer MLP -> [B, hidden].

An empty cell (s0) has no real node or edge: every pooled term is 0 and the output stays finite.
Invariances: as the GCN (see :mod:`hgfn_jax.policies.gcn`): site permutation and padding always; global
translation and the 2x1x1 supercell (same K neighbours) only for ``frac_mode="none"`` (means and Set2Set
attention are unchanged when every node and edge is duplicated).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from hgfn_jax.crystal.types import Crystal
from hgfn_jax.policies.embeddings import lattice_features
from hgfn_jax.policies.gcn import NodeInput
from hgfn_jax.policies.graph import (
    DEFAULT_CUTOFF,
    DEFAULT_K,
    CrystalGraph,
    as_graph,
    gaussian_rbf,
    masked_max,
    masked_mean,
    to_graphs_tuple,
)


def shifted_softplus(x: jnp.ndarray) -> jnp.ndarray:
    """softplus(x) - log 2 (MEGNet's ``softplus2``: 0 at 0)."""
    return jax.nn.softplus(x) - jnp.log(2.0)


class _MLP(nn.Module):
    """Dense-softplus2-Dense-softplus2 (MEGNet's update functions phi)."""

    hidden: int

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = shifted_softplus(nn.Dense(self.hidden)(x))
        return shifted_softplus(nn.Dense(self.hidden)(x))


def _segment_mean(data: jnp.ndarray, mask: jnp.ndarray, segment_ids: jnp.ndarray, num_segments: int):
    """Masked mean of rows of ``data`` [E, F] per segment -> [S, F] (0 for segments with no real row)."""
    total = jraph.segment_sum(jnp.where(mask[:, None], data, 0.0), segment_ids, num_segments)
    count = jraph.segment_sum(mask.astype(data.dtype), segment_ids, num_segments)
    return total / jnp.maximum(count, 1.0)[:, None]


class MEGNetBlock(nn.Module):
    """One MEGNet block on flat arrays: nodes [B N, H], edges [B N K, H], globals [B, H]."""

    hidden: int

    @nn.compact
    def __call__(self, nodes, edges, globals_, flat):
        gt = flat.graph
        n_nodes, n_graphs = nodes.shape[0], globals_.shape[0]
        # Bond update (eq. 10).
        e_in = jnp.concatenate(
            [nodes[gt.senders], nodes[gt.receivers], edges, globals_[flat.edge_graph]], axis=-1
        )  # [E, 4H]
        e_new = jnp.where(flat.edge_mask[:, None], _MLP(self.hidden, name="phi_e")(e_in), 0.0)  # [E, H]
        # Atom update (eqs. 11-12): mean of the incoming updated bonds.
        e_mean = _segment_mean(e_new, flat.edge_mask, gt.receivers, n_nodes)  # [B N, H]
        v_in = jnp.concatenate([e_mean, nodes, globals_[flat.node_graph]], axis=-1)  # [B N, 3H]
        v_new = jnp.where(flat.node_mask[:, None], _MLP(self.hidden, name="phi_v")(v_in), 0.0)  # [B N, H]
        # State update: means over the real bonds and atoms of each graph.
        u_e = _segment_mean(e_new, flat.edge_mask, flat.edge_graph, n_graphs)  # [B, H]
        u_v = _segment_mean(v_new, flat.node_mask, flat.node_graph, n_graphs)  # [B, H]
        u_new = _MLP(self.hidden, name="phi_u")(jnp.concatenate([u_e, u_v, globals_], axis=-1))  # [B, H]
        nodes = jnp.where(flat.node_mask[:, None], nodes + v_new, 0.0)
        edges = jnp.where(flat.edge_mask[:, None], edges + e_new, 0.0)
        return nodes, edges, globals_ + u_new


class Set2Set(nn.Module):
    """Set2Set readout (Vinyals et al. 2016) over masked sets: x [B, M, H], mask [B, M] -> [B, 2H].

    q_t = LSTM(q*_{t-1}); a_i = softmax_i(x_i . q_t) over the real members; r_t = sum_i a_i x_i;
    q*_t = [q_t, r_t]. A set with no real member gives r_t = 0 (finite)."""

    steps: int = 3

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
        b, _, h = x.shape
        cell = nn.LSTMCell(h, name="lstm")
        carry = (jnp.zeros((b, h), x.dtype), jnp.zeros((b, h), x.dtype))
        q_star = jnp.zeros((b, 2 * h), x.dtype)
        for _ in range(self.steps):
            carry, q = cell(carry, q_star)  # q [B, H]
            logits = jnp.einsum("bmh,bh->bm", x, q)  # [B, M]
            top = masked_max(logits, mask, axis=1)  # [B]
            w = jnp.where(mask, jnp.exp(jnp.where(mask, logits - top[:, None], 0.0)), 0.0)
            a = w / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1e-30)  # [B, M]
            r = jnp.einsum("bm,bmh->bh", a, x)
            q_star = jnp.concatenate([q, r], axis=-1)
        return q_star


class MEGNetEncoder(nn.Module):
    """Crystal batch -> [B, hidden] with MEGNet blocks (paper 002 App. 10.2). Accepts a ``Crystal`` with
    leading [B] or a prebuilt :class:`CrystalGraph`."""

    hidden: int = 64
    layers: int = 3
    k: int = DEFAULT_K
    cutoff: float = DEFAULT_CUTOFF
    max_images: int = 2
    num_rbf: int = 32
    frac_mode: str = "fourier"
    num_frequencies: int = 2
    readout: str = "set2set"  # or "mean"
    set2set_steps: int = 3
    global_from_lattice: bool = False

    @nn.compact
    def __call__(self, crystal: Crystal | CrystalGraph) -> jnp.ndarray:
        graph = as_graph(crystal, self.k, self.cutoff, self.max_images)
        b, n, k = graph.senders.shape
        h = self.hidden
        v = NodeInput(h, self.frac_mode, self.num_frequencies, name="node_input")(graph)  # [B, N, H]
        rbf = gaussian_rbf(graph.dist, self.num_rbf, self.cutoff)  # [B, N, K, R]
        e = nn.Dense(h, name="edge_input")(rbf)  # [B, N, K, H]
        if self.global_from_lattice:
            u0 = lattice_features(graph.lattice)  # [B, 9]
        else:
            u0 = jnp.zeros((b, 2), jnp.float32)  # matgl default state attribute
        u = nn.Dense(h, name="state_input")(u0)  # [B, H]
        flat = to_graphs_tuple(graph)
        nodes = v.reshape(b * n, h)
        edges = jnp.where(flat.edge_mask[:, None], e.reshape(b * n * k, h), 0.0)
        for layer in range(self.layers):
            nodes, edges, u = MEGNetBlock(h, name=f"block_{layer}")(nodes, edges, u, flat)
        nodes = nodes.reshape(b, n, h)
        edges = edges.reshape(b, n * k, h)
        edge_mask = graph.edge_mask.reshape(b, n * k)
        if self.readout == "set2set":
            pv = Set2Set(self.set2set_steps, name="set2set_nodes")(nodes, graph.node_mask)  # [B, 2H]
            pe = Set2Set(self.set2set_steps, name="set2set_edges")(edges, edge_mask)  # [B, 2H]
        elif self.readout == "mean":
            pv = masked_mean(nodes, graph.node_mask, axis=1)  # [B, H]
            pe = masked_mean(edges, edge_mask, axis=1)  # [B, H]
        else:
            raise ValueError(f"readout must be 'set2set' or 'mean', got {self.readout!r}")
        x = jnp.concatenate([pv, pe, u], axis=-1)
        x = shifted_softplus(nn.Dense(h, name="readout_0")(x))
        return nn.Dense(h, name="readout_1")(x).astype(jnp.float32)  # [B, H]
