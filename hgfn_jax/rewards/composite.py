"""Composite rewards of CHGFlowNet (paper 000) and SHAFT (002), with per-term outputs (Crystal-GFN, paper 001:
:mod:`hgfn_jax.rewards.crystal_gfn`; the shared interface: :mod:`hgfn_jax.rewards.base`).

Interface: a factory turns a config (frozen dataclass, or a mapping via :func:`reward_from_config`) and
injected property functions into a pure, jit/vmap-safe function on ONE crystal::

    log_reward(crystal) -> (log_r [] float32, terms: dict[str, [] float32])

``terms`` always holds ``log_reward`` and ``structure_valid`` plus every component, as float32 scalars
(booleans as 0/1), so training can log them. Property functions are injected so the same reward can be trained
on M3GNet (``hgfn_jax.models.host_bridge.make_property_fn``), a proxy or a synthetic target::

    energy_fn(crystal) -> (value [] float32, valid [] bool)      # formation energy, eV/atom
    bandgap_fn(crystal) -> (value [] float32, valid [] bool)     # band gap, eV

A value is used only if ``valid`` is True, it is finite and the structure is valid; otherwise the documented
penalty applies. Log-rewards are floored (never -inf/NaN). Invalid structures (see
``physics.structure_valid``; a crystal with ``overflow`` set is also treated as invalid because its sites are
incomplete) get every term at its worst value and the floor log-reward; property functions are called on a
sanitized stand-in (``physics.sanitize``) so a broken crystal never reaches a model.

Formulas and sources
--------------------
**CHGFlowNet** (paper 000, Sec. 4.3, eq. 15): ``R = (R_e + R_P) * R_bond + R_comp``

- ``R_e = exp(-E)`` (Sec. 4.3), ``E`` the predicted formation energy per atom. Appendix A.3.6: predictions
  below the cut-off -10 eV/atom are set to +10 eV/atom (``low_energy_rule="penalize"``, default); we also cap
  ``E <= 10`` (SHAFT's clamp, harmless here). An invalid/non-finite prediction gets ``E = 10`` (the same
  penalty value; our choice, the paper says nothing).
- ``R_P``: eq. 14 density Gaussian, ``3 exp(-(rho - 3)^2 / 2)`` (reference-code constants).
- ``R_bond``: eqs. 11-13, Table 6 constants (``physics.bond_term``).
- ``R_comp``: 1 if SMACT-valid (``hgfn_jax.crystal.chemistry.smact_valid_crystal``), else 0.
- Clip: the reference code (``reward_func_gd_dm_max_dist_SMACT``) clips ``R`` to [1e-4, 10]; default here
  (``reward_min = 1e-4, reward_max = 10``; ``reward_max=None`` removes the cap). The cap makes every structure
  with ``E <~ -2.3`` eV/atom, valid bonds and a valid composition equally rewarded.

**SHAFT** (paper 002, Sec. 4.2, eq. 8; the weights and the normalisation were lost in the text extraction and
are taken from the SHAFT reference code ``reward_pref_bond_dict``, consistent with App. 10.9's text "bond
weight largest, density and formation energy equal, validity lowered"):
``R = w_e R_e + w_b R_b + w_d R_P + w_v R_comp (+ w_g R_g)``, with

- ``R_e = exp(-E / beta)``, ``beta = 10`` (the "normalization term"), ``E`` clamped to [-10, 10] eV/atom
  (App. 10.8); invalid prediction -> ``E = 10``;
- ``R_b = exp(-bs)``, the bond-length score of eq. 7 (``physics.shaft_bond_term``); ``bond="chgflownet"``
  uses eq. 13's ``R_bond`` instead;
- ``R_P = exp(-(rho - 3)^2 / 2)`` (SHAFT code: ``a = 1``);
- weights ``w_e = 0.2, w_b = 0.5, w_d = 0.2, w_v = 0.1``; ``R`` clipped below at 1e-5 (code).
- Band-gap extension (Sec. 15, eqs. 17-18: formula and weights lost). Our choice, flagged as such: a Gaussian
  of the same form as eq. 14, ``R_g = exp(-(BG - b_g)^2 / (2 c_g^2))`` with target ``b_g = 0`` eV ("near zero
  band gap") and width ``c_g = 0.5`` eV, added with weight ``w_g`` (default 0: off; used only with
  ``bandgap_fn``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import jax.numpy as jnp

from hgfn_jax.crystal import chemistry as chem
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.data.bond_stats import BondTable, load_bond_table
from hgfn_jax.rewards import physics
from hgfn_jax.rewards.base import LogRewardFn, PropertyFn, Terms, f32, property_value, staged_reward
from hgfn_jax.rewards.crystal_gfn import CrystalGFNRewardConfig, make_crystal_gfn_reward

SITE_BUCKETS = (32, 64, 128, 256)


@dataclass(frozen=True)
class CHGFlowNetRewardConfig:
    """Eq. 15 of paper 000 (defaults: Table 6 and the reference code)."""

    alpha_p: float = physics.ALPHA_P
    beta_p: float = physics.BETA_P
    gamma_p: float = physics.GAMMA_P
    graded_bond: bool = False  # reference-code fraction scaling of the penalties (physics.bond_term)
    density_a: float = 3.0
    density_b: float = 3.0  # g/cm^3
    density_c: float = 1.0  # g/cm^3
    energy_min: float = -10.0  # eV/atom cut-off (App. A.3.6)
    energy_max: float = 10.0  # eV/atom cap
    energy_penalty: float = 10.0  # eV/atom used for invalid predictions (and below the cut-off if "penalize")
    low_energy_rule: str = "penalize"  # "penalize" (A.3.6: E < energy_min -> energy_penalty) or "clamp"
    use_energy: bool = True  # False: ablation "w/o formation energy" (R_e = 0)
    use_density: bool = True
    use_bond: bool = True
    use_composition: bool = True
    reward_min: float = 1e-4
    reward_max: float | None = 10.0
    max_elements: int | None = None  # distinct elements handled by the SMACT check (None: N, exact)
    # batched evaluation of the terms other than the energy at these site counts (+ the padded size), chunk by
    # chunk (rewards.base.staged_reward); () = on the full padding. A speed setting: the values do not change.
    site_buckets: tuple[int, ...] = SITE_BUCKETS


@dataclass(frozen=True)
class ShaftRewardConfig:
    """Eq. 8 of paper 002 (weights and constants from the SHAFT reference code)."""

    w_energy: float = 0.2
    w_bond: float = 0.5
    w_density: float = 0.2
    w_validity: float = 0.1
    w_bandgap: float = 0.0  # Sec. 15 extension; needs bandgap_fn
    energy_beta: float = 10.0  # normalisation of exp(-E / beta)
    energy_min: float = -10.0
    energy_max: float = 10.0
    energy_penalty: float = 10.0
    bond: str = "shaft"  # "shaft" (eq. 7, exp(-bs)) or "chgflownet" (eq. 13)
    bond_cutoff: float = 4.0  # A
    bond_k: int = 64  # neighbours kept per site for eq. 7
    alpha_p: float = physics.ALPHA_P  # only for bond="chgflownet"
    beta_p: float = physics.BETA_P
    gamma_p: float = physics.GAMMA_P
    density_a: float = 1.0
    density_b: float = 3.0
    density_c: float = 1.0
    bandgap_target: float = 0.0  # eV (our choice, see module docstring)
    bandgap_width: float = 0.5  # eV (our choice)
    reward_min: float = 1e-5
    reward_max: float | None = None
    max_elements: int | None = None  # distinct elements handled by the SMACT check (None: N, exact)
    site_buckets: tuple[int, ...] = SITE_BUCKETS  # as CHGFlowNetRewardConfig.site_buckets


def _log_clip(r: jnp.ndarray, r_min: float, r_max: float | None) -> jnp.ndarray:
    if not r_min > 0:
        raise ValueError(f"reward_min must be > 0 so that the log-reward is finite, got {r_min}")
    r = jnp.where(jnp.isfinite(r), r, r_min)
    r = jnp.maximum(r, r_min)
    if r_max is not None:
        r = jnp.minimum(r, r_max)
    return jnp.log(r)


def _energy(e: jnp.ndarray, ok: jnp.ndarray, lo: float, hi: float, penalty: float, rule: str) -> jnp.ndarray:
    e = jnp.where(ok, e, penalty)
    if rule == "penalize":
        e = jnp.where(e < lo, penalty, e)
    elif rule != "clamp":
        raise ValueError(f"low_energy_rule must be 'penalize' or 'clamp', got {rule!r}")
    return jnp.clip(e, lo, hi)


def make_chgflownet_reward(
    config: CHGFlowNetRewardConfig = CHGFlowNetRewardConfig(),
    energy_fn: PropertyFn | None = None,
    bond_table: BondTable | None = None,
    smact: chem.SmactTables | None = None,
) -> LogRewardFn:
    """CHGFlowNet's physics-informed reward (paper 000, eq. 15) as ``log_reward(crystal)``."""
    if config.use_energy and energy_fn is None:
        raise ValueError("CHGFlowNet reward needs energy_fn (or use_energy=False for the ablation)")
    if config.low_energy_rule not in ("penalize", "clamp"):
        raise ValueError(f"low_energy_rule must be 'penalize' or 'clamp', got {config.low_energy_rule!r}")
    clamp = getattr(energy_fn, "clamp", None) if config.use_energy else None
    if config.low_energy_rule == "penalize" and clamp is not None and float(clamp[0]) >= config.energy_min:
        # A.3.6's rule (E < energy_min -> energy_penalty) could never fire: the bridge already clamps from below.
        raise ValueError(
            f"energy_fn clamps predictions to {tuple(clamp)}, so the rule E < {config.energy_min} -> "
            f"{config.energy_penalty} (low_energy_rule='penalize') can never apply; build the bridge with "
            "clamp=None (or a lower bound below energy_min), or use low_energy_rule='clamp'"
        )
    table = bond_table if bond_table is not None else load_bond_table()
    tables = smact if smact is not None else chem.smact_tables()
    cfg = config

    def properties(safe: Crystal, ok: jnp.ndarray) -> dict:
        if not cfg.use_energy:
            return {}
        counters: Terms = {}
        e_raw, e_ok = property_value(energy_fn, safe, ok, counters)
        return dict(e_raw=e_raw, e_ok=e_ok, counters=counters)

    def combine(safe: Crystal, ok: jnp.ndarray, props: dict) -> tuple[jnp.ndarray, Terms]:
        terms: Terms = {}
        if cfg.use_energy:
            terms.update(props["counters"])
            e = _energy(props["e_raw"], props["e_ok"], cfg.energy_min, cfg.energy_max, cfg.energy_penalty,
                        cfg.low_energy_rule)
            r_e = jnp.exp(-e)
            terms.update(energy=e, energy_valid=props["e_ok"])
        else:
            r_e = jnp.float32(0.0)
        dens = physics.density_term(safe, cfg.density_a, cfg.density_b, cfg.density_c)
        r_p = jnp.where(ok, dens.r_density, 0.0) if cfg.use_density else jnp.float32(0.0)
        terms.update(density=jnp.where(ok, dens.density, 0.0), r_density=r_p)
        if cfg.use_bond:
            bond = physics.bond_term(safe, table, cfg.alpha_p, cfg.beta_p, cfg.gamma_p, cfg.graded_bond)
            r_bond = jnp.where(ok, bond.r_bond, cfg.gamma_p)
            terms.update(
                r_bond=r_bond,
                bond_min_violation=bond.min_violation | ~ok,
                bond_max_violation=bond.max_violation | ~ok,
                min_distance=jnp.where(ok, bond.min_distance, 0.0),
            )
        else:
            r_bond = jnp.float32(1.0)
        if cfg.use_composition:
            valid_c, overflow_c = chem.smact_valid_crystal(safe, tables, max_elements=cfg.max_elements)
            r_comp = jnp.where(ok & valid_c, 1.0, 0.0)
            terms.update(r_comp=r_comp, comp_overflow=overflow_c)
        else:
            r_comp = jnp.float32(0.0)
        r = (r_e + r_p) * r_bond + r_comp
        r = jnp.where(ok, r, cfg.reward_min)
        log_r = _log_clip(r, cfg.reward_min, cfg.reward_max)
        terms.update(r_energy=r_e, reward=jnp.exp(log_r), log_reward=log_r, structure_valid=ok)
        return f32(log_r), {k: f32(v) for k, v in terms.items()}

    return staged_reward(properties, combine, cfg.site_buckets)


def make_shaft_reward(
    config: ShaftRewardConfig = ShaftRewardConfig(),
    energy_fn: PropertyFn | None = None,
    bandgap_fn: PropertyFn | None = None,
    bond_table: BondTable | None = None,
    smact: chem.SmactTables | None = None,
) -> LogRewardFn:
    """SHAFT's weighted reward (paper 002, eq. 8; with ``w_bandgap > 0`` the Sec. 15 extension)."""
    cfg = config
    if cfg.w_energy != 0 and energy_fn is None:
        raise ValueError("SHAFT reward needs energy_fn (or w_energy=0)")
    if cfg.w_bandgap != 0 and bandgap_fn is None:
        raise ValueError("SHAFT band-gap term (w_bandgap != 0) needs bandgap_fn")
    if cfg.bond not in ("shaft", "chgflownet"):
        raise ValueError(f"bond must be 'shaft' or 'chgflownet', got {cfg.bond!r}")
    if not cfg.energy_beta > 0:
        raise ValueError(f"energy_beta must be > 0, got {cfg.energy_beta}")
    table = bond_table if bond_table is not None else load_bond_table()
    tables = smact if smact is not None else chem.smact_tables()

    def properties(safe: Crystal, ok: jnp.ndarray) -> dict:
        props = {}
        if cfg.w_energy != 0:
            counters: Terms = {}
            e_raw, e_ok = property_value(energy_fn, safe, ok, counters)
            props.update(e_raw=e_raw, e_ok=e_ok, counters=counters)
        if cfg.w_bandgap != 0:
            props["g"], props["g_ok"] = property_value(bandgap_fn, safe, ok)
        return props

    def combine(safe: Crystal, ok: jnp.ndarray, props: dict) -> tuple[jnp.ndarray, Terms]:
        terms: Terms = {}
        r = jnp.float32(0.0)
        if cfg.w_energy != 0:
            terms.update(props["counters"])
            e = _energy(props["e_raw"], props["e_ok"], cfg.energy_min, cfg.energy_max, cfg.energy_penalty, "clamp")
            r_e = jnp.exp(-e / cfg.energy_beta)
            r = r + cfg.w_energy * r_e
            terms.update(energy=e, energy_valid=props["e_ok"], r_energy=r_e)
        if cfg.bond == "shaft":
            sb = physics.shaft_bond_term(safe, table, cutoff=cfg.bond_cutoff, k=cfg.bond_k)
            r_b = jnp.where(ok, sb.r_bond, jnp.exp(-physics.SHAFT_NO_BOND_SCORE))
            terms.update(
                bond_score=jnp.where(ok, sb.bs, physics.SHAFT_NO_BOND_SCORE), bond_truncated=sb.truncated
            )
        else:
            bt = physics.bond_term(safe, table, cfg.alpha_p, cfg.beta_p, cfg.gamma_p)
            r_b = jnp.where(ok, bt.r_bond, cfg.gamma_p)
        r = r + cfg.w_bond * r_b
        dens = physics.density_term(safe, cfg.density_a, cfg.density_b, cfg.density_c)
        r_p = jnp.where(ok, dens.r_density, 0.0)
        r = r + cfg.w_density * r_p
        valid_c, overflow_c = chem.smact_valid_crystal(safe, tables, max_elements=cfg.max_elements)
        r_v = jnp.where(ok & valid_c, 1.0, 0.0)
        r = r + cfg.w_validity * r_v
        terms.update(r_bond=r_b, density=jnp.where(ok, dens.density, 0.0), r_density=r_p, r_comp=r_v)
        terms.update(comp_overflow=overflow_c)
        if cfg.w_bandgap != 0:
            g, g_ok = props["g"], props["g_ok"]
            r_g = jnp.where(
                g_ok, jnp.exp(-jnp.square(g - cfg.bandgap_target) / (2.0 * cfg.bandgap_width**2)), 0.0
            )
            r = r + cfg.w_bandgap * r_g
            terms.update(band_gap=g, bandgap_valid=g_ok, r_bandgap=r_g)
        r = jnp.where(ok, r, cfg.reward_min)
        log_r = _log_clip(r, cfg.reward_min, cfg.reward_max)
        terms.update(reward=jnp.exp(log_r), log_reward=log_r, structure_valid=ok)
        return f32(log_r), {k: f32(v) for k, v in terms.items()}

    return staged_reward(properties, combine, cfg.site_buckets)


_CONFIGS = {
    "chgflownet": CHGFlowNetRewardConfig,
    "shaft": ShaftRewardConfig,
    "crystal_gfn": CrystalGFNRewardConfig,
}


def reward_from_config(
    config: Mapping | CHGFlowNetRewardConfig | ShaftRewardConfig | CrystalGFNRewardConfig,
    energy_fn: PropertyFn | None = None,
    bandgap_fn: PropertyFn | None = None,
    bond_table: BondTable | None = None,
) -> LogRewardFn:
    """Builds a reward from a config dataclass or a mapping ``{"kind": "chgflownet"|"shaft"|"crystal_gfn",
    **fields}`` (unknown fields raise). For Crystal-GFN the property function is ``energy_fn`` for the
    formation-energy target and ``bandgap_fn`` for the band-gap target."""
    if isinstance(config, Mapping):
        fields = dict(config)
        kind = fields.pop("kind", None)
        if kind not in _CONFIGS:
            raise ValueError(f"reward config 'kind' must be one of {sorted(_CONFIGS)}, got {kind!r}")
        cls = _CONFIGS[kind]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - names)
        if unknown:
            raise ValueError(f"unknown {kind} reward config fields {unknown}; allowed: {sorted(names)}")
        config = cls(**fields)
    if isinstance(config, CHGFlowNetRewardConfig):
        return make_chgflownet_reward(config, energy_fn, bond_table)
    if isinstance(config, ShaftRewardConfig):
        return make_shaft_reward(config, energy_fn, bandgap_fn, bond_table)
    if isinstance(config, CrystalGFNRewardConfig):
        fn = bandgap_fn if config.target == "band_gap" else energy_fn
        return make_crystal_gfn_reward(config, fn)
    raise TypeError(f"unsupported reward config type {type(config).__name__}")


__all__ = [
    "CHGFlowNetRewardConfig",
    "ShaftRewardConfig",
    "make_chgflownet_reward",
    "make_shaft_reward",
    "reward_from_config",
]
