"""The hierarchical crystal GFlowNet (CHGFlowNet, paper 000; SHAFT, paper 002) as a stateless environment.

Trajectory (Algorithm 1 of paper 000). s0: space group 1, a = b = c = 4 A, 90 degree angles, no atoms. Each of
the ``T`` hierarchical steps (T = 3 for CHGFlowNet, 2 for SHAFT; ``HierarchicalConfig.num_steps``) is TWO
environment transitions, so the atom-lattice policy is conditioned on the NEW space group (eq. 8) while the
policy output stays one flat vector per state:

(a) space group: a categorical over the allowed groups (all allowed groups at every step, so the
    set of parents used by P_B below is exactly the set the forward policy can reach). The state records
    the new group; the lattice, atoms and cell still belong to the previous group (``state.lattice_group``).
(b) atom-lattice, seeing the new group: the lattice (only the FREE parameters of the new group's
    lattice system, ``crystal.constraints``; monoclinic beta free, R groups in hexagonal axes), ONE new
    reference atom's fractional coordinates and its element (categorical under the composition mask). The
    group's constraints are applied (tied parameters copied, fixed angles set) and the cell is re-expanded
    with the group's operations (``crystal.orbit.expand_orbits_full``, which also records each site's
    reference atom in ``state.site_ref`` for the orbit-reduced encoders; ``crystal.overflow`` is set when the cell
    has more than ``n_max`` sites: the reward must penalise it, it is never silent). ``2 T`` transitions,
    done after the last.

Reference measure (the same for every group and every step). Each free lattice parameter is represented by a
normalised coordinate ``u in [0, 1]`` (lengths in [l_min, l_max], angles in [theta_min, theta_max]); the
measure on a state's lattice is Lebesgue on the free coordinates of ITS group's cube (volume 1; tied / fixed
parameters contribute nothing). Fractional coordinates: Lebesgue on the torus [0, 1)^3. Groups and elements:
counting measure. Densities are in ``parameters.py`` (truncated Gaussian for lengths, von Mises for angles,
uniform / wrapped-normal mixture for coordinates). Terminal objects x are (group, lattice, ORDERED list of
reference atoms); the reward sees the expanded cell.

Forward and backward log-probabilities are those of the transitions actually taken, after the constraints
(unlike the papers' code, which evaluates them before the constraints and drops the backward terms):

- P_F(a) = softmax(group logits)[g]; P_F(b) = prod_{free i} p(u_i) * p(frac) * P(element | composition mask).
- P_B of (a): 1 (the parent of a phase-1 state is unique: the same state with ``spacegroup = lattice_group``).
- P_B of (b): the removed atom is the LAST reference atom (deterministic); the parent's lattice group is drawn
  uniformly over the allowed groups (or from a learned categorical, ``learn_backward_group``) and its lattice
  uniformly on that group's free cube (log density 0 on the normalised measure). When the removed atom is the
  first one the parent is the fixed s0 lattice under group 1: P_B = 1.
Any normalised P_B keeps trajectory balance exact for the marginal over terminal objects. Sampling from this P_B
(local search's backward steps) is in ``backward.py``.

Composition mask (no dead ends): element e is allowed for the t-th atom iff, with the atoms so far plus e, the
number of distinct elements is <= ``max_distinct_elements``, the number of distinct REQUIRED elements is <=
``max_required_kinds``, and either a required element is present or one can still be added later
(another atom remains and distinct + 1 <= max). A required element is always available, so every prefix can
be completed; every terminal list satisfies the constraints.

Exploration: categorical choices use ``sample_masked_categorical`` (temperature + epsilon); with probability
epsilon the continuous choices are drawn from the reference measure (uniform). ``log_pf`` is always the
untempered policy.

Forward output layout (``fwd_dim = G + 22 + E``): ``[0:G]`` group logits, ``[G:G+12]`` lattice (2 raw numbers
per parameter a, b, c, alpha, beta, gamma), ``[G+12:G+22]`` fractional-coordinate raw parameters,
``[G+22:]`` element logits. Backward output: ``G`` group logits when ``learn_backward_group`` (else 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal import constraints as cons
from hgfn_jax.crystal.elements import atomic_numbers
from hgfn_jax.crystal.orbit import expand_orbits_full
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.envs.hierarchical import parameters as hp
from hgfn_jax.envs.hierarchical.backward import HierarchicalBackward
from hgfn_jax.envs.hierarchical.config import (  # noqa: F401 (re-exported)
    ALKALI,
    BATTERY_ELEMENTS,
    HierarchicalConfig,
    smallest_orbits,
)
from hgfn_jax.envs.hierarchical.types import HierarchicalAction, HierarchicalState
from hgfn_jax.gflownet import distributions as gd
from hgfn_jax.gflownet.env import (
    Environment,
    Exploration,
    masked_log_softmax,
    sample_masked_categorical,
    tree_where,
)

IS_LENGTH = np.array([True, True, True, False, False, False])


class _CrystalTransitions:
    """Transition pieces shared by the hierarchical and the flat envs (pure functions of one state)."""

    N_LATTICE_RAW = 6 * 2
    N_FRAC_RAW = hp.N_FRAC_RAW

    def __init__(self, config: HierarchicalConfig):
        c = config
        if c.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {c.num_steps}")
        groups = np.asarray(c.spacegroups, np.int32)
        if groups.ndim != 1 or groups.size == 0 or groups.min() < 1 or groups.max() > 230:
            raise ValueError(
                f"spacegroups must be a non-empty list of numbers in 1..230, got {c.spacegroups}"
            )
        if len(set(groups.tolist())) != groups.size:
            raise ValueError("spacegroups has duplicates")
        if isinstance(c.n_max, bool) or not isinstance(c.n_max, (int, np.integer)) or c.n_max < 1:
            raise ValueError(f"n_max (the padded cell size, in sites) must be an integer >= 1, got {c.n_max!r}")
        # A group whose smallest orbit (Wyckoff multiplicity, conventional cell) exceeds n_max can only make cells
        # that overflow: every structure in it would be refused, so the setting is impossible, not merely tight.
        smallest = smallest_orbits(groups)
        dead = groups[smallest > c.n_max]
        if dead.size:
            shown = ", ".join(f"{g} ({s} sites)" for g, s in zip(dead[:8], smallest[smallest > c.n_max][:8],
                                                                 strict=False))
            raise ValueError(
                f"n_max={c.n_max} is smaller than the smallest orbit of allowed space group(s) {shown}"
                f"{' ...' if dead.size > 8 else ''}: every structure in them would overflow; raise n_max to at "
                f"least {int(smallest.max())} or drop those groups from spacegroups"
            )
        if not set(c.required_elements) <= set(c.elements):
            raise ValueError(f"required elements {c.required_elements} not in the element set {c.elements}")
        if c.required_elements and (c.max_required_kinds < 1 or c.max_distinct_elements < 1):
            raise ValueError("max_required_kinds and max_distinct_elements must be >= 1")
        if c.max_distinct_elements < 1:
            raise ValueError("max_distinct_elements must be >= 1")
        if not (0 < c.length_range[0] < c.length_range[1]) or not (
            0 < c.angle_range[0] < c.angle_range[1] < 180
        ):
            raise ValueError(f"bad ranges {c.length_range}, {c.angle_range}")
        self.config = c
        self.T = int(c.num_steps)
        self.G = int(groups.size)
        self.E = len(c.elements)
        self.n_max = int(c.n_max)
        self.groups = groups
        self.element_z = atomic_numbers(tuple(c.elements)).astype(np.int32)
        self.is_required = np.array([e in c.required_elements for e in c.elements], bool)
        lo = np.where(IS_LENGTH, c.length_range[0], c.angle_range[0]).astype(np.float32)
        hi = np.where(IS_LENGTH, c.length_range[1], c.angle_range[1]).astype(np.float32)
        self.lo, self.span = lo, (hi - lo).astype(np.float32)
        # free-parameter mask per allowed group, [G, 6] (R groups: hexagonal axes, as the operations)
        self.group_free = np.stack(
            [np.asarray(cons.free_mask(int(cons.lattice_system_of(int(g))))) for g in groups]
        )
        self.fwd_dim = self.G + self.N_LATTICE_RAW + self.N_FRAC_RAW + self.E
        self.bwd_dim = self.G if c.learn_backward_group else 0
        # group [G] | lattice group + s0 slot [G + 1] | phase | done | lattice u [6] | atom count [T + 1] | atoms
        self.obs_dim = 2 * self.G + 1 + 1 + 1 + 6 + (self.T + 1) + self.T * (self.E + 6)

    # ---- layout of the forward output ---------------------------------------------------------------------
    def split_fwd(self, fwd: jnp.ndarray):
        """``fwd [fwd_dim] -> (group_logits [G], lattice_raw [6, 2], frac_raw [10], element_logits [E])``."""
        g, n_l, n_f = self.G, self.N_LATTICE_RAW, self.N_FRAC_RAW
        return (fwd[:g], fwd[g : g + n_l].reshape(6, 2), fwd[g + n_l : g + n_l + n_f], fwd[g + n_l + n_f :])

    # ---- s0 -----------------------------------------------------------------------------------------------
    def init(self) -> HierarchicalState:
        lat = jnp.asarray(self.config.init_lattice, jnp.float32)
        t = self.T
        crystal = Crystal(
            lattice=lat,
            frac=jnp.zeros((self.n_max, 3), jnp.float32),
            species=jnp.zeros((self.n_max,), jnp.int32),
            mask=jnp.zeros((self.n_max,), bool),
            spacegroup=jnp.asarray(1, jnp.int32),
            overflow=jnp.asarray(False),
        )
        return HierarchicalState(
            spacegroup=jnp.asarray(1, jnp.int32),
            group_index=jnp.asarray(-1, jnp.int32),
            lattice_group=jnp.asarray(1, jnp.int32),
            lattice_group_index=jnp.asarray(-1, jnp.int32),
            lattice=lat,
            lattice_u=(lat - self.lo) / self.span,
            ref_species=jnp.zeros((t,), jnp.int32),
            ref_element=jnp.full((t,), -1, jnp.int32),
            ref_frac=jnp.zeros((t, 3), jnp.float32),
            ref_mask=jnp.zeros((t,), bool),
            crystal=crystal,
            site_ref=jnp.full((self.n_max,), -1, jnp.int32),
            num_atoms=jnp.asarray(0, jnp.int32),
            phase=jnp.asarray(0, jnp.int32),
            done=jnp.asarray(False),
        )

    def is_done(self, state: HierarchicalState) -> jnp.ndarray:
        return state.done

    def encode(self, state: HierarchicalState) -> jnp.ndarray:
        """``[obs_dim]``: one-hot group and lattice group (+ s0 slot), phase, done, lattice u, atom count,
        per reference atom element one-hot and sin/cos of 2 pi frac (zero for padding)."""
        g = jax.nn.one_hot(state.group_index, self.G)
        lg = jax.nn.one_hot(
            jnp.where(state.lattice_group_index < 0, self.G, state.lattice_group_index), self.G + 1
        )
        ang = 2.0 * jnp.pi * state.ref_frac
        atoms = jnp.concatenate(
            [jax.nn.one_hot(state.ref_element, self.E), jnp.sin(ang), jnp.cos(ang)], axis=-1
        )
        atoms = atoms * state.ref_mask[:, None]
        return jnp.concatenate(
            [
                g,
                lg,
                state.phase[None].astype(jnp.float32),
                state.done[None].astype(jnp.float32),
                state.lattice_u,
                jax.nn.one_hot(state.num_atoms, self.T + 1),
                atoms.reshape(-1),
            ]
        ).astype(jnp.float32)

    # ---- masks --------------------------------------------------------------------------------------------
    def group_mask(self) -> jnp.ndarray:
        """``[G] bool``: every allowed group, at every step (state-independent on purpose, see P_B)."""
        return jnp.ones((self.G,), bool)

    def element_mask(self, state: HierarchicalState) -> jnp.ndarray:
        """``[E] bool``: elements allowed for the next reference atom (module docstring; never all False)."""
        c = self.config
        present = jnp.zeros((self.E,), bool).at[jnp.maximum(state.ref_element, 0)].max(state.ref_mask)
        after = present[None, :] | jnp.eye(self.E, dtype=bool)  # [E candidates, E]
        req = jnp.asarray(self.is_required)
        distinct = jnp.sum(after, axis=1)
        n_req = jnp.sum(after & req[None], axis=1)
        has_req = n_req > 0 if bool(self.is_required.any()) else jnp.ones((self.E,), bool)
        remaining = self.T - state.num_atoms - 1  # atoms still to place after this one
        can_add_later = (remaining >= 1) & (distinct + 1 <= c.max_distinct_elements)
        return (
            (distinct <= c.max_distinct_elements)
            & (n_req <= c.max_required_kinds)
            & (has_req | can_add_later)
        )

    # ---- the atom-lattice choice
    # ------------------------------------------------------------------------------
    def sample_atom_lattice(self, key, fwd, state: HierarchicalState, explore: Exploration):
        """``(lattice_u [6], frac [3], element_index [])`` from the atom-lattice part of ``fwd``."""
        _, lat_raw, frac_raw, el_logits = self.split_fwd(fwd)
        k_len, k_ang, k_frac, k_el, k_mix, k_u1, k_u2 = jax.random.split(key, 7)
        m, s = hp.length_params(lat_raw)
        mu, kappa = hp.angle_params(lat_raw)
        u_len = gd.truncnorm_sample(k_len, m, s)
        u_ang = gd.vonmises_u_sample(k_ang, mu, kappa)
        u_pol = jnp.where(jnp.asarray(IS_LENGTH), u_len, u_ang)
        frac_pol = hp.frac_sample(k_frac, frac_raw)
        uniform = jax.random.uniform(k_mix) < explore.epsilon
        u = jnp.where(uniform, jax.random.uniform(k_u1, (6,)), u_pol)
        frac = jnp.where(uniform, jax.random.uniform(k_u2, (3,)), frac_pol)
        el = sample_masked_categorical(k_el, el_logits, self.element_mask(state), explore)
        return u, frac, el

    def atom_lattice_log_prob(self, fwd, state: HierarchicalState, group_index, action: HierarchicalAction):
        """``[]`` log density of (lattice, atom) for the chosen group (free coordinates only)."""
        _, lat_raw, frac_raw, el_logits = self.split_fwd(fwd)
        m, s = hp.length_params(lat_raw)
        mu, kappa = hp.angle_params(lat_raw)
        u = action.lattice_u
        lp_coord = jnp.where(
            jnp.asarray(IS_LENGTH), gd.truncnorm_log_prob(u, m, s), gd.vonmises_u_log_prob(u, mu, kappa)
        )
        free = jnp.asarray(self.group_free)[group_index]
        lp_lat = jnp.sum(jnp.where(free, lp_coord, 0.0))
        lp_frac = hp.frac_log_prob(action.frac, frac_raw)
        lp_el = masked_log_softmax(el_logits, self.element_mask(state))[action.element_index]
        return lp_lat + lp_frac + lp_el

    def place(self, state: HierarchicalState, group_index, action: HierarchicalAction) -> HierarchicalState:
        """Lattice constrained to the group, atom appended, cell re-expanded under the group."""
        group = jnp.asarray(self.groups)[group_index]
        phys = jnp.asarray(self.lo) + action.lattice_u * jnp.asarray(self.span)
        lattice = cons.apply_spacegroup_constraints(phys, group)
        i = state.num_atoms
        z = jnp.asarray(self.element_z)[action.element_index]
        ref_species = state.ref_species.at[i].set(z)
        ref_element = state.ref_element.at[i].set(action.element_index)
        ref_frac = state.ref_frac.at[i].set(action.frac)
        ref_mask = state.ref_mask.at[i].set(True)
        expansion = expand_orbits_full(
            ref_frac, ref_species, ref_mask, group, self.n_max, self.config.orbit_tol, lattice
        )
        n = i + 1
        return HierarchicalState(
            spacegroup=group,
            group_index=jnp.asarray(group_index, jnp.int32),
            lattice_group=group,
            lattice_group_index=jnp.asarray(group_index, jnp.int32),
            lattice=lattice,
            lattice_u=(lattice - jnp.asarray(self.lo)) / jnp.asarray(self.span),
            ref_species=ref_species,
            ref_element=ref_element,
            ref_frac=ref_frac,
            ref_mask=ref_mask,
            crystal=expansion.crystal,
            site_ref=expansion.ref_index,
            num_atoms=n,
            phase=jnp.asarray(0, jnp.int32),
            done=n >= self.T,
        )

    def backward_log_prob(self, bwd, next_state: HierarchicalState, prev_state: HierarchicalState):
        """``[]`` log P_B of undoing an atom-lattice placement (module docstring): deterministic for the first
        atom, else the previous lattice group (uniform or learned) times the uniform lattice (log 0)."""
        if self.config.learn_backward_group:
            lp_groups = masked_log_softmax(bwd[: self.G], self.group_mask())
        else:
            lp_groups = jnp.full((self.G,), -np.log(self.G), jnp.float32)
        lp = lp_groups[jnp.maximum(prev_state.lattice_group_index, 0)]
        return jnp.where(next_state.num_atoms <= 1, 0.0, lp)

    # ---- enumeration helpers (tests) ----------------------------------------------------------------------
    def allowed_element_lists(self) -> list[tuple[int, ...]]:
        """All ordered element-index lists of length T satisfying the composition constraints (host)."""
        import itertools

        c = self.config
        out = []
        for seq in itertools.product(range(self.E), repeat=self.T):
            kinds = set(seq)
            req = {e for e in kinds if self.is_required[e]}
            if len(kinds) > c.max_distinct_elements or len(req) > c.max_required_kinds:
                continue
            if self.is_required.any() and not req:
                continue
            out.append(seq)
        return out


class HierarchicalEnv(HierarchicalBackward, _CrystalTransitions, Environment):
    """CHGFlowNet / SHAFT: ``2 T`` transitions alternating space group (a) and atom-lattice (b)."""

    def __init__(self, config: HierarchicalConfig = HierarchicalConfig()):
        super().__init__(config)
        self.max_steps = 2 * self.T

    def sample_action(
        self, key, fwd_out, state: HierarchicalState, explore: Exploration
    ) -> HierarchicalAction:
        """Phase 0: the group, with zero placeholders for the atom-lattice fields (``step`` ignores them). Phase
        1: the atom-lattice choice, the group field being the state's group (not sampled)."""
        return self._sample_parts(key, fwd_out, state, explore, True, True)

    def _sample_parts(self, key, fwd_out, state, explore, group_part: bool, atom_part: bool):
        """:meth:`sample_action` drawing only the parts asked for (static flags); a part not drawn is what
        :meth:`sample_action` returns for a state that does not need it, so with the part a state needs drawn
        the result equals :meth:`sample_action`'s."""
        k_g, k_al = jax.random.split(key)
        current = jnp.maximum(state.group_index, 0)
        g = current
        if group_part:
            g_new = sample_masked_categorical(k_g, self.split_fwd(fwd_out)[0], self.group_mask(), explore)
            g = jnp.where(state.phase == 0, g_new, current)
        u, frac, el = jnp.zeros((6,), jnp.float32), jnp.zeros((3,), jnp.float32), jnp.asarray(0, jnp.int32)
        if atom_part:
            u_s, frac_s, el_s = self.sample_atom_lattice(k_al, fwd_out, state, explore)
            phase1 = state.phase == 1
            u, frac, el = jnp.where(phase1, u_s, u), jnp.where(phase1, frac_s, frac), jnp.where(phase1, el_s, el)
        return HierarchicalAction(group_index=g, lattice_u=u, frac=frac, element_index=el)

    def sample_action_batch(self, keys, fwd_out, states: HierarchicalState, explore: Exploration):
        """Batched :meth:`sample_action` that draws only what the batch needs: the group on group transitions,
        the atom-lattice choice on placements (a rollout's trajectories move in lockstep, so every state of a batch
        from s0 is in the same phase). Same values as the vmapped :meth:`sample_action`; a batch with both phases
        draws both (under an outer vmap both branches run and select)."""
        part = lambda g, a: jax.vmap(lambda k, f, s: self._sample_parts(k, f, s, explore, g, a))(
            keys, fwd_out, states)
        return jax.lax.cond(
            jnp.all(states.phase == 0),
            lambda: part(True, False),
            lambda: jax.lax.cond(jnp.all(states.phase == 1), lambda: part(False, True), lambda: part(True, True)),
        )

    def log_pf(self, fwd_out, state: HierarchicalState, action: HierarchicalAction) -> jnp.ndarray:
        lp_g = masked_log_softmax(self.split_fwd(fwd_out)[0], self.group_mask())[action.group_index]
        lp_al = self.atom_lattice_log_prob(fwd_out, state, jnp.maximum(state.group_index, 0), action)
        return jnp.where(state.phase == 0, lp_g, lp_al)

    def step(self, state: HierarchicalState, action: HierarchicalAction) -> HierarchicalState:
        chosen = state.replace(
            spacegroup=jnp.asarray(self.groups)[action.group_index],
            group_index=action.group_index,
            phase=jnp.asarray(1, jnp.int32),
        )
        placed = self.place(state, jnp.maximum(state.group_index, 0), action)
        new = tree_where(state.phase == 0, chosen, placed)
        return tree_where(state.done, state, new)

    def step_batch(self, states: HierarchicalState, actions: HierarchicalAction) -> HierarchicalState:
        """Batched :meth:`step` that skips the placement (lattice constraints + orbit expansion) when no live
        state of the batch is in phase 1, i.e. on the group transitions of a rollout (all trajectories move in
        lockstep from s0): ``step`` evaluates both branches and selects, so half of its expansions are
        discarded. Same values as ``jax.vmap(self.step)`` (a real branch under jit; under an outer vmap both
        branches run and select)."""

        def choose_only(state, action):
            chosen = state.replace(
                spacegroup=jnp.asarray(self.groups)[action.group_index],
                group_index=action.group_index,
                phase=jnp.asarray(1, jnp.int32),
            )
            return tree_where(state.done, state, chosen)  # no live phase-1 state in this branch

        need_place = jnp.any((states.phase == 1) & ~states.done)
        return jax.lax.cond(
            need_place,
            lambda: jax.vmap(self.step)(states, actions),
            lambda: jax.vmap(choose_only)(states, actions),
        )

    def log_pb(self, bwd_out, next_state, action, prev_state) -> jnp.ndarray:
        return jnp.where(prev_state.phase == 0, 0.0, self.backward_log_prob(bwd_out, next_state, prev_state))
