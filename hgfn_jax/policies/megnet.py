"""MEGNet state encoder (paper 002 sec. 4.3 and App. 10.2; Chen et al. 2019, "Graph Networks as a Universal
Machine Learning Framework for Molecules and Crystals").

Graph (App. 10.1): the K-nearest-neighbour crystal graph of :mod:`hgfn_jax.policies.graph`, node input =
[element embedding of Z, position features of the fractional coordinates] (as the GCN), edge input = Gaussian
RBF of the bond length, global state u = zeros [2] (matgl's default state attribute; ``global_from_lattice``
uses the 9 lattice features of paper 000 eq. 6 instead).

Each of the ``layers`` MEGNet blocks (paper 002 eqs. 10-12, Chen et al. eqs. 1-6), on the dense padded graph
(``[B, N, K]`` edges into each node: a sum over incoming bonds is a sum over the K axis, no scatter; padding
nodes and edges masked out of every sum/mean):

    e'_k = phi_e([v_{s_k}, v_{r_k}, e_k, u])                                 (bond update, eq. 10)
    v'_i = phi_v([mean_{k: r_k = i} e'_k, v_i, u])                            (atom update, eqs. 11-12)
    u'   = phi_u([mean_k e'_k, mean_i v'_i, u])                               (state update)

with 2-layer softplus MLPs phi (MEGNet's ``[64, 32]`` pre-block dense layers folded into one width
``hidden``) and residual connections e += e', v += v', u += u' (as in MEGNet). Readout (Chen et al.):
Set2Set over the real nodes and over the real edges (``readout="set2set"``, 3 steps) or masked means
(``readout="mean"``), concatenated with u, then a 2-layer MLP -> [B, hidden].

An empty cell (s0) has no real node or edge: every pooled term is 0 and the output stays finite.
On an orbit-reduced graph (``graph.build_orbit_graph``, ``multiplicity`` set) every mean and Set2Set
attention over nodes / edges is weighted by the orbit multiplicities, so with symmetry-invariant node inputs
(``frac_mode="none"``) the output equals that of the full cell.
Invariances: as the GCN (see :mod:`hgfn_jax.policies.gcn`): site permutation and padding always; global
translation and the 2x1x1 supercell (same K neighbours) only for ``frac_mode="none"`` (means and Set2Set
attention are unchanged when every node and edge is duplicated).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hgfn_jax.crystal.types import Crystal
from hgfn_jax.policies.embeddings import lattice_features
from hgfn_jax.policies.gcn import NodeInput
from hgfn_jax.policies.graph import (
    DEFAULT_CUTOFF,
    DEFAULT_K,
    CrystalGraph,
    as_graph,
    gather_senders,
    gaussian_rbf,
    masked_max,
    masked_mean,
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


class _SplitDense(nn.Module):
    """``Dense(concat(parts))`` (same ``kernel [sum of widths, features]`` and ``bias`` as ``nn.Dense``, same
    initialisation) applied as ``sum_i parts_i @ kernel_i + bias`` on parts that need not share a shape: each
    part is multiplied where it lives and the products broadcast, so no concatenation is materialised."""

    features: int

    @nn.compact
    def __call__(self, parts, combine):
        """``parts``: arrays ``[..., F_i]``; ``combine(products)`` broadcasts / gathers the products ``[..., H]``
        into one array before the bias is added."""
        widths = [x.shape[-1] for x in parts]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (sum(widths), self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        offsets = [0]
        for w in widths:
            offsets.append(offsets[-1] + w)
        products = [x @ kernel[a:b] for x, a, b in zip(parts, offsets[:-1], offsets[1:], strict=True)]
        return combine(products) + bias


def _mean(x, mask, axes, weight=None):
    """Masked (optionally ``weight``-ed) mean of ``x [..., H]`` over ``axes`` (0 where no real member)."""
    w = mask.astype(x.dtype) if weight is None else jnp.where(mask, weight, 0.0).astype(x.dtype)
    total = jnp.sum(jnp.where(mask[..., None], x * w[..., None], 0.0), axis=axes)
    return total / jnp.maximum(jnp.sum(w, axis=axes), 1.0)[..., None]


class MEGNetBlock(nn.Module):
    """One MEGNet block on the dense graph: nodes [B, N, H], edges [B, N, K, H] (edge [b, i, k] goes from node
    ``senders[b, i, k]`` to node i), globals [B, H].

    The bond update's first layer, ``Dense([v_s, v_r, e, u])``, is applied part by part (``_SplitDense``): the
    node and state parts are multiplied once per node / graph and broadcast to the edges (the receiver of
    edge [b, i, k] is i, so no gather; senders by ``graph.gather_senders``), which is 4x fewer multiply-adds
    than the concatenated [B N K, 4H] input and no gathered copy of it (same parameters and values, up to
    float summation order). Sums over incoming edges are sums over the K axis (no scatter)."""

    hidden: int

    @nn.compact
    def __call__(self, nodes, edges, globals_, graph: CrystalGraph, node_weight=None, edge_weight=None):
        """node_weight [B, N] / edge_weight [B, N, K]: multiplicities of orbit graphs (None = 1) for the means."""
        h = self.hidden
        edge_mask, node_mask = graph.edge_mask, graph.node_mask
        # Bond update (eq. 10): phi_e([v_s, v_r, e, u]).
        combine = lambda p: (gather_senders(p[0], graph.senders) + p[1][:, :, None, :]  # noqa: E731
                             + p[2] + p[3][:, None, None, :])
        e_new = _EdgeMLP(h, name="phi_e")(nodes, edges, globals_, combine)
        e_new = jnp.where(edge_mask[..., None], e_new, 0.0)  # [B, N, K, H]
        # Atom update (eqs. 11-12): mean of the incoming updated bonds.
        e_mean = _mean(e_new, edge_mask, axes=2)  # [B, N, H]
        g_nodes = jnp.broadcast_to(globals_[:, None, :], nodes.shape[:2] + (globals_.shape[-1],))
        v_in = jnp.concatenate([e_mean, nodes, g_nodes], axis=-1)  # [B, N, 3H]
        v_new = jnp.where(node_mask[..., None], _MLP(h, name="phi_v")(v_in), 0.0)  # [B, N, H]
        # State update: means over the real bonds and atoms of each graph.
        u_e = _mean(e_new, edge_mask, axes=(1, 2), weight=edge_weight)  # [B, H]
        u_v = _mean(v_new, node_mask, axes=1, weight=node_weight)  # [B, H]
        u_new = _MLP(h, name="phi_u")(jnp.concatenate([u_e, u_v, globals_], axis=-1))  # [B, H]
        nodes = jnp.where(node_mask[..., None], nodes + v_new, 0.0)
        edges = jnp.where(edge_mask[..., None], edges + e_new, 0.0)
        return nodes, edges, globals_ + u_new


class _EdgeMLP(nn.Module):
    """phi_e of the bond update: ``_MLP`` (same parameter names) whose first layer is a ``_SplitDense``."""

    hidden: int

    @nn.compact
    def __call__(self, nodes, edges, globals_, combine):
        x = shifted_softplus(_SplitDense(self.hidden, name="Dense_0")([nodes, nodes, edges, globals_], combine))
        return shifted_softplus(nn.Dense(self.hidden, name="Dense_1")(x))


class Set2Set(nn.Module):
    """Set2Set readout (Vinyals et al. 2016) over masked sets: x [B, M, H], mask [B, M] -> [B, 2H].

    q_t = LSTM(q*_{t-1}); a_i = softmax_i(x_i . q_t) over the real members; r_t = sum_i a_i x_i;
    q*_t = [q_t, r_t]. A set with no real member gives r_t = 0 (finite). Optional ``weight`` [B, M] > 0:
    member i counts as ``weight_i`` identical copies (a_i proportional to weight_i exp(x_i . q_t)); the orbit
    graphs use it to reproduce the readout of the full cell."""

    steps: int = 3

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, weight: jnp.ndarray | None = None) -> jnp.ndarray:
        b, _, h = x.shape
        cell = nn.LSTMCell(h, name="lstm")
        carry = (jnp.zeros((b, h), x.dtype), jnp.zeros((b, h), x.dtype))
        q_star = jnp.zeros((b, 2 * h), x.dtype)
        for _ in range(self.steps):
            carry, q = cell(carry, q_star)  # q [B, H]
            logits = jnp.einsum("bmh,bh->bm", x, q)  # [B, M]
            top = masked_max(logits, mask, axis=1)  # [B]
            w = jnp.where(mask, jnp.exp(jnp.where(mask, logits - top[:, None], 0.0)), 0.0)
            if weight is not None:
                w = w * weight
            a = w / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1e-30)  # [B, M]
            r = jnp.einsum("bm,bmh->bh", a, x)
            q_star = jnp.concatenate([q, r], axis=-1)
        return q_star


def _weighted_mean(x: jnp.ndarray, mask: jnp.ndarray, weight: jnp.ndarray | None) -> jnp.ndarray:
    """[B, M, H] -> [B, H]: masked mean over M, each member counted ``weight`` [B, M] times (None = 1)."""
    if weight is None:
        return masked_mean(x, mask, axis=1)
    w = jnp.where(mask, weight, 0.0)[..., None]
    return jnp.sum(x * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1.0)


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
        edges = jnp.where(graph.edge_mask[..., None], e, 0.0)  # [B, N, K, H]
        nodes = v
        # Orbit graphs (graph.multiplicity): node r stands for mult_r identical sites, each with the same K
        # edges, so every mean / attention over nodes or edges is weighted by it (the receiver's for edges).
        mult = graph.multiplicity
        node_w = None if mult is None else jnp.asarray(mult, jnp.float32)  # [B, N]
        edge_w = None if mult is None else jnp.broadcast_to(node_w[:, :, None], (b, n, k))  # [B, N, K]
        for layer in range(self.layers):
            nodes, edges, u = MEGNetBlock(h, name=f"block_{layer}")(nodes, edges, u, graph, node_w, edge_w)
        edges = edges.reshape(b, n * k, h)
        edge_mask = graph.edge_mask.reshape(b, n * k)
        edge_w = None if mult is None else edge_w.reshape(b, n * k)
        if self.readout == "set2set":
            pv = Set2Set(self.set2set_steps, name="set2set_nodes")(nodes, graph.node_mask, node_w)  # [B, 2H]
            pe = Set2Set(self.set2set_steps, name="set2set_edges")(edges, edge_mask, edge_w)  # [B, 2H]
        elif self.readout == "mean":
            pv = _weighted_mean(nodes, graph.node_mask, node_w)  # [B, H]
            pe = _weighted_mean(edges, edge_mask, edge_w)  # [B, H]
        else:
            raise ValueError(f"readout must be 'set2set' or 'mean', got {self.readout!r}")
        x = jnp.concatenate([pv, pe, u], axis=-1)
        x = shifted_softplus(nn.Dense(h, name="readout_0")(x))
        return nn.Dense(h, name="readout_1")(x).astype(jnp.float32)  # [B, H]
