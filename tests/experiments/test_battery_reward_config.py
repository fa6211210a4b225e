"""Every constant and ablation switch of the battery rewards is a ``reward.*`` config field: the defaults equal
the reward config's (so runs are unchanged), and a ``--set reward.<x>=...`` reaches the reward function, checked
on rock-salt NaCl against eq. 15 (paper 000) / eq. 8 (paper 002) with pymatgen's density and SMACT's validity."""

from __future__ import annotations

import math
from types import SimpleNamespace

import jax.numpy as jnp
import pytest
from pymatgen.core import Lattice, Structure
from smact.screening import smact_validity

from experiments.configs import get_config
from experiments.hierarchical import make_log_reward, reward_config
from experiments.train import apply_overrides
from hgfn_jax.crystal.convert import from_structure
from hgfn_jax.rewards.composite import CHGFlowNetRewardConfig, ShaftRewardConfig

ENERGY = 1.0  # eV/atom, the stand-in energy model's prediction for every cell


def _energy_fn(crystal):
    return jnp.float32(ENERGY), jnp.asarray(True)


@pytest.fixture(scope="module")
def nacl():
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert smact_validity(s.composition, use_pauling_test=True, include_alloys=True, oxidation_states_set="smact14")
    return SimpleNamespace(crystal=from_structure(s, n_max=16)), float(s.density)


def _reward(exp: str, overrides: list[str], state) -> float:
    cfg = apply_overrides(get_config(exp, "test"), overrides)
    log_reward, bridge = make_log_reward(cfg, energy_fn=_energy_fn)
    assert bridge is None
    log_r, _ = log_reward(state)
    return math.exp(float(log_r))


@pytest.mark.parametrize("exp", ["chgflownet_battery", "shaft_battery", "gfn_flat_battery"])
@pytest.mark.parametrize("preset", ["default", "paper", "test"])
def test_reward_fields_default_to_the_reward_config(exp, preset):
    expected = ShaftRewardConfig() if exp == "shaft_battery" else CHGFlowNetRewardConfig()
    assert reward_config(get_config(exp, preset)) == expected


def test_set_reward_weight_reaches_the_shaft_reward(nacl):
    """SHAFT eq. 8: R = w_e exp(-E/10) + w_b R_b + w_d exp(-(rho-3)^2/2) + w_v R_comp; w_density=0 removes
    exactly 0.2 * exp(-(rho - 3)^2 / 2), and w_energy=0 exactly 0.2 * exp(-E / 10)."""
    state, rho = nacl
    full = _reward("shaft_battery", [], state)
    no_density = _reward("shaft_battery", ["reward.w_density=0"], state)
    no_energy = _reward("shaft_battery", ["reward.w_energy=0"], state)
    assert full - no_density == pytest.approx(0.2 * math.exp(-((rho - 3.0) ** 2) / 2.0), rel=1e-4)
    assert full - no_energy == pytest.approx(0.2 * math.exp(-ENERGY / 10.0), rel=1e-4)


def test_set_reward_switches_reach_the_chgflownet_reward(nacl):
    """CHGFlowNet eq. 15 without the bond factor: R = exp(-E) + 3 exp(-(rho-3)^2/2) + R_comp (NaCl is
    SMACT-valid: R_comp = 1); each ablation switch removes its term."""
    state, rho = nacl
    r_e, r_p, r_c = math.exp(-ENERGY), 3.0 * math.exp(-((rho - 3.0) ** 2) / 2.0), 1.0
    base = ["reward.use_bond=False"]
    assert _reward("chgflownet_battery", base, state) == pytest.approx(r_e + r_p + r_c, rel=1e-4)
    assert _reward("chgflownet_battery", base + ["reward.use_density=False"], state) == pytest.approx(
        r_e + r_c, rel=1e-4)
    assert _reward("chgflownet_battery", base + ["reward.use_composition=False"], state) == pytest.approx(
        r_e + r_p, rel=1e-4)
    assert _reward("chgflownet_battery", base + ["reward.use_energy=False"], state) == pytest.approx(
        r_p + r_c, rel=1e-4)
    # a constant: the density Gaussian's centre (eq. 14, b = 3 g/cm^3) moved onto NaCl's density
    assert _reward("chgflownet_battery", base + [f"reward.density_b={rho}"], state) == pytest.approx(
        r_e + 3.0 + r_c, rel=1e-4)


def test_a_reward_field_of_the_other_reward_is_unknown():
    with pytest.raises(ValueError, match="unknown config field 'reward.w_density'"):
        apply_overrides(get_config("chgflownet_battery", "test"), ["reward.w_density=0"])
