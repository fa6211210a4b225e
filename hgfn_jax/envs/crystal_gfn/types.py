"""State and action PyTrees of the Crystal-GFN environment (paper 001, sec. 4).

One unbatched state carries the three subspaces and which one is active (``stage``). Every field has a fixed
shape; the rollout vmaps over a leading batch axis. Sizes: ``E`` = number of configured elements, ``NW`` =
number of 32-bit words of the charge bitset (see ``composition_subspace``).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

# Stages (active subspace).
STAGE_SPACEGROUP, STAGE_COMPOSITION, STAGE_LATTICE, STAGE_DONE = 0, 1, 2, 3
N_STAGES = 4

# Lattice action kinds (``CrystalAction.index`` in the lattice stage).
LATTICE_INCREMENT, LATTICE_EOS = 0, 1


@struct.dataclass
class SpaceGroupState:
    """Space-group subspace: the three dimensions of sec. 4.1 (any may be set first)."""

    cls: jnp.ndarray  # [] int32: crystal-lattice system 0..7, -1 unset
    ps: jnp.ndarray  # [] int32: point symmetry 0..4, -1 unset
    row: jnp.ndarray  # [] int32: ROW in the environment's space-group list 0..G-1 (not the number), -1 unset


@struct.dataclass
class CompositionState:
    """Composition subspace: atoms per configured element (sec. 4.2) plus exact constraint trackers."""

    counts: jnp.ndarray  # [E] int32: atoms of each configured element in the unit cell (0 = absent)
    n_elements: jnp.ndarray  # [] int32: number of distinct elements present
    n_atoms: jnp.ndarray  # [] int32: total atoms
    all_metal: jnp.ndarray  # [] bool: every present element is a metal (SMACT's list); True when empty
    wyckoff: jnp.ndarray  # [] uint32: bitmask over Wyckoff usage states reachable (bit 0 = nothing used)
    charges: jnp.ndarray  # [NW] uint32: bitset of achievable total charges (one oxidation state per element)
    code: jnp.ndarray  # [] int32: mixed-radix index of ``counts`` in the exact-mode tables (0 when unused)
    parents: jnp.ndarray  # [E] bool: present elements that may have been added last (composition_parents),
    #                       set by the environment's forward step so P_B reads it instead of recomputing it


@struct.dataclass
class LatticeState:
    """Lattice-parameter subspace: a continuous cube over the 6 parameters (Mila ``ContinuousCube``)."""

    u: jnp.ndarray  # [6] float32: position in [0, 1] of each parameter in its active box; only free dims used
    at_source: jnp.ndarray  # [] bool: the abstract source state of the cube (nothing sampled yet)


@struct.dataclass
class CrystalState:
    stage: jnp.ndarray  # [] int32: STAGE_SPACEGROUP / STAGE_COMPOSITION / STAGE_LATTICE / STAGE_DONE
    spacegroup: SpaceGroupState
    composition: CompositionState
    lattice: LatticeState


@struct.dataclass
class CrystalAction:
    """One transition. ``index`` is interpreted by the stage it was taken in:

    - space-group stage: 0..7 set crystal-lattice system, 8..12 set point symmetry, 13..13+G-1 set the space
      group (row of the environment's list), 13+G stop;
    - composition stage: ``e * cap + (n - 1)`` sets element ``e`` to ``n`` atoms, ``E * cap`` stop;
    - lattice stage: ``LATTICE_INCREMENT`` (``value`` holds the relative increments) or ``LATTICE_EOS``.
    """

    stage: jnp.ndarray  # [] int32: stage of the state the action was taken from
    index: jnp.ndarray  # [] int32: discrete action index within that stage
    value: jnp.ndarray  # [6] float32: lattice relative increments r in (0, 1) per parameter (free dims only)
