"""Backward steps of the hierarchical and flat crystal environments, for local search (``gflownet.local_search``):
``is_initial(state)`` and ``sample_backward(key, bwd_out, state) -> (parent, action)`` drawing the parent from
EXACTLY the P_B that ``log_pb`` scores (``_CrystalTransitions.backward_log_prob``), so that local search's
Metropolis-Hastings acceptance is exact as well as its greedy one:

- undoing an atom-lattice placement removes the LAST reference atom; the parent's lattice group ``g'`` is drawn
  uniformly over the allowed groups (or from the learned backward categorical, ``learn_backward_group``) and its
  lattice uniformly on ``g'``'s free cube (normalised coordinates ``u ~ U[0, 1]^6``, then ``g'``'s constraints:
  tied coordinates are COPIES of free ones, so the free coordinates stay uniform, density 1 = ``log_pb``'s 0);
  the parent's cell is the remaining atoms re-expanded under ``g'`` by the same orbit expansion as the forward
  step. When the removed atom is the first one the parent is s0's fixed lattice under group 1 (P_B = 1);
- undoing a space-group choice (hierarchical env only; P_B = 1) restores ``spacegroup = lattice_group``.

The returned action is the forward action that leads back: ``step(parent, action)`` equals ``state`` (to float
round-off in the lattice, which the forward step recomputes from the normalised coordinates; tested in
``tests/envs/test_hierarchical_backward.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hgfn_jax.crystal import constraints as cons
from hgfn_jax.crystal.orbit import expand_orbits_full
from hgfn_jax.envs.hierarchical.types import HierarchicalAction, HierarchicalState
from hgfn_jax.gflownet.env import masked_log_softmax, tree_where


def placement_action(state: HierarchicalState) -> HierarchicalAction:
    """The forward action of the placement that produced ``state`` (its last reference atom)."""
    last = jnp.maximum(state.num_atoms - 1, 0)
    return HierarchicalAction(group_index=jnp.maximum(state.group_index, 0), lattice_u=state.lattice_u,
                              frac=state.ref_frac[last], element_index=jnp.maximum(state.ref_element[last], 0))


def undo_placement(env, key: jax.Array, bwd_out: jnp.ndarray, state: HierarchicalState) -> HierarchicalState:
    """The parent (drawn from P_B) of ``state`` across its last placement, as a state whose ``spacegroup`` is its
    own lattice group (``phase`` 0); the hierarchical env turns it into the phase-1 state the placement left."""
    last = state.num_atoms - 1
    k_g, k_u = jax.random.split(key)
    if env.config.learn_backward_group:
        logits = masked_log_softmax(bwd_out[: env.G], env.group_mask())
    else:
        logits = jnp.zeros((env.G,), jnp.float32)
    g = jax.random.categorical(k_g, logits).astype(jnp.int32)
    group = jnp.asarray(env.groups)[g]
    u = jax.random.uniform(k_u, (6,), jnp.float32)
    lattice = cons.apply_spacegroup_constraints(jnp.asarray(env.lo) + u * jnp.asarray(env.span), group)
    keep = jnp.arange(env.T) < last
    ref_species = jnp.where(keep, state.ref_species, 0)
    ref_element = jnp.where(keep, state.ref_element, -1)
    ref_frac = jnp.where(keep[:, None], state.ref_frac, 0.0)
    ref_mask = keep & state.ref_mask
    expansion = expand_orbits_full(ref_frac, ref_species, ref_mask, group, env.n_max, env.config.orbit_tol, lattice)
    parent = HierarchicalState(
        spacegroup=group, group_index=g, lattice_group=group, lattice_group_index=g, lattice=lattice,
        lattice_u=(lattice - jnp.asarray(env.lo)) / jnp.asarray(env.span), ref_species=ref_species,
        ref_element=ref_element, ref_frac=ref_frac, ref_mask=ref_mask, crystal=expansion.crystal,
        site_ref=expansion.ref_index, num_atoms=jnp.asarray(last, jnp.int32), phase=jnp.asarray(0, jnp.int32),
        done=jnp.asarray(False))
    return tree_where(last <= 0, env.init(), parent)


class HierarchicalBackward:
    """Backward steps of :class:`~hgfn_jax.envs.hierarchical.env.HierarchicalEnv` (mixed in)."""

    def is_initial(self, state: HierarchicalState) -> jnp.ndarray:
        return (state.num_atoms == 0) & (state.phase == 0) & ~state.done

    def sample_backward(self, key, bwd_out, state: HierarchicalState):
        # phase 1: the last transition chose the group -> restore the lattice group (deterministic)
        unchosen = state.replace(spacegroup=state.lattice_group, group_index=state.lattice_group_index,
                                 phase=jnp.asarray(0, jnp.int32))
        choice = HierarchicalAction(group_index=jnp.maximum(state.group_index, 0),
                                    lattice_u=jnp.zeros((6,), jnp.float32), frac=jnp.zeros((3,), jnp.float32),
                                    element_index=jnp.asarray(0, jnp.int32))
        # phase 0: the last transition placed an atom under state.group_index, chosen just before
        placed_from = undo_placement(self, key, bwd_out, state).replace(
            spacegroup=state.spacegroup, group_index=state.group_index, phase=jnp.asarray(1, jnp.int32))
        is_choice = state.phase == 1
        return (tree_where(is_choice, unchosen, placed_from),
                tree_where(is_choice, choice, placement_action(state)))


class FlatBackward:
    """Backward steps of :class:`~hgfn_jax.envs.flat.env.FlatEnv` (mixed in): every transition is a placement."""

    def is_initial(self, state: HierarchicalState) -> jnp.ndarray:
        return (state.num_atoms == 0) & ~state.done

    def sample_backward(self, key, bwd_out, state: HierarchicalState):
        return undo_placement(self, key, bwd_out, state), placement_action(state)
