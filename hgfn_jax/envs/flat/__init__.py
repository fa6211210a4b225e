"""Flat baseline of the hierarchical crystal GFlowNet (group, lattice and atom in one transition)."""

from hgfn_jax.envs.flat.env import FlatEnv

__all__ = ["FlatEnv"]
