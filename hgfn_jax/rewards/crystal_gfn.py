"""Crystal-GFN rewards (paper 001, Sec. 5) over the composition-level terminal state, with per-term outputs.

**Crystal-GFN** (paper 001, Sec. 5; functional forms lost in the extraction, taken from the authors' gflownet
repository: ``gflownet/proxy/base.py`` and ``config/experiments/crystals/starling_{fe,bg,density}.yaml``):

- formation energy, Boltzmann: ``R = exp(-FE / T)``; the configs use ``R = alpha exp(beta FE)`` with
  ``beta = -8``, i.e. ``T = 1/8`` eV/atom (default); log-reward ``-FE / T``, floored at ``log_reward_min``;
- band gap: ``R = exp(-8 (BG - 1.34)^2)`` (``rbf_exponential``, squared distance, center 1.34 eV = the
  Shockley-Queisser optimum, beta -8), rewards clipped below at 1e-8;
- density: ``R = rho`` in g/cm^3 (identity reward on the density proxy), clipped below at 1e-8.
- plausibility (our addition, off in the paper preset): with ``volume_per_atom = (lo, hi)`` the reward of a cell
  whose volume per atom ``v`` lies outside ``[lo, hi]`` A^3 is multiplied by ``exp(-lambda d)``, ``d =
  max(ln(lo / v), ln(v / hi))`` the log-distance to the range (``volume_penalty = lambda`` per e-fold), or, with
  ``volume_penalty=None``, set to the floor. The proxies never saw such cells (the data set spans 4.8-133.7
  A^3/atom) and a trained sampler exploits them: in the default run without it, a quarter of the samples had
  < 5 A^3/atom and half > 100. The hard floor gives TB no signal about which way the range lies (an untrained
  policy's cells are all outside) and, measured on the default main job, collapsed the sampler onto one space
  group (99 % Pccn); the default is the smooth factor with lambda = 10. A reward factor leaves the lattice
  stage's densities untouched, so TB still samples R exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax.numpy as jnp

from hgfn_jax.crystal.lattice import volume_per_atom
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.rewards import physics
from hgfn_jax.rewards.base import LogRewardFn, PropertyFn, Terms, f32, prepare, property_value


@dataclass(frozen=True)
class CrystalGFNRewardConfig:
    """Crystal-GFN rewards (paper 001, Sec. 5); ``target`` selects the property."""

    target: str = "formation_energy"  # "formation_energy" | "band_gap" | "density"
    temperature: float = 0.125  # eV/atom; R = exp(-FE / T) (beta = -8 in the authors' configs)
    bandgap_center: float = 1.34  # eV
    bandgap_beta: float = 8.0  # R = exp(-beta (BG - center)^2)
    reward_min: float = 1e-8  # band gap and density (configs: reward_min 1e-8, do_clip_rewards)
    log_reward_min: float = -100.0  # floor of the formation-energy log-reward (and of invalid inputs there)
    volume_per_atom: tuple[float, float] | None = None  # plausible range, A^3/atom (None: no constraint)
    volume_penalty: float | None = 10.0  # log-reward lost per e-fold outside the range; None: the floor


def make_crystal_gfn_reward(
    config: CrystalGFNRewardConfig = CrystalGFNRewardConfig(),
    property_fn: PropertyFn | None = None,
) -> LogRewardFn:
    """Crystal-GFN reward (paper 001, Sec. 5) for ``config.target``; ``property_fn`` predicts the formation
    energy (eV/atom) or the band gap (eV); the density target needs none (computed exactly, g/cm^3)."""
    cfg = config
    if cfg.target not in ("formation_energy", "band_gap", "density"):
        raise ValueError(f"target must be 'formation_energy', 'band_gap' or 'density', got {cfg.target!r}")
    if cfg.target != "density" and property_fn is None:
        raise ValueError(f"Crystal-GFN target {cfg.target!r} needs property_fn")
    if not cfg.temperature > 0:
        raise ValueError(f"temperature must be > 0, got {cfg.temperature}")
    if not cfg.reward_min > 0:
        raise ValueError(f"reward_min must be > 0, got {cfg.reward_min}")
    log_min = math.log(cfg.reward_min)
    if cfg.volume_per_atom is not None:
        lo, hi = (float(x) for x in cfg.volume_per_atom)
        if not 0.0 < lo < hi:
            raise ValueError(f"volume_per_atom must be (lo, hi) with 0 < lo < hi A^3/atom, got {cfg.volume_per_atom}")
        if cfg.volume_penalty is not None and not cfg.volume_penalty > 0:
            raise ValueError(f"volume_penalty must be > 0 (or None for the floor), got {cfg.volume_penalty}")

    def log_reward(crystal: Crystal) -> tuple[jnp.ndarray, Terms]:
        safe, ok = prepare(crystal)
        terms: Terms = {}
        plausible = jnp.ones((), bool)
        penalty = jnp.zeros((), jnp.float32)  # log-reward removed for an implausible volume per atom
        if cfg.volume_per_atom is not None:  # the property is still reported; only the reward changes
            vpa = volume_per_atom(safe)
            plausible = ok & (vpa >= lo) & (vpa <= hi)
            terms.update(volume_per_atom=jnp.where(ok, vpa, 0.0), plausible_volume=plausible)
            if cfg.volume_penalty is not None:
                v = jnp.maximum(vpa, 1e-30)
                dist = jnp.maximum(jnp.maximum(jnp.log(lo / v), jnp.log(v / hi)), 0.0)
                penalty = jnp.where(ok, cfg.volume_penalty * dist, 0.0)
                plausible = jnp.ones((), bool)  # the smooth factor replaces the floor
            terms.update(volume_log_penalty=penalty)
        if cfg.target == "formation_energy":
            fe, fe_ok = property_value(property_fn, safe, ok)
            log_r = jnp.where(fe_ok & plausible, -fe / cfg.temperature - penalty, cfg.log_reward_min)
            log_r = jnp.maximum(log_r, cfg.log_reward_min)
            terms.update(energy=fe, energy_valid=fe_ok)
        elif cfg.target == "band_gap":
            bg, bg_ok = property_value(property_fn, safe, ok)
            log_r = jnp.where(bg_ok & plausible,
                              -cfg.bandgap_beta * jnp.square(bg - cfg.bandgap_center) - penalty, log_min)
            log_r = jnp.maximum(log_r, log_min)
            terms.update(band_gap=bg, bandgap_valid=bg_ok)
        else:
            rho = physics.density_term(safe).density
            log_r = jnp.where(ok & plausible, jnp.log(jnp.maximum(rho, cfg.reward_min)) - penalty, log_min)
            log_r = jnp.maximum(log_r, log_min)
            terms.update(density=jnp.where(ok, rho, 0.0))
        terms.update(log_reward=log_r, structure_valid=ok)
        return f32(log_r), {k: f32(v) for k, v in terms.items()}

    return log_reward
