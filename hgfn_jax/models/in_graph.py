"""In-graph property function: the JAX MEGNet / M3GNet Eform models with the host bridge's conventions.

``make_jax_property_fn(model_name, ...)`` returns ``fn(crystal) -> (value [] float32, valid [] bool, counters)`` on ONE
padded :class:`~hgfn_jax.crystal.types.Crystal` (vmap it), the drop-in replacement of
:func:`hgfn_jax.models.host_bridge.make_property_fn` inside a jitted training step (no host callback):

- the same input screens, evaluated in JAX: overflowed padding, no real site, non-finite lattice or coordinates,
  species outside 1..118, degenerate lattice (:func:`hgfn_jax.crystal.lattice.is_degenerate`), volume per atom
  below ``min_volume_per_atom``, a lattice length above ``max_length``, two sites (periodic images included)
  closer than ``min_distance``;
- the model's own refusals (``valid`` False from :func:`hgfn_jax.models.megnet.energy` /
  :func:`hgfn_jax.models.m3gnet.energy`: unsupported element, no bond, neighbour capacity or image window
  exceeded), and a non-finite prediction;
- the same output: ``value`` clamped to ``clamp``, ``invalid_value`` (default ``clamp[1]``) where not valid.

Under ``vmap`` (how the rewards call it) the function switches to its batched path (``jax.custom_batching``;
also ``fn.batch``): the O(N) screens per crystal, then the crystals that pass sorted by real site count and
evaluated chunk by chunk by the model's packed ``energy_batch`` at the smallest of the site bucket sizes that holds
the chunk (:mod:`hgfn_jax.crystal.site_buckets`), instead of the per-crystal model on the full padding
(``fn.per_crystal``, the unbatched call). Why: the battery cells are padded to 576 sites but have a median of 24;
the padded per-crystal model made the in-graph reward slower than the host callback (see
``benchmarks/results/battery.json``). The numbers are the per-crystal path's within float rounding
(``tests/models/test_in_graph_batched.py``); a crystal with more real sites than the largest size (default 128:
denser cells overflow the model's neighbour capacity anyway) is refused (``valid`` False, the penalty value;
counted by ``counters["energy_over_capacity"]``, which the rewards log as a term), never truncated, and a refused
crystal costs its batch mates nothing (a chunk of refused crystals runs no model at all). The batched path's
input is under ``stop_gradient``: the energy is a constant of any loss (the rewards are), so no derivative of
the model is ever traced.

Numbers equal the host bridge's within float error where both evaluate (``tests/models/test_in_graph.py``), but
there are no per-reason counters (a jitted step cannot count on the host for free): a run using this backend logs
the fraction of valid energies through the reward's terms instead. The host bridge's ``max_sites`` and neighbour
search grid limits guard pymatgen / matgl memory and have no counterpart here (the graphs have fixed sizes);
the model's and the buckets' capacity flags take their place.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal import site_buckets
from hgfn_jax.crystal.geometry import crowded
from hgfn_jax.crystal.geometry import min_distance as crystal_min_distance
from hgfn_jax.crystal.lattice import is_degenerate, volume_per_atom
from hgfn_jax.crystal.types import Crystal

PropertyFn = Callable[[Crystal], tuple[jnp.ndarray, jnp.ndarray, dict]]
OVER_CAPACITY = "energy_over_capacity"  # reward term: passed the screens but has more sites than the largest bucket
# Site bucket sizes of the batched path. The battery cells the model accepts have at most ~96 real sites (lengths
# <= 10 A bound the cell at 1,000 A^3, and M3GNet's K = 80 neighbours within 5 A bound the density near 80 / 524
# A^-3, so cells much beyond ~150 sites are refused by the model anyway); cost per crystal on the 2-core CPU
# (M3GNet, load ~8): ~0.03 s at 32 sites, 0.07 s at 64, 0.15 s at 128, 1.1 s at 576.
DEFAULT_SIZES = (32, 64, 128)


def _module(model_name: str):
    from hgfn_jax.models import m3gnet, megnet

    modules = {megnet.NAME: megnet, m3gnet.NAME: m3gnet}
    if model_name not in modules:
        raise ValueError(f"no in-graph JAX model for {model_name!r}; available: {sorted(modules)} "
                         "(use the host bridge for the others)")
    return modules[model_name]


def make_jax_property_fn(
    model_name: str,
    clamp: tuple[float, float] | None = (-10.0, 10.0),
    invalid_value: float | None = None,
    min_distance: float = 0.5,
    min_volume_per_atom: float = 2.0,
    max_length: float = 1000.0,
    model_dir=None,
    k: int | None = None,
    buckets=None,
    chunk: int = site_buckets.DEFAULT_CHUNK,
) -> PropertyFn:
    """See the module docstring. ``k``: neighbour capacity per atom (the model's default when None);
    ``buckets``: the site bucket sizes of the batched path (None: ``DEFAULT_SIZES``), the largest one the most
    real sites a crystal may have."""
    module = _module(model_name)
    if clamp is not None:
        lo, hi = float(clamp[0]), float(clamp[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ValueError(f"clamp must be a finite (low, high) with low < high, got {clamp}")
    if invalid_value is None:
        if clamp is None:
            raise ValueError("invalid_value is required when clamp is None")
        invalid_value = clamp[1]
    if not np.isfinite(invalid_value):
        raise ValueError(f"invalid_value must be finite, got {invalid_value}")
    if min_distance < 0 or min_volume_per_atom < 0 or not max_length > 0:
        raise ValueError(f"need min_distance >= 0, min_volume_per_atom >= 0, max_length > 0; got {min_distance}, "
                         f"{min_volume_per_atom}, {max_length}")
    params = module.load_params(model_dir)  # converted once from ../shared/models, cached (fingerprint-guarded)
    k = module.DEFAULT_K if k is None else int(k)
    if buckets is not None and any(not isinstance(b, (int, np.integer)) for b in buckets):
        raise ValueError(f"energy site buckets are sizes (ints, e.g. (32, 64, 128)), got {buckets}; the former "
                         "(sites, share) pairs are gone: every crystal now gets the smallest size that holds it")
    buckets = site_buckets.sizes_for(DEFAULT_SIZES if buckets is None else buckets, 10**9)

    def screen(crystal: Crystal) -> tuple[Crystal, jnp.ndarray]:
        """(stand-in crystal safe for geometry, passes the bridge's O(N) input screens) of one crystal."""
        mask = crystal.mask
        lattice_ok = jnp.all(jnp.isfinite(crystal.lattice)) & ~is_degenerate(crystal.lattice)
        frac_ok = jnp.all(jnp.where(mask[:, None], jnp.isfinite(crystal.frac), True))
        species_ok = jnp.all(jnp.where(mask, (crystal.species >= 1) & (crystal.species <= 118), True))
        screened = (~crystal.overflow & jnp.any(mask) & lattice_ok & frac_ok & species_ok)
        # geometry only on a screened crystal (a stand-in cell otherwise, so nothing below produces NaN)
        safe = crystal.replace(
            lattice=jnp.where(screened, crystal.lattice, jnp.asarray([10.0, 10.0, 10.0, 90.0, 90.0, 90.0],
                                                                     crystal.lattice.dtype)),
            frac=jnp.where(screened & jnp.isfinite(crystal.frac), crystal.frac, 0.0).astype(crystal.frac.dtype),
            species=jnp.clip(crystal.species, 0, 118))
        screened &= volume_per_atom(safe) >= min_volume_per_atom
        screened &= jnp.max(safe.lattice[:3]) <= max_length
        return safe, screened

    def batch_screen(crystal: Crystal) -> tuple[Crystal, jnp.ndarray]:
        """:func:`screen`, and the model's own capacity refusal where a few sites prove it (cheap, exact): such
        a crystal is refused as the per-crystal model refuses it with no real site in the model's input."""
        safe, screened = screen(crystal)
        return safe, screened & ~crowded(safe, k, module.CUTOFF)

    def distance_ok(crystal: Crystal) -> jnp.ndarray:
        return crystal_min_distance(crystal) >= min_distance if min_distance > 0 else jnp.asarray(True)

    def finish(e, valid, over_capacity):
        valid = valid & jnp.isfinite(e)
        value = jnp.where(valid, e, invalid_value)
        if clamp is not None:
            value = jnp.where(valid, jnp.clip(value, clamp[0], clamp[1]), invalid_value)
        return value.astype(jnp.float32), valid, {OVER_CAPACITY: over_capacity}

    def per_crystal(crystal: Crystal):
        safe, screened = screen(crystal)
        screened &= distance_ok(safe)
        e, model_ok = module.energy(params, safe, k=k)
        return finish(e, screened & model_ok, jnp.zeros_like(screened))

    def packed(crystals: Crystal) -> tuple[jnp.ndarray, jnp.ndarray]:
        """One bucket: the distance screen, then the packed model on the crystals that passed (a refused one
        has its sites removed, so its edges take no room in the packed list)."""
        near_ok = jax.vmap(distance_ok)(crystals)
        e, model_ok = module.energy_batch(params, crystals.replace(mask=crystals.mask & near_ok[:, None]), k=k)
        return e, model_ok & near_ok

    def batch(crystals: Crystal):
        """The property of a batch [B] through the site buckets and the packed model (same numbers as
        ``vmap(per_crystal)`` where a crystal fits the largest bucket; refused, never truncated, where not)."""
        safe, screened = jax.vmap(batch_screen)(crystals)
        (e, model_ok), fits = site_buckets.evaluate(packed, safe, screened, buckets, chunk=chunk)
        return finish(e, screened & fits & model_ok, screened & ~fits)

    return site_buckets.with_batched_path(per_crystal, batch)
