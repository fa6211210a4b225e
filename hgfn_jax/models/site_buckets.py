"""Site buckets: a batch of padded crystals evaluated at the sizes their real sites need, not at the padded size.

Why: the battery environments pad every cell to the largest it could reach (3 x 192 = 576 sites for CHGFlowNet,
the general multiplicity of Fm-3m per reference atom), while the cells sampled are small (median 24 sites).
An energy model's work per crystal grows with the padded size ``N`` (radius graph: N x N x 125 image distances
and a top-K over N x 125 candidates per row; three-body sums N x K x K), so a vmap over padded crystals spends
nearly all its time on padding (``benchmarks/results/battery.json``: the in-graph energy was slower than the
host callback). Here the crystals of a batch are dealt to a few buckets of static shape ``(sites, crystals)``,
each crystal compacted to its bucket's size (its real sites first, in their order; the lattice and the sites are
unchanged, so the model sees the same crystal and gives the same number within float rounding), and each bucket
is one packed model call.

Assignment: the crystals to evaluate (``eligible``) sorted by real site count, the largest in the largest
bucket's slots (if any assignment fits them all, this one does). A crystal with more sites than its slot is
refused (``fits`` False) - never truncated; a non-eligible crystal (refused already by a cheap screen) takes
no slot, so it cannot crowd out a batch mate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from hgfn_jax.crystal.types import Crystal

# (sites, share of the batch): sites None = the padded size; share None = the crystals left by the others.
# Measured on 128 untrained CHGFlowNet battery samples (benchmarks/bench_battery.py's setting; padded to 576):
# 100 pass the O(N) screens, of which 55 % have <= 32 sites, 86 % <= 64, 98 % <= 128; the 33 the model accepts
# have at most 96 (with lengths <= 10 A the cell is <= 1000 A^3, and the K = 80 neighbours within 5 A of
# M3GNet bound the density near 80 / 524 A^-3, so cells much beyond ~150 sites are refused by the model anyway).
# Cost per slot on the 2-core CPU (M3GNet, load ~8): ~0.03 s at 32 sites, 0.07 s at 64, 0.15 s at 128,
# 1.1 s at 576, so a slot of the full padded size would cost as much as 16 of 64: the largest bucket is 128
# sites (crystals beyond it are refused and counted), with 6 of 32 slots above 64 sites. The in-graph function
# first drops the crystals whose first sites already prove the model's neighbour overflow (geometry.crowded):
# refused by the model anyway, they take no slot.
DEFAULT_BUCKETS: tuple[tuple[int | None, float | None], ...] = ((32, None), (64, 0.375), (128, 0.1875))


def slots(buckets: Sequence[tuple[int | None, float | None]], batch: int, n_max: int) -> list[tuple[int, int]]:
    """``[(sites, count)]`` ascending in sites, the counts summing to ``batch``: each share is rounded up, the
    bucket with share None takes the rest; sizes above ``n_max`` are cut to it and equal sizes merged."""
    rest = [i for i, (_, share) in enumerate(buckets) if share is None]
    if len(rest) != 1:
        raise ValueError(f"site buckets need exactly one share None (the rest), got {buckets}")
    counts = {}
    taken = 0
    for sites, share in buckets:
        size = n_max if sites is None else min(int(sites), n_max)
        if size < 1 or (share is not None and not 0 < share <= 1):
            raise ValueError(f"bad site bucket ({sites}, {share}): need sites >= 1 and 0 < share <= 1")
        count = 0 if share is None else min(math.ceil(share * batch - 1e-9), batch - taken)
        taken += count
        counts[size] = counts.get(size, 0) + count
    rest_size = min(n_max, n_max if buckets[rest[0]][0] is None else int(buckets[rest[0]][0]))
    counts[rest_size] += batch - taken
    return [(size, count) for size, count in sorted(counts.items()) if count > 0]


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


def evaluate(fn: Callable[[Crystal], tuple], crystals: Crystal, eligible: jnp.ndarray,
             buckets: Sequence[tuple[int | None, float | None]] = DEFAULT_BUCKETS) -> tuple[tuple, jnp.ndarray]:
    """``(fn's outputs in batch order, fits [B])``: ``fn(compacted [b, sites])`` (batched outputs, leading
    ``b``) once per bucket. ``fits`` False where the crystal is not eligible or has more sites than its slot;
    ``fn`` sees those with no real site (see :func:`compact`)."""
    b, n = crystals.mask.shape
    n_sites = jnp.sum(crystals.mask, axis=-1).astype(jnp.int32)
    key = jnp.where(eligible, n_sites, -1)
    order = jnp.argsort(key, stable=True)  # non-eligible first, then ascending site count
    outs, fits, start = [], [], 0
    for sites, count in slots(buckets, b, n):
        idx = order[start : start + count]
        ok = eligible[idx] & (key[idx] <= sites)
        sub = jax.tree.map(lambda x, idx=idx: x[idx], crystals)
        outs.append(fn(compact(sub, sites, ok)))
        fits.append(ok)
        start += count
    inverse = jnp.argsort(order)
    merged = jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0)[inverse], *outs)
    return merged, jnp.concatenate(fits)[inverse]
