"""CHGFlowNet's A.3.6 rule (E < -10 eV/atom -> +10) must never be silently dead: a reward built on an energy
bridge that already clamps from below at the cut-off is refused at construction (issue 10, sec. 3)."""

import inspect

import jax.numpy as jnp
import pytest

from hgfn_jax.models.host_bridge import PropertyBridge, make_property_fn
from hgfn_jax.rewards import composite


def _bridge_with_clamp(clamp):
    # a real PropertyBridge instance (no model loaded: only its clamp attribute matters at construction)
    b = PropertyBridge.__new__(PropertyBridge)
    b.clamp = clamp
    return b


def test_penalize_rule_with_default_bridge_clamp_is_refused():
    default_clamp = inspect.signature(make_property_fn).parameters["clamp"].default
    with pytest.raises(ValueError, match="can never apply"):
        composite.make_chgflownet_reward(composite.CHGFlowNetRewardConfig(), _bridge_with_clamp(default_clamp))
    with pytest.raises(ValueError, match="can never apply"):
        composite.reward_from_config({"kind": "chgflownet"}, energy_fn=_bridge_with_clamp((-5.0, 10.0)))


def test_safe_combinations_build():
    composite.make_chgflownet_reward(composite.CHGFlowNetRewardConfig(), _bridge_with_clamp(None))
    composite.make_chgflownet_reward(composite.CHGFlowNetRewardConfig(), _bridge_with_clamp((-20.0, 10.0)))
    composite.make_chgflownet_reward(composite.CHGFlowNetRewardConfig(low_energy_rule="clamp"),
                                     _bridge_with_clamp((-10.0, 10.0)))
    composite.make_chgflownet_reward(composite.CHGFlowNetRewardConfig(),
                                     lambda c: (jnp.float32(0.0), jnp.bool_(True)))
