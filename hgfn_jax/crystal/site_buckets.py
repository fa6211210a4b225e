"""Site buckets: a batch of padded crystals evaluated at the sizes their real sites need, not at the padded size.

Why: the battery environments pad every cell to the largest it could reach (3 x 192 = 576 sites for CHGFlowNet,
the general multiplicity of Fm-3m per reference atom), while the cells sampled are small (median 24 sites).
Per-crystal work that is quadratic in the padded size ``N`` (pair distances over N x N x images for the bond and
distance terms of the rewards; the energy models' radius graph, top-K and three-body sums) is then spent almost
entirely on padding: a batch of 32 CHGFlowNet cells cost ~1.2 s of reward terms besides the energy model.

:func:`evaluate` sorts the batch by real site count, cuts it into chunks of ``chunk`` crystals and runs each chunk
through ONE of a few static sizes (``lax.switch`` inside a ``lax.map``, so only the chosen branch runs): the
smallest size that holds the chunk's largest crystal. Each crystal is compacted to that size (its real sites
first, in their order; lattice and sites unchanged), so a function whose value depends only on the real sites
gives the same number within float rounding. Nothing is refused for lack of room except crystals larger than the
largest size given (``fits`` False; pass the padded size to evaluate everything), and a crystal that is not
``eligible`` (refused already by a cheap screen) costs nothing: a chunk with no eligible crystal runs no branch.

Under an outer ``vmap`` (e.g. vmapped seeds) the switch becomes a select over every branch: still exact, no
longer cheaper.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.custom_batching import custom_vmap

from hgfn_jax.crystal.types import Crystal

DEFAULT_CHUNK = 8  # crystals per chunk: small enough to follow the site-count distribution, large enough to vectorise


def sizes_for(sizes: Sequence[int], n_max: int) -> tuple[int, ...]:
    """The distinct sizes <= ``n_max`` in ascending order (a size above the padding is cut to it)."""
    sizes = tuple(int(s) for s in sizes)
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"site bucket sizes must be a non-empty sequence of positive ints, got {sizes}")
    return tuple(sorted({min(s, int(n_max)) for s in sizes}))


def compact(crystals: Crystal, sites: int, keep: jnp.ndarray) -> Crystal:
    """The batch ``[b, N]`` cut to ``sites`` slots: each crystal's real sites first, in order (a stable sort of
    the mask), padding after. ``keep`` [b] False: no real site at all (a refused stand-in that the model rejects
    and that has no edge to pack). Exact only where ``keep`` implies at most ``sites`` real sites."""
    n = crystals.mask.shape[-1]
    if sites < n:
        idx = jnp.argsort(~crystals.mask, axis=-1, stable=True)[:, :sites]
        take = lambda x: jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)
        crystals = crystals.replace(frac=take(crystals.frac), species=take(crystals.species), mask=take(crystals.mask))
    return crystals.replace(mask=crystals.mask & keep[:, None])


def evaluate(fn: Callable[..., object], crystals: Crystal, eligible: jnp.ndarray, sizes: Sequence[int],
             extras=None, chunk: int = DEFAULT_CHUNK) -> tuple[object, jnp.ndarray]:
    """``(fn's outputs in batch order, fits [B])``. ``fn(compacted [c, s])`` or, with ``extras`` (a pytree of
    per-crystal arrays with leading ``B``), ``fn(compacted, extras [c])``, returns batched outputs (leading
    ``c``). ``fits`` is ``eligible`` and at most ``max(sizes)`` real sites; where it is False the crystal reaches
    ``fn`` with no real site (see :func:`compact`), or not at all, and its outputs are zeros or ``fn``'s."""
    b, n = crystals.mask.shape
    sizes = sizes_for(sizes, n)
    chunk = max(1, min(int(chunk), b))
    n_sites = jnp.sum(crystals.mask, axis=-1).astype(jnp.int32)
    fits = eligible & (n_sites <= sizes[-1])
    key = jnp.where(fits, n_sites, -1)
    order = jnp.argsort(key, stable=True)  # not fitting first, then ascending site count
    pad = (-b) % chunk  # a whole number of chunks: repeats of the first crystal, marked not fitting
    padded_order = jnp.concatenate([jnp.broadcast_to(order[:1], (pad,)), order]).reshape(-1, chunk)
    ok = jnp.concatenate([jnp.zeros((pad,), bool), fits[order]]).reshape(-1, chunk)
    largest = jnp.max(jnp.where(ok, key[padded_order], -1), axis=1)
    branch = jnp.where(largest < 0, 0, 1 + jnp.searchsorted(jnp.asarray(sizes), largest, side="left"))

    def gather(idx):
        sub = jax.tree.map(lambda x: x[idx], crystals)
        return sub, (None if extras is None else jax.tree.map(lambda x: x[idx], extras))

    def run(sites):
        def branch_fn(idx, keep):
            sub, ext = gather(idx)
            c = compact(sub, sites, keep)
            return fn(c) if extras is None else fn(c, ext)
        return branch_fn

    probe = jax.eval_shape(run(sizes[0]), padded_order[0], ok[0])
    skip = lambda idx, keep: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), probe)
    branches = [skip] + [run(s) for s in sizes]
    outs = jax.lax.map(lambda a: jax.lax.switch(a[0], branches, a[1], a[2]), (branch, padded_order, ok))
    inverse = jnp.argsort(order)
    merged = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[pad:][inverse], outs)
    return merged, fits


def with_batched_path(per_crystal: Callable[[Crystal], object], batch: Callable[[Crystal], object]):
    """``per_crystal`` on one crystal whose ``vmap`` runs ``batch`` (on the whole batch ``[B]``, every output
    batched) instead (``jax.custom_batching.custom_vmap``); unbatched inputs are broadcast. ``batch``'s input is
    under ``stop_gradient``: the functions wrapped here (rewards, energy models) are constants of every loss, and
    ``custom_vmap`` has no derivative rule. The two paths stay reachable as ``.per_crystal`` and ``.batch``."""

    @custom_vmap
    def fn(crystal: Crystal):
        return per_crystal(crystal)

    @fn.def_vmap
    def _fn_vmap(axis_size, in_batched, crystal):
        (batched,) = in_batched
        crystal = jax.tree.map(lambda x, b: x if b else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x)),
                               crystal, batched)
        out = batch(jax.lax.stop_gradient(crystal))
        return out, jax.tree.map(lambda _: True, out)

    fn.per_crystal = per_crystal
    fn.batch = batch
    return fn
