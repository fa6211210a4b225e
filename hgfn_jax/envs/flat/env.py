"""The flat baseline of the hierarchical crystal GFlowNet: ONE transition per hierarchical step.

Same states, actions, reference measure, composition mask and backward kernel as
``hgfn_jax.envs.hierarchical`` (built from the same transition pieces, ``_CrystalTransitions``), but a single
policy output emits the space-group logits AND the atom-lattice parameters at once, so the lattice / atom head
cannot see the group it is sampling for. All six normalised lattice coordinates are sampled (independently),
then the chosen group's constraints are applied: the tied / fixed coordinates are discarded, so the density of
the lattice actually kept is the MARGINAL of the free coordinates of the chosen group, which (independence) is
the product of their densities. Hence

    log P_F = log softmax(group logits)[g] + sum_{i free in g} log p(u_i) + log p(frac) + log P(element),

on exactly the reference measure of the hierarchical env (Lebesgue on the chosen group's free cube x torus x
counting). ``log P_B``: as the hierarchical env's atom-lattice transition (remove the last atom; previous
lattice
group uniform or learned over the allowed groups, previous lattice uniform on its cube; deterministic for the
first atom). ``T`` transitions (``max_steps = T``); the state's ``phase`` is always 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hgfn_jax.envs.hierarchical.backward import FlatBackward
from hgfn_jax.envs.hierarchical.env import HierarchicalConfig, _CrystalTransitions
from hgfn_jax.envs.hierarchical.types import HierarchicalAction, HierarchicalState
from hgfn_jax.gflownet.env import (
    Environment,
    Exploration,
    masked_log_softmax,
    sample_masked_categorical,
    tree_where,
)


class FlatEnv(FlatBackward, _CrystalTransitions, Environment):
    """Flat baseline: group + lattice + atom in one transition (same layout as the hierarchical env)."""

    def __init__(self, config: HierarchicalConfig = HierarchicalConfig()):
        super().__init__(config)
        self.max_steps = self.T

    def sample_action(
        self, key, fwd_out, state: HierarchicalState, explore: Exploration
    ) -> HierarchicalAction:
        k_g, k_al = jax.random.split(key)
        g = sample_masked_categorical(k_g, self.split_fwd(fwd_out)[0], self.group_mask(), explore)
        u, frac, el = self.sample_atom_lattice(k_al, fwd_out, state, explore)
        return HierarchicalAction(group_index=g, lattice_u=u, frac=frac, element_index=el)

    def log_pf(self, fwd_out, state: HierarchicalState, action: HierarchicalAction) -> jnp.ndarray:
        lp_g = masked_log_softmax(self.split_fwd(fwd_out)[0], self.group_mask())[action.group_index]
        return lp_g + self.atom_lattice_log_prob(fwd_out, state, action.group_index, action)

    def step(self, state: HierarchicalState, action: HierarchicalAction) -> HierarchicalState:
        return tree_where(state.done, state, self.place(state, action.group_index, action))

    def log_pb(self, bwd_out, next_state, action, prev_state) -> jnp.ndarray:
        return self.backward_log_prob(bwd_out, next_state, prev_state)
