"""The two-level policy of the hierarchical crystal GFlowNet (paper 000 sec. 4.1-4.2, paper 002 sec. 10).

``HierarchicalPolicy`` maps a batch of :class:`HierarchicalState` to the flat forward vector the environments
interpret (layout in ``env.py``):

- space-group head (high level, P_F(s'_sg | s_sg, s_al)): logits over the allowed groups from
  ``[h_G = encoder(cell), h_L = LatticeMLP(lattice), SpaceGroupEmbedding(lattice_group), step features]``;
- atom-lattice head (low level, P_F(s'_al | s_sg, s_al, s'_sg)): the lattice / coordinate distribution
  parameters and the element logits from the same features plus the embedding of ``state.spacegroup``, which
  in the hierarchical env is the NEW group chosen by the previous transition (in the flat env it is the
  current
  group: the flat head cannot see the group it samples for, by design);
- backward head (when the env learns P_B over the previous group): logits over the allowed groups.

The output layers are zero-initialised, so the untrained policy is uniform over groups / allowed elements and
close to the reference measure on the continuous choices (``envs/hierarchical/parameters.py``).

Encoders (``encoder=``):

- ``"gcn"`` (default; paper 000 GCN, ``policies.gcn.GCNEncoder``) and ``"megnet"`` (paper 002,
  ``policies.megnet.MEGNetEncoder``) run on the ORBIT-REDUCED graph of the expanded cell
  (``policies.graph.build_orbit_graph``): one node per reference atom (T nodes instead of N_max sites), each
  with the K nearest neighbours of its representative site among all sites and periodic images, senders
  mapped to their orbits (``state.site_ref``). The K-NN graph of a symmetric cell is invariant under the
  group, so with symmetry-invariant node inputs this equals the encoder on the full cell (max pooling over
  sites = max over orbits; MEGNet's means / Set2Set are weighted by the orbit multiplicities); with the
  default position features (``frac_mode="fourier"``) every orbit is seen at its reference atom's position.
  Cost ~ T N_max images per cell for the neighbour search instead of N_max^2 (tens of times faster).
- ``"gcn_full"`` / ``"megnet_full"``: the same modules (same parameter tree) on the full-cell graph
  (``policies.graph.build_graph``, N_max nodes, per-site positions).
- ``"deepsets"`` (masked mean + max of per-site MLP features; cheap, used by the tests).

Overflowed cells are encoded from the sites present.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hgfn_jax.crystal.types import Crystal
from hgfn_jax.gflownet.policy import Policy
from hgfn_jax.policies.embeddings import ElementEmbedding, LatticeMLP, SpaceGroupEmbedding
from hgfn_jax.policies.mlp import MLP


class DeepSetsEncoder(nn.Module):
    """Crystal batch -> [B, hidden]: per-site MLP([element embedding, sin/cos 2 pi frac]), mean, max."""

    hidden: int = 64

    @nn.compact
    def __call__(self, crystal: Crystal) -> jnp.ndarray:
        ang = 2.0 * jnp.pi * crystal.frac
        x = jnp.concatenate([ElementEmbedding(self.hidden)(crystal.species), jnp.sin(ang), jnp.cos(ang)], -1)
        h = nn.relu(nn.Dense(self.hidden)(x))
        h = nn.relu(nn.Dense(self.hidden)(h))  # [B, N, H]
        m = crystal.mask[..., None]
        count = jnp.maximum(jnp.sum(m, axis=-2), 1)
        mean = jnp.sum(jnp.where(m, h, 0.0), axis=-2) / count
        mx = jnp.max(jnp.where(m, h, 0.0), axis=-2)  # h >= 0 (ReLU): 0 is a neutral padding value
        return nn.Dense(self.hidden)(jnp.concatenate([mean, mx], -1))


ENCODERS = ("gcn", "megnet", "gcn_full", "megnet_full", "deepsets")
ORBIT_ENCODERS = ("gcn", "megnet")  # run on build_orbit_graph(state.crystal, state.site_ref)


def _make_encoder(name: str, hidden: int, layers: int) -> nn.Module:
    if name == "deepsets":
        return DeepSetsEncoder(hidden)
    if name in ("gcn", "gcn_full"):
        from hgfn_jax.policies.gcn import GCNEncoder

        return GCNEncoder(hidden=hidden, layers=layers)
    if name in ("megnet", "megnet_full"):
        from hgfn_jax.policies.megnet import MEGNetEncoder

        return MEGNetEncoder(hidden=hidden, layers=layers)
    raise ValueError(f"unknown encoder {name!r}: expected one of {ENCODERS}")


def encode_cells(enc: nn.Module, name: str, states) -> jnp.ndarray:
    """[B, H] cell embedding of a batch of hierarchical states with encoder module ``enc`` named ``name``."""
    if name in ORBIT_ENCODERS:
        from hgfn_jax.policies.graph import build_orbit_graph

        graph = build_orbit_graph(
            states.crystal, states.site_ref, states.ref_mask.shape[-1], enc.k, enc.cutoff, enc.max_images
        )
        return enc(graph)
    return enc(states.crystal)


class HierarchicalPolicy(nn.Module):
    """``states [B] -> (fwd [B, fwd_dim], bwd [B, bwd_dim])`` for ``HierarchicalEnv`` and ``FlatEnv``."""

    num_groups: int  # G
    al_dim: int  # fwd_dim - G: lattice (12) + coordinates (10) + element logits (E)
    bwd_dim: int  # G (learned backward group) or 0
    num_steps: int  # T
    encoder: str = "gcn"
    hidden: int = 64
    layers: int = 3
    head_hidden: Sequence[int] = (128,)

    @nn.compact
    def __call__(self, states):
        enc = _make_encoder(self.encoder, self.hidden, self.layers)
        h_cell = encode_cells(enc, self.encoder, states)  # [B, H]
        h_lat = LatticeMLP(self.hidden, name="lattice")(states.lattice)
        sg_embed = SpaceGroupEmbedding(self.hidden, name="spacegroup")
        h_prev = sg_embed(states.lattice_group)
        h_new = sg_embed(states.spacegroup)
        step = jnp.concatenate(
            [jax.nn.one_hot(states.num_atoms, self.num_steps + 1), states.phase[:, None].astype(jnp.float32)],
            -1,
        )
        base = jnp.concatenate([h_cell, h_lat, h_prev, step], -1)
        group_logits = MLP(tuple(self.head_hidden), self.num_groups, name="group_head")(base)
        al = MLP(tuple(self.head_hidden), self.al_dim, name="atom_lattice_head")(
            jnp.concatenate([base, h_new], -1)
        )
        fwd = jnp.concatenate([group_logits, al], -1)
        if self.bwd_dim > 0:
            bwd = MLP(tuple(self.head_hidden), self.bwd_dim, name="backward_head")(
                jnp.concatenate([base, h_new], -1)
            )
        else:
            bwd = jnp.zeros((fwd.shape[0], 0), jnp.float32)
        return fwd, bwd


def make_hierarchical_policy(
    env, encoder: str = "gcn", hidden: int = 64, layers: int = 3, head_hidden: Sequence[int] = (128,)
) -> Policy:
    """``Policy(init, apply)`` wrapping :class:`HierarchicalPolicy` for ``env`` (hierarchical or flat).
    ``encoder``: one of ``ENCODERS`` (module docstring)."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}: expected one of {ENCODERS}")
    module = HierarchicalPolicy(
        num_groups=env.G,
        al_dim=env.fwd_dim - env.G,
        bwd_dim=env.bwd_dim,
        num_steps=env.T,
        encoder=encoder,
        hidden=hidden,
        layers=layers,
        head_hidden=tuple(head_hidden),
    )

    def init(key, states):
        return module.init(key, states)

    def apply(params, states):
        return module.apply(params, states)

    return Policy(init=init, apply=apply)
