"""The interface shared by the composite rewards: property functions, per-term outputs, input preparation.

A reward is a pure, jit/vmap-safe function on ONE crystal, ``log_reward(crystal) -> (log_r [] float32, terms)``;
property functions are injected (M3GNet through ``hgfn_jax.models.host_bridge``, a proxy, a synthetic target)::

    property_fn(crystal) -> (value [] float32, valid [] bool)  # or (value, valid, {counter: [] bool})

A value is used only if ``valid`` is True, it is finite and the structure is valid; property functions see a
sanitized stand-in (``physics.sanitize``) so a broken crystal never reaches a model.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from hgfn_jax.crystal.types import Crystal
from hgfn_jax.rewards import physics

PropertyFn = Callable[[Crystal], tuple[jnp.ndarray, jnp.ndarray]]
Terms = dict[str, jnp.ndarray]
LogRewardFn = Callable[[Crystal], tuple[jnp.ndarray, Terms]]


def f32(x) -> jnp.ndarray:
    """``x`` as a float32 array (booleans as 0/1)."""
    return jnp.asarray(x).astype(jnp.float32)


def property_value(fn: PropertyFn, safe: Crystal, ok_structure: jnp.ndarray,
                   terms: Terms | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(value, valid) of ``fn`` on the sanitized crystal. A property function may return a third output, a dict
    of per-crystal boolean counters (e.g. the in-graph model's ``energy_over_capacity``): added to ``terms``
    (when given), counted on valid structures only, so that the training logs count them."""
    value, valid, *extra = fn(safe)
    if extra and terms is not None:
        terms.update({k: f32(jnp.asarray(v, bool) & ok_structure) for k, v in extra[0].items()})
    value = jnp.asarray(value, jnp.float32).reshape(())
    valid = jnp.asarray(valid, bool).reshape(()) & jnp.isfinite(value) & ok_structure
    return jnp.where(valid, value, 0.0), valid


def prepare(crystal: Crystal) -> tuple[Crystal, jnp.ndarray]:
    safe, valid = physics.sanitize(crystal)
    return safe, valid & ~jnp.asarray(crystal.overflow, bool)
