"""Embeddings of the crystal-state parts: elements, space groups and lattice parameters (papers 000 and 002).

- :class:`ElementEmbedding`: atomic number Z -> [H]; a learned table plus (optionally) a linear map of fixed
  periodic-table descriptors (period, group, block, electronegativity, mass) so that chemically similar
  elements start close. Z = 0 (padding) has its own row; consumers mask padding anyway.
- :class:`SpaceGroupEmbedding`: international number 1..230 -> [H], the sum of learned embeddings of the
  group, its crystal system (7) and its point group (32): groups of the same family share parameters. 0 means
  "unknown/none" and has its own row.
- :class:`LatticeMLP`: paper 000 eq. 6, h_L = MLP([l1, l2, l3, sin a, cos a, sin b, cos b, sin g, cos g]).
  The lengths are divided by ``length_scale`` (default 10 A) so that all nine inputs are O(1).

All modules are Flax linen, float32, and accept any leading batch shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal.elements import ATOMIC_MASS, BLOCK, ELECTRONEGATIVITY, GROUP, NUM_ELEMENTS, PERIOD
from hgfn_jax.crystal.spacegroup import CRYSTAL_SYSTEMS, N_SPACEGROUPS, POINT_GROUPS, host_tables

DEFAULT_LENGTH_SCALE = 10.0  # Angstrom


def _element_descriptors() -> np.ndarray:
    """[119, 9] float32 fixed descriptors per Z (row 0 = padding, all zeros): period/7, group/18,
    one-hot block (s, p, d, f), electronegativity/4 (0 if unknown), known-electronegativity flag, mass/250."""
    chi = np.asarray(ELECTRONEGATIVITY, np.float32)
    known = np.isfinite(chi)
    block = np.asarray(BLOCK)
    onehot = np.stack([(block == i) for i in range(4)], axis=-1).astype(np.float32)
    desc = np.concatenate(
        [
            (np.asarray(PERIOD, np.float32) / 7.0)[:, None],
            (np.asarray(GROUP, np.float32) / 18.0)[:, None],
            onehot,
            np.where(known, chi / 4.0, 0.0)[:, None],
            known.astype(np.float32)[:, None],
            (np.asarray(ATOMIC_MASS, np.float32) / 250.0)[:, None],
        ],
        axis=-1,
    ).astype(np.float32)
    desc[0] = 0.0
    return desc


ELEMENT_DESCRIPTORS = _element_descriptors()  # [119, 9]
ELEMENT_DESCRIPTORS.setflags(write=False)


class ElementEmbedding(nn.Module):
    """Atomic number -> [features]: learned table (119 rows, row 0 = padding) + Dense(fixed descriptors)."""

    features: int = 64
    use_descriptors: bool = True

    @nn.compact
    def __call__(self, species: jnp.ndarray) -> jnp.ndarray:
        """species [...] int (0..118) -> [..., features] float32."""
        species = jnp.clip(jnp.asarray(species, jnp.int32), 0, NUM_ELEMENTS - 1)
        out = nn.Embed(NUM_ELEMENTS, self.features, embedding_init=nn.initializers.normal(1.0), name="table")(
            species
        )
        if self.use_descriptors:
            desc = jnp.asarray(ELEMENT_DESCRIPTORS)[species]  # [..., 9]
            out = out + nn.Dense(self.features, use_bias=False, name="descriptors")(desc)
        return out.astype(jnp.float32)


def _spacegroup_class_tables() -> tuple[np.ndarray, np.ndarray]:
    """([231] crystal-system index, [231] point-group index); row 0 (unknown) gets the extra last class."""
    host = host_tables()
    system = np.asarray(host["crystal_system"], np.int32).copy()
    point = np.asarray(host["point_group"], np.int32).copy()
    system[0] = len(CRYSTAL_SYSTEMS)
    point[0] = len(POINT_GROUPS)
    return system, point


class SpaceGroupEmbedding(nn.Module):
    """International number (1..230; 0 = unknown) -> [features] = E_sg[n] + E_system[cs(n)] + E_pg[pg(n)].

    The crystal-system and point-group terms (``hierarchical=True``) let related groups share statistics;
    with ``hierarchical=False`` it is a plain 231-row lookup. Out-of-range numbers are clipped to 0..230.
    """

    features: int = 64
    hierarchical: bool = True

    @nn.compact
    def __call__(self, spacegroup: jnp.ndarray) -> jnp.ndarray:
        """spacegroup [...] int -> [..., features] float32."""
        n = jnp.clip(jnp.asarray(spacegroup, jnp.int32), 0, N_SPACEGROUPS)
        init = nn.initializers.normal(1.0)
        out = nn.Embed(N_SPACEGROUPS + 1, self.features, embedding_init=init, name="group")(n)
        if self.hierarchical:
            system, point = _spacegroup_class_tables()
            out = out + nn.Embed(len(CRYSTAL_SYSTEMS) + 1, self.features, embedding_init=init, name="system")(
                jnp.asarray(system)[n]
            )
            out = out + nn.Embed(
                len(POINT_GROUPS) + 1, self.features, embedding_init=init, name="point_group"
            )(jnp.asarray(point)[n])
        return out.astype(jnp.float32)


def lattice_features(lattice: jnp.ndarray, length_scale: float = DEFAULT_LENGTH_SCALE) -> jnp.ndarray:
    """[..., 6] (a, b, c A; alpha, beta, gamma deg) -> [..., 9] = [a/s, b/s, c/s, sin a, cos a, sin b, cos b,
    sin g, cos g] (paper 000 eq. 6 with lengths scaled by s = ``length_scale``)."""
    lattice = jnp.asarray(lattice, jnp.float32)
    lengths = lattice[..., :3] / length_scale
    ang = jnp.deg2rad(lattice[..., 3:6])
    trig = jnp.stack([jnp.sin(ang), jnp.cos(ang)], axis=-1).reshape(
        ang.shape[:-1] + (6,)
    )  # sin a, cos a, ...
    return jnp.concatenate([lengths, trig], axis=-1)


class LatticeMLP(nn.Module):
    """Paper 000 eq. 6: h_L = MLP(lattice_features(lattice)); ReLU hidden layers, linear output [features]."""

    features: int = 64
    hidden: Sequence[int] = (64,)
    length_scale: float = DEFAULT_LENGTH_SCALE

    @nn.compact
    def __call__(self, lattice: jnp.ndarray) -> jnp.ndarray:
        """lattice [..., 6] -> [..., features] float32."""
        x = lattice_features(lattice, self.length_scale)  # [..., 9]
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.features)(x).astype(jnp.float32)
