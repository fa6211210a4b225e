"""Hierarchical crystal GFlowNet (CHGFlowNet, paper 000; SHAFT, paper 002): space group -> atom-lattice."""

from hgfn_jax.envs.hierarchical.env import HierarchicalConfig, HierarchicalEnv
from hgfn_jax.envs.hierarchical.types import HierarchicalAction, HierarchicalState

__all__ = ["HierarchicalAction", "HierarchicalConfig", "HierarchicalEnv", "HierarchicalState"]
