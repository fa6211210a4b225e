"""The padded crystal: the one structure representation shared by environments, rewards and metrics."""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Crystal:
    """A periodic crystal padded to ``N`` sites. Batched versions carry a leading ``[B]`` on every field.

    Padding sites have ``mask == False``, ``species == 0`` and coordinates 0; they must be ignored by every
    consumer (distances, energies, densities).
    """

    lattice: jnp.ndarray  # [6] float32: a, b, c (Angstrom), alpha, beta, gamma (degrees)
    frac: jnp.ndarray  # [N, 3] float32: fractional coordinates in [0, 1)
    species: jnp.ndarray  # [N] int32: atomic number Z (1..118), 0 for padding
    mask: jnp.ndarray  # [N] bool: real site
    spacegroup: jnp.ndarray  # [] int32: international number 1..230 (0 = unknown)
    overflow: jnp.ndarray  # [] bool: the true cell had more than N sites (sites beyond N are NOT present)

    @property
    def n_max(self) -> int:
        return self.frac.shape[-2]

    @property
    def num_sites(self) -> jnp.ndarray:  # [] or [B] int32
        return jnp.sum(self.mask, axis=-1).astype(jnp.int32)


@struct.dataclass
class CrystalSpec:
    """A crystal known by its composition, space group and lattice, without atomic positions: the terminal
    object of Crystal-GFN (paper 001), whose rewards (proxies, exact density, volume per atom) need nothing more.
    Batched versions carry a leading ``[B]`` on every field.

    ``counts`` are the atoms of the cell ``lattice`` describes (the conventional cell: hexagonal axes for the
    rhombohedral groups), so ``counts`` and ``lattice`` give the right density and volume per atom in every group.
    """

    counts: jnp.ndarray  # [119] int32: atoms of each atomic number Z (index 0 unused)
    spacegroup: jnp.ndarray  # [] int32: international number 1..230 (0 = unset)
    lattice: jnp.ndarray  # [6] float32: a, b, c (Angstrom), alpha, beta, gamma (degrees) of the conventional cell

    @property
    def num_atoms(self) -> jnp.ndarray:  # [] or [B] int32
        return jnp.sum(self.counts, axis=-1).astype(jnp.int32)
