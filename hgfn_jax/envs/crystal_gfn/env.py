"""Crystal-GFN environment (paper 001): space group -> composition -> lattice parameters, as one stateless
pure-JAX environment implementing ``hgfn_jax.gflownet.env.Environment``.

Stages run in a fixed order (``do_sg_before_composition`` in the Mila config): the space-group subspace
(``spacegroup_subspace``), then the composition subspace constrained by the group's Wyckoff positions and charge
neutrality (``composition_subspace``), then the lattice parameters of the group's lattice system
(``lattice_subspace``). Each subspace ends with its own stop action; ``is_done`` after the lattice EOS.

Policy outputs (flat, interpreted here):

- forward ``[fwd_dim]`` = space-group logits ``[13 + G + 1]`` | composition logits ``[E * cap + 1]`` | lattice
  Beta-mixture parameters and EOS logit ``[6 * n_comp * 3 + 1]``;
- backward ``[bwd_dim]`` (``learn_pb=True``, the paper's learned backward MLP) = space-group parent logits
  ``[6]`` | composition element logits ``[E]`` (which element was added last) | lattice backward mixture and
  back-to-source logit ``[6 * n_comp * 3 + 1]``. With ``learn_pb=False``, ``bwd_dim = 0``: uniform discrete
  parents and a fixed backward Beta(1, 1) increment with back-to-source probability 0.1.

Log-probabilities: counting measure for the discrete choices, Lebesgue on the free normalised lattice
coordinates for the continuous ones (see ``lattice_subspace``). ``log_pf`` is always the untempered,
non-exploratory policy.

Defaults are the paper's App. B settings (Mila ``starling_fe`` config): 22 elements, <= 16 atoms per element,
<= 80 atoms, 1-5 distinct elements, the 113 space groups of the MatBench train/validation intersection, lengths
0.9-100 Angstrom, angles 50-150 degrees, 5 Beta components with coefficients in [0.1, 100.1], minimum
increment 10 % of each range.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal import elements as elm
from hgfn_jax.crystal import spacegroup as sgm
from hgfn_jax.crystal.lattice import rhombohedral_to_hexagonal
from hgfn_jax.crystal.types import CrystalSpec
from hgfn_jax.envs.crystal_gfn import composition_parents as comp_parents
from hgfn_jax.envs.crystal_gfn import composition_subspace as comp
from hgfn_jax.envs.crystal_gfn import lattice_subspace as lat
from hgfn_jax.envs.crystal_gfn import spacegroup_subspace as sgs
from hgfn_jax.envs.crystal_gfn import wyckoff as wy
from hgfn_jax.envs.crystal_gfn.defaults import PAPER_ELEMENTS, PAPER_SPACEGROUPS
from hgfn_jax.envs.crystal_gfn.restrictions import Restrictions, resolve
from hgfn_jax.envs.crystal_gfn.types import (
    LATTICE_EOS,
    LATTICE_INCREMENT,
    N_STAGES,
    STAGE_COMPOSITION,
    STAGE_DONE,
    STAGE_LATTICE,
    STAGE_SPACEGROUP,
    CompositionState,
    CrystalAction,
    CrystalState,
)
from hgfn_jax.envs.crystal_gfn.validation import validate_elements, validate_sizes, validate_spacegroups
from hgfn_jax.gflownet.distributions import sample_masked_icdf
from hgfn_jax.gflownet.env import (
    NEG_INF,
    Environment,
    Exploration,
    masked_log_softmax,
    tree_where,
)


class CrystalGFN(Environment):
    """The Crystal-GFN environment. See the module docstring; all arguments are validated on construction."""

    def __init__(
        self,
        elements: Sequence[str] = PAPER_ELEMENTS,
        spacegroups: Sequence[int] = PAPER_SPACEGROUPS,
        max_per_element: int = 16,
        max_atoms: int = 80,
        min_distinct: int = 1,
        max_distinct: int = 5,
        lengths: tuple[float, float] = (0.9, 100.0),
        angles: tuple[float, float] = (50.0, 150.0),
        n_comp: int = 5,
        min_incr: float = 0.1,
        beta_min: float = 0.1,
        beta_max: float = 100.0,
        oxidation_states: str = "smact_default",
        allow_elemental: bool = True,
        allow_alloys: bool = True,
        composition_mode: str = "auto",
        learn_pb: bool = True,
        restrictions: Restrictions | None = None,
    ):
        self._kwargs = dict(
            elements=tuple(elements), spacegroups=tuple(spacegroups), max_per_element=max_per_element,
            max_atoms=max_atoms, min_distinct=min_distinct, max_distinct=max_distinct, lengths=tuple(lengths),
            angles=tuple(angles), n_comp=n_comp, min_incr=min_incr, beta_min=beta_min, beta_max=beta_max,
            oxidation_states=oxidation_states, allow_elemental=allow_elemental, allow_alloys=allow_alloys,
            composition_mode=composition_mode, learn_pb=learn_pb,
        )  # fmt: skip
        self.elements = validate_elements(elements)
        self.z = np.array([elm.atomic_number(s) for s in self.elements], np.int32)
        self.spacegroups = validate_spacegroups(spacegroups)
        cap, max_atoms, min_distinct, max_distinct, lengths, angles = validate_sizes(
            len(self.elements), max_per_element, max_atoms, min_distinct, max_distinct, lengths, angles, min_incr,
            n_comp, beta_min, beta_max)
        n_el = len(self.elements)
        self.cap = cap
        self.learn_pb = bool(learn_pb)
        self.base_lengths, self.base_angles = lengths, angles
        self.restrictions = restrictions

        # ---- restriction (sec. 6.5) -------------------------------------------------------------------------
        res = resolve(restrictions, self.elements, self.spacegroups, cap, min_distinct, max_distinct, max_atoms,
                      lengths, angles)
        element_caps, r_min, r_max, r_atoms = res.element_caps, res.min_distinct, res.max_distinct, res.max_atoms
        sg_allowed = res.spacegroup_allowed
        (low_len, high_len), (low_ang, high_ang) = res.lengths, res.angles

        # ---- tables -----------------------------------------------------------------------------------------
        self.wyckoff = wy.build_tables(self.spacegroups, cap)
        self.comp_config = comp.CompositionConfig(
            symbols=self.elements, cap=cap, element_caps=tuple(int(c) for c in element_caps), max_atoms=r_atoms,
            min_distinct=r_min, max_distinct=r_max, oxidation_set=oxidation_states,
            allow_elemental=bool(allow_elemental), allow_alloys=bool(allow_alloys), mode=composition_mode,
        )  # fmt: skip
        self.comp = comp.build_tables(self.comp_config, self.wyckoff)
        ok = sg_allowed & self.comp.group_feasible
        if not ok.any():
            raise ValueError(
                "no space group admits a valid composition under this configuration/restriction "
                f"(allowed groups: {int(sg_allowed.sum())}; elements with cap > 0: "
                f"{[s for s, c in zip(self.elements, element_caps, strict=True) if c > 0]})"
            )
        self.sg_ok = ok
        self.sg = sgs.build_tables(self.spacegroups, ok)
        self.lat_config = lat.LatticeConfig(
            low=(low_len,) * 3 + (low_ang,) * 3, high=(high_len,) * 3 + (high_ang,) * 3, n_comp=n_comp,
            min_incr=min_incr, beta_min=beta_min, beta_max=beta_max,
        )  # fmt: skip
        self.lat = lat.build_tables(self.lat_config)
        self._glow = jnp.asarray((lengths[0],) * 3 + (angles[0],) * 3, jnp.float32)
        self._ghigh = jnp.asarray((lengths[1],) * 3 + (angles[1],) * 3, jnp.float32)

        # ---- dimensions -------------------------------------------------------------------------------------
        self.n_sg_actions = self.sg.n_actions
        self.n_comp_actions = n_el * cap + 1
        self.n_lat_out = self.lat_config.n_out
        self.fwd_dim = self.n_sg_actions + self.n_comp_actions + self.n_lat_out
        self.bwd_dim = (sgs.BWD_DIM + n_el + self.n_lat_out) if self.learn_pb else 0
        self.obs_dim = N_STAGES + (sgs.N_CLS + 1) + (sgs.N_PS + 1) + (len(self.spacegroups) + 1) + 2 * n_el + 2 + 13
        self.max_steps = 4 + (r_max + 1) + (1 + self.lat_config.max_increments + 1)
        self._fixed_lat_bwd = self._fixed_lattice_backward()
        self._n_disc = max(self.n_sg_actions, self.n_comp_actions)  # one categorical over the active head
        self._disc_width = max(8, int(np.ceil(np.sqrt(self._n_disc))))  # row width of the two-level inverse CDF

    # ------------------------------------------------------------------------------------------------------
    def restrict(self, restrictions: Restrictions) -> CrystalGFN:
        """The same environment (same action/observation dimensions) under sampling-time restrictions."""
        return CrystalGFN(**self._kwargs, restrictions=restrictions)

    def _fixed_lattice_backward(self) -> jnp.ndarray:
        cfg = self.lat_config
        z = float(np.log((1.0 - cfg.beta_min) / cfg.beta_max) - np.log1p(-(1.0 - cfg.beta_min) / cfg.beta_max))
        p = np.zeros((lat.N_PARAMS, cfg.n_comp, 3), np.float32)
        p[..., 1] = z
        p[..., 2] = z  # alpha = beta = 1: uniform backward increments
        return jnp.asarray(np.concatenate([p.ravel(), [np.log(0.1 / 0.9)]]).astype(np.float32))

    def _split_fwd(self, fwd):
        a, b = self.n_sg_actions, self.n_sg_actions + self.n_comp_actions
        return fwd[:a], fwd[a:b], fwd[b:]

    def _split_bwd(self, bwd):
        if not self.learn_pb:
            return None, None, self._fixed_lat_bwd
        n_el = len(self.elements)
        a, b = sgs.BWD_DIM, sgs.BWD_DIM + n_el
        return bwd[:a], bwd[a:b], bwd[b:]

    def _row(self, state: CrystalState) -> jnp.ndarray:
        return jnp.clip(state.spacegroup.row, 0, self.sg.n_groups - 1)

    def _lattice_system(self, state: CrystalState) -> jnp.ndarray:
        return self.sg.lattice_system_of[self._row(state)]

    # ---- contract ------------------------------------------------------------------------------------------
    def init(self) -> CrystalState:
        return CrystalState(
            stage=jnp.asarray(STAGE_SPACEGROUP, jnp.int32),
            spacegroup=sgs.init_state(),
            composition=comp.init_state(self.comp),
            lattice=lat.init_state(),
        )

    def is_done(self, state: CrystalState) -> jnp.ndarray:
        return state.stage == STAGE_DONE

    def masks(self, state: CrystalState) -> tuple[jnp.ndarray, jnp.ndarray]:
        """(space-group mask ``[13 + G + 1]``, composition mask ``[E * cap + 1]``) of ``state``."""
        return sgs.forward_mask(self.sg, state.spacegroup), comp.forward_mask(self.comp, self._row(state),
                                                                             state.composition)

    def encode(self, state: CrystalState) -> jnp.ndarray:
        s = state.spacegroup
        c = state.composition
        free = lat.free_mask(self.lat, self._lattice_system(state))
        x = lat.physical(self.lat, state.lattice, self._lattice_system(state))
        xg = (x - self._glow) / (self._ghigh - self._glow)
        at_src = state.lattice.at_source | (state.stage < STAGE_LATTICE)
        feats = [
            jax.nn.one_hot(state.stage, N_STAGES),
            jax.nn.one_hot(s.cls + 1, sgs.N_CLS + 1),
            jax.nn.one_hot(s.ps + 1, sgs.N_PS + 1),
            jax.nn.one_hot(s.row + 1, self.sg.n_groups + 1),
            c.counts.astype(jnp.float32) / self.cap,
            (c.counts > 0).astype(jnp.float32),
            (c.n_elements / self.comp_config.max_distinct)[None].astype(jnp.float32),
            (c.n_atoms / self.comp_config.max_atoms)[None].astype(jnp.float32),
            jnp.where(at_src, 0.0, xg),
            at_src[None].astype(jnp.float32),
            (free & (state.stage >= STAGE_LATTICE)).astype(jnp.float32),
        ]
        return jnp.concatenate(feats).astype(jnp.float32)

    def _discrete(self, fwd_out: jnp.ndarray, state: CrystalState) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Logits and mask of the ACTIVE discrete subspace, ``[max(13 + G + 1, E * cap + 1)]`` indexed by the
        stage-local action index (space-group actions in the space-group stage, composition actions otherwise;
        entries past the active head and every entry outside the two discrete stages are masked). Only one head
        is live per state, so one categorical over the longer of the two heads replaces the concatenation."""
        f_sg, f_comp, _ = self._split_fwd(fwd_out)
        m_sg, m_comp = self.masks(state)
        n = self._n_disc
        pad = lambda x, v: jnp.concatenate([x, jnp.full((n - x.shape[0],), v, x.dtype)]) if x.shape[0] < n else x
        in_sg = state.stage == STAGE_SPACEGROUP
        logits = jnp.where(in_sg, pad(f_sg, 0.0), pad(f_comp, 0.0))
        mask = jnp.where(in_sg, pad(m_sg, False), pad(m_comp & (state.stage == STAGE_COMPOSITION), False))
        return logits, mask

    # Each transition is split into a discrete part (space-group / composition stages) and a lattice part. The
    # per-state methods combine both; the batched overrides below (used by the rollout) run each part only when
    # some state of the batch needs it (``lax.cond`` on a batch-level predicate) and combine them identically.

    def _uniforms(self, key: jax.Array) -> jnp.ndarray:
        """One draw for the whole step: 2 uniforms in [0, 1) for the discrete choice, then the lattice uniforms in
        [1e-12, 1) (exactly what ``jax.random.uniform(..., minval=1e-12)`` computes from the same bits)."""
        u = jax.random.uniform(key, (2 + lat.N_UNIFORMS,))
        return jnp.concatenate([u[:2], jnp.maximum(1e-12, u[2:] + 1e-12)])

    def _sample_discrete(self, u: jnp.ndarray, fwd_out, state: CrystalState, explore: Exploration) -> jnp.ndarray:
        logits, mask = self._discrete(fwd_out, state)
        return sample_masked_icdf(u[:2], logits, mask, explore, self._disc_width)

    def _sample_lattice(self, key: jax.Array, u: jnp.ndarray, fwd_out, state: CrystalState, explore: Exploration):
        _, _, f_lat = self._split_fwd(fwd_out)
        free = lat.free_mask(self.lat, self._lattice_system(state))
        return lat.sample(key, f_lat, state.lattice, free, self.lat, explore, u[2:])

    def _action(self, state: CrystalState, a_disc, eos, r) -> CrystalAction:
        a_lat = jnp.where(eos, LATTICE_EOS, LATTICE_INCREMENT)
        stage = state.stage
        index = jnp.where(stage == STAGE_LATTICE, a_lat, a_disc)
        value = jnp.where(((stage == STAGE_LATTICE) & ~eos)[..., None], r, 0.0)
        return CrystalAction(stage=stage, index=index.astype(jnp.int32), value=value.astype(jnp.float32))

    def sample_action(self, key: jax.Array, fwd_out: jnp.ndarray, state: CrystalState, explore: Exploration):
        u = self._uniforms(key)
        a_disc = self._sample_discrete(u, fwd_out, state, explore)
        eos, r = self._sample_lattice(key, u, fwd_out, state, explore)
        return self._action(state, a_disc, eos, r)

    def _log_pf_discrete(self, fwd_out, state: CrystalState, action: CrystalAction) -> jnp.ndarray:
        logits, mask = self._discrete(fwd_out, state)
        return masked_log_softmax(logits, mask)[jnp.clip(action.index, 0, logits.shape[0] - 1)]

    def _log_pf_lattice(self, fwd_out, state: CrystalState, action: CrystalAction) -> jnp.ndarray:
        _, _, f_lat = self._split_fwd(fwd_out)
        free = lat.free_mask(self.lat, self._lattice_system(state))
        return lat.log_pf(f_lat, state.lattice, action.index == LATTICE_EOS, action.value, free, self.lat)

    @staticmethod
    def _combine_pf(st, lp_disc, lp_lat):
        out = jnp.where(st == STAGE_LATTICE, lp_lat, lp_disc)
        return jnp.where(st == STAGE_DONE, 0.0, out).astype(jnp.float32)

    def log_pf(self, fwd_out: jnp.ndarray, state: CrystalState, action: CrystalAction) -> jnp.ndarray:
        return self._combine_pf(state.stage, self._log_pf_discrete(fwd_out, state, action),
                                self._log_pf_lattice(fwd_out, state, action))

    def _step_composition(self, state: CrystalState, action: CrystalAction) -> CompositionState:
        row = self._row(state)
        c = comp.step(self.comp, row, state.composition, jnp.clip(action.index, 0, self.n_comp_actions - 2))
        if self.comp.exact:  # every present element is an admissible parent (composition_parents)
            return c
        # chain mode: computed once here, when the composition is built, and read by P_B (also in the replay
        # of the visited states, which would otherwise recompute the subset DP for every state)
        return c.replace(parents=comp_parents.parent_mask(self.comp, row, c))

    def step(self, state: CrystalState, action: CrystalAction) -> CrystalState:
        return self._step_with(state, action, self._step_composition(state, action))

    def _step_with(self, state: CrystalState, action: CrystalAction, c_next: CompositionState) -> CrystalState:
        st = state.stage
        idx = action.index
        # space group
        sg_stop = idx == self.n_sg_actions - 1
        sg_next = sgs.step(self.sg, state.spacegroup, idx)
        s_sg = state.replace(
            stage=jnp.where(sg_stop, STAGE_COMPOSITION, STAGE_SPACEGROUP).astype(jnp.int32),
            spacegroup=tree_where(sg_stop, state.spacegroup, sg_next),
        )
        # composition
        c_stop = idx == self.n_comp_actions - 1
        s_comp = state.replace(
            stage=jnp.where(c_stop, STAGE_LATTICE, STAGE_COMPOSITION).astype(jnp.int32),
            composition=tree_where(c_stop, state.composition, c_next),
        )
        # lattice
        l_eos = idx == LATTICE_EOS
        free = lat.free_mask(self.lat, self._lattice_system(state))
        l_next = lat.step_increment(self.lat, state.lattice, action.value, free)
        s_lat = state.replace(
            stage=jnp.where(l_eos, STAGE_DONE, STAGE_LATTICE).astype(jnp.int32),
            lattice=tree_where(l_eos, state.lattice, l_next),
        )
        out = tree_where(st == STAGE_SPACEGROUP, s_sg, tree_where(st == STAGE_COMPOSITION, s_comp, s_lat))
        return tree_where(st == STAGE_DONE, state, out)

    def _log_pb_lattice(self, bwd_out, next_state: CrystalState, action: CrystalAction, prev_state: CrystalState):
        _, _, b_lat = self._split_bwd(bwd_out)
        free = lat.free_mask(self.lat, self._lattice_system(prev_state))
        return lat.log_pb_increment(b_lat, next_state.lattice, prev_state.lattice, free, self.lat)

    def log_pb(self, bwd_out, next_state: CrystalState, action: CrystalAction, prev_state: CrystalState):
        return self._log_pb_with(bwd_out, next_state, action, prev_state,
                                 self._log_pb_lattice(bwd_out, next_state, action, prev_state),
                                 self._parents(next_state))

    def _parents(self, next_state: CrystalState) -> jnp.ndarray:
        """``[E] bool``: elements that may have been added last (``composition_parents``, set by ``step``)."""
        return next_state.composition.parents

    def _log_pb_with(self, bwd_out, next_state: CrystalState, action: CrystalAction, prev_state: CrystalState,
                     lp_lat_inc, parents):
        b_sg, b_comp, _ = self._split_bwd(bwd_out)
        st = action.stage
        idx = action.index
        # space group: stop has a deterministic backward step
        lp_sg = jnp.where(idx == self.n_sg_actions - 1, 0.0,
                          sgs.log_pb(b_sg, next_state.spacegroup, prev_state.spacegroup))
        # composition: which present element was added last, over the parents the forward policy can come from
        e = jnp.clip(idx // self.cap, 0, len(self.elements) - 1)
        if b_comp is None:
            n_par = jnp.sum(parents).astype(jnp.float32)
            lp_el = jnp.where(parents[e], -jnp.log(jnp.maximum(n_par, 1.0)), NEG_INF)
        else:
            lp_el = masked_log_softmax(b_comp, parents)[e]
        lp_comp = jnp.where(idx == self.n_comp_actions - 1, 0.0, lp_el)
        # lattice
        lp_lat = jnp.where(idx == LATTICE_EOS, 0.0, lp_lat_inc)
        out = jnp.where(st == STAGE_SPACEGROUP, lp_sg, jnp.where(st == STAGE_COMPOSITION, lp_comp, lp_lat))
        return jnp.where(st == STAGE_DONE, 0.0, out).astype(jnp.float32)

    # ---- batched entry points (rollout) ---------------------------------------------------------------------
    def sample_action_batch(self, keys, fwd_out, states: CrystalState, explore: Exploration):
        u = jax.vmap(self._uniforms)(keys)
        st = states.stage
        n = st.shape[0]
        a_disc = jax.lax.cond(
            jnp.any(st < STAGE_LATTICE),
            lambda: jax.vmap(self._sample_discrete, in_axes=(0, 0, 0, None))(u, fwd_out, states, explore),
            lambda: jnp.zeros(n, jnp.int32))
        eos, r = jax.lax.cond(
            jnp.any(st == STAGE_LATTICE),
            lambda: jax.vmap(self._sample_lattice, in_axes=(0, 0, 0, 0, None))(keys, u, fwd_out, states, explore),
            lambda: (jnp.ones(n, bool), jnp.zeros((n, lat.N_PARAMS), jnp.float32)))
        return self._action(states, a_disc, eos, r)

    def log_pf_batch(self, fwd_out, states: CrystalState, actions: CrystalAction):
        st = states.stage
        zeros = lambda: jnp.zeros(st.shape, jnp.float32)
        lp_disc = jax.lax.cond(jnp.any(st < STAGE_LATTICE),
                               lambda: jax.vmap(self._log_pf_discrete)(fwd_out, states, actions), zeros)
        lp_lat = jax.lax.cond(jnp.any(st == STAGE_LATTICE),
                              lambda: jax.vmap(self._log_pf_lattice)(fwd_out, states, actions), zeros)
        return self._combine_pf(st, lp_disc, lp_lat)

    def step_batch(self, states: CrystalState, actions: CrystalAction):
        c_next = jax.lax.cond(jnp.any(states.stage == STAGE_COMPOSITION),
                              lambda: jax.vmap(self._step_composition)(states, actions),
                              lambda: states.composition)
        return jax.vmap(self._step_with)(states, actions, c_next)

    def log_pb_batch(self, bwd_out, next_states: CrystalState, actions: CrystalAction, prev_states: CrystalState):
        st = actions.stage
        lp_lat = jax.lax.cond(jnp.any(st == STAGE_LATTICE),
                              lambda: jax.vmap(self._log_pb_lattice)(bwd_out, next_states, actions, prev_states),
                              lambda: jnp.zeros(st.shape, jnp.float32))
        parents = jax.vmap(self._parents)(next_states)
        return jax.vmap(self._log_pb_with)(bwd_out, next_states, actions, prev_states, lp_lat, parents)

    def terminal(self, state: CrystalState) -> CrystalSpec:
        """The typed terminal object rewards consume: atoms per atomic number in the conventional cell, space-group
        number, lattice of that cell (see ``terminal_info`` for the rhombohedral groups)."""
        info = self.terminal_info(state)
        return CrystalSpec(counts=info["counts_z"], spacegroup=info["spacegroup"],
                           lattice=info["lattice"].astype(jnp.float32))

    def terminal_info(self, state: CrystalState) -> dict[str, jnp.ndarray]:
        """The terminal record rewards and metrics read: space group number ``[]`` (0 if unset), counts ``[E]``,
        counts by atomic number ``[119]``, ``lattice [6]`` (Angstrom, degrees) of the cell the counts describe,
        ``lattice_sampled [6]`` (the cell as the lattice stage sampled it: ties and fixed angles applied), lattice
        system ``[]``, ``cell_ok []`` (the sampled parameters form a cell of positive volume).

        The two lattices differ for the R groups only: the lattice stage samples them on rhombohedral axes
        (paper 001), but the counts follow the Wyckoff multiplicities of the hexagonal-axes conventional cell
        (3x the volume), so ``lattice`` is that hexagonal cell; a density or a volume per atom computed from
        ``counts`` and ``lattice`` is then right for every group."""
        row = self._row(state)
        number = jnp.where(state.spacegroup.row >= 0, self.sg.groups[row], 0)
        ls = self._lattice_system(state)
        params = lat.physical(self.lat, state.lattice, ls)
        counts = state.composition.counts
        counts_z = jnp.zeros(elm.NUM_ELEMENTS, jnp.int32).at[jnp.asarray(self.z)].add(counts)
        conventional = jnp.where(ls == sgm.RHOMBOHEDRAL, rhombohedral_to_hexagonal(params), params)
        return {
            "spacegroup": number.astype(jnp.int32),
            "counts": counts,
            "counts_z": counts_z,
            "lattice": conventional,
            "lattice_sampled": params,
            "lattice_system": ls,
            "cell_ok": lat.cell_volume_factor(params) > 0.0,
        }

    # ---- host helpers (tests, evaluation) -----------------------------------------------------------------
    def composition_valid(self, spacegroup: int, counts: Sequence[int]) -> bool:
        """Host: is ``counts`` (per configured element) a valid terminal composition in ``spacegroup``."""
        rows = np.nonzero(np.asarray(self.spacegroups) == int(spacegroup))[0]
        if len(rows) == 0:
            raise ValueError(f"space group {spacegroup} is not in this environment's list")
        ox = comp.oxidation_states(self.elements, self.comp_config.oxidation_set)
        return bool(comp.valid_host(self.comp_config, self.wyckoff, int(rows[0]), np.asarray([counts]), ox)[0])


__all__ = ["CrystalGFN"]
