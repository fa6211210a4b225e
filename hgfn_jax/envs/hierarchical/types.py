"""State and action PyTrees of the hierarchical (CHGFlowNet / SHAFT) and flat crystal environments."""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from hgfn_jax.crystal.types import Crystal


@struct.dataclass
class HierarchicalState:
    """One (unbatched) state; batched states carry a leading ``[B]`` on every field.

    ``lattice`` always satisfies the constraints of ``lattice_group`` (the group whose free-parameter cube
    holds
    it). In the hierarchical env, after a space-group transition (``phase == 1``) ``spacegroup`` is the NEW
    group
    while the lattice, atoms and cell still belong to ``lattice_group`` (the previous group); everywhere else
    ``lattice_group == spacegroup``. At s0 the group is 1 and the lattice the fixed point (4, 4, 4, 90, 90,
    90)
    (indices -1: group 1 need not be an allowed group).
    """

    spacegroup: jnp.ndarray  # [] int32: current space group number 1..230
    group_index: jnp.ndarray  # [] int32: index of spacegroup in the env's allowed groups (-1 at s0)
    lattice_group: jnp.ndarray  # [] int32: group whose constraints the lattice satisfies
    lattice_group_index: jnp.ndarray  # [] int32: its index in the allowed groups (-1 at s0)
    lattice: jnp.ndarray  # [6] float32: a, b, c (Angstrom), alpha, beta, gamma (degrees), constrained
    lattice_u: jnp.ndarray  # [6] float32: normalised coordinates of lattice (free ones in [0, 1])
    ref_species: jnp.ndarray  # [T] int32: atomic number Z of the reference atoms (0 = padding)
    ref_element: jnp.ndarray  # [T] int32: index into the env's element set (-1 = padding)
    ref_frac: jnp.ndarray  # [T, 3] float32: fractional coordinates in [0, 1) of the reference atoms
    ref_mask: jnp.ndarray  # [T] bool: reference atom placed (a prefix: the first num_atoms entries)
    crystal: Crystal  # expanded cell (N_max sites, mask, overflow flag) of the atoms under lattice_group
    site_ref: jnp.ndarray  # [N_max] int32: reference atom (orbit) each site of ``crystal`` came from, -1 padding
    num_atoms: jnp.ndarray  # [] int32: reference atoms placed = completed hierarchical steps
    phase: jnp.ndarray  # [] int32: 0 = the next transition picks a group, 1 = it picks lattice + atom
    done: jnp.ndarray  # [] bool: terminal (num_atoms == T)


@struct.dataclass
class HierarchicalAction:
    """One action; the same PyTree for both transition kinds (unused fields are ignored)."""

    group_index: jnp.ndarray  # [] int32: index of the chosen group in the allowed groups
    lattice_u: jnp.ndarray  # [6] float32: normalised lattice coordinates in [0, 1] (only free ones are used)
    frac: jnp.ndarray  # [3] float32: fractional coordinates of the new reference atom, [0, 1)
    element_index: jnp.ndarray  # [] int32: index of the new atom's element in the element set
