"""The interface shared by the composite rewards: property functions, per-term outputs, input preparation.

A reward is a pure, jit/vmap-safe function on ONE crystal, ``log_reward(crystal) -> (log_r [] float32, terms)``;
property functions are injected (M3GNet through ``hgfn_jax.models.host_bridge``, a proxy, a synthetic target)::

    property_fn(crystal) -> (value [] float32, valid [] bool)  # or (value, valid, {counter: [] bool})

A value is used only if ``valid`` is True, it is finite and the structure is valid; property functions see a
sanitized stand-in (``physics.sanitize``) so a broken crystal never reaches a model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from hgfn_jax.crystal import site_buckets
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


def staged_reward(properties: Callable[[Crystal, jnp.ndarray], dict],
                  combine: Callable[[Crystal, jnp.ndarray, dict], tuple[jnp.ndarray, Terms]],
                  sizes: Sequence[int] | None = None, chunk: int = site_buckets.DEFAULT_CHUNK) -> LogRewardFn:
    """A reward in two stages: ``properties(safe, ok) -> dict`` (the injected property functions: one call per
    crystal, whatever their own batching) and ``combine(safe, ok, props) -> (log_r, terms)`` (everything else,
    a function of the real sites only: bond distances, density, composition).

    On one crystal it is ``combine(safe, ok, properties(safe, ok))`` with ``(safe, ok) = prepare(crystal)``.
    Under ``vmap`` (how training and evaluation call rewards; ``jax.custom_batching``) the properties are
    evaluated over the whole batch (so an in-graph model or the host callback batches as it does alone) and
    ``combine`` in site buckets (:mod:`hgfn_jax.crystal.site_buckets`): chunks of crystals of similar size,
    each compacted to the smallest of ``sizes`` (those at most half the padded size ``N``, plus ``N``, so
    nothing is ever refused) that holds it. Why: the pair-distance terms cost O(N^2) in the padded size, and the
    battery cells are padded to 576 sites with a median of 24 (CHGFlowNet, batch 32: reward 0.33 s instead of
    ~1.9 s, most of what is left the energy model). Same values as the per-crystal path within float rounding
    (``tests/rewards/test_staged_reward.py``). ``sizes`` empty: plain ``vmap``. The batched path's input is under
    ``stop_gradient`` (a reward is a constant of every loss)."""
    sizes = () if sizes is None or len(sizes) == 0 else site_buckets.sizes_for(sizes, 10**9)  # checked at build

    def per_crystal(crystal: Crystal):
        safe, ok = prepare(crystal)
        return combine(safe, ok, properties(safe, ok))

    if not sizes:
        return per_crystal

    def batch(crystals: Crystal):
        n = crystals.mask.shape[-1]
        used = tuple(s for s in sizes if 2 * s <= n)  # a size above half the padding saves less than it compiles
        if not used:
            return jax.vmap(per_crystal)(crystals)
        safe, ok = jax.vmap(prepare)(crystals)
        props = jax.vmap(properties)(safe, ok)
        everything = jnp.ones(ok.shape, bool)
        out, _ = site_buckets.evaluate(lambda c, e: jax.vmap(combine)(c, e[0], e[1]), safe, everything,
                                       used + (n,), extras=(ok, props), chunk=chunk)
        return out

    return site_buckets.with_batched_path(per_crystal, batch)
