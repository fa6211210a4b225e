"""The policy type every GFlowNet of hgfn_jax uses (the rollout calls ``apply``; policies/ builds ``Policy``s).

A policy maps a BATCH of environment states to the flat outputs the environment interprets (see
``gflownet.env``): ``apply(params, states [B, ...]) -> (fwd [B, fwd_dim], bwd [B, bwd_dim])`` and
``init(key, example_states [B, ...]) -> params``. It is a pair of pure functions, so any Flax module, a hand-written
function or a fixed (parameter-free) policy fits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

# policy_apply(params, states [B, ...]) -> (fwd [B, fwd_dim], bwd [B, bwd_dim])
PolicyApply = Callable[[Any, Any], tuple[jnp.ndarray, jnp.ndarray]]
# policy_init(key, example states [B, ...]) -> params
PolicyInit = Callable[[jax.Array, Any], Any]


@dataclass(frozen=True)
class Policy:
    """``init(key, states [B]) -> params``; ``apply(params, states [B]) -> (fwd [B, fwd_dim], bwd [B, bwd_dim])``."""

    init: PolicyInit
    apply: PolicyApply
