"""Exact composition / Wyckoff-position compatibility as small finite automata (host precomputation).

Paper 001 sec. 4.2 (constraint "space group -> composition"): every element count must be a sum of Wyckoff
multiplicities of the chosen group, where a fixed special position (``wyckoff_dof == 0``) can host at most ONE
orbit in total, across all elements. This is the rule of ``pyxtal.symmetry.Group.check_compatible``.

Reduction (exact, for counts <= ``cap``):

- Positions are grouped by multiplicity ``m`` (interchangeable for counting). A multiplicity with at least one
  position having free parameters is *free* (reusable); otherwise it is *bounded* by ``u_m`` = number of fixed
  positions with that multiplicity.
- A bounded ``m`` that is a non-negative combination of free multiplicities is redundant (its use can always be
  replaced by free positions) and multiplicities above ``cap`` can never be used; both are dropped.
- The remaining bounded multiplicities define a *usage state* ``r`` = how many of each are used, a mixed-radix
  integer in ``0..R-1`` (``R = prod(u_m + 1)``; at most 24 for the 230 groups with ``cap = 16``).
- Adding an element with ``n`` atoms moves usage ``r`` to ``r + v`` for every usage vector ``v`` such that
  ``n - sum_m v_m m`` is representable by free multiplicities and ``r + v`` stays within the bounds.

So a set of reachable usage states is a bitmask (``uint32``), updated by ``trans[g, n, r]`` (the bitmask of
states reachable from ``r``), and a composition is compatible iff the bitmask is non-zero after all elements.
This is exact for the joint constraint (elements competing for the same fixed positions).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Sequence

import numpy as np

from hgfn_jax.crystal import spacegroup as sgm

MAX_USAGE_STATES = 32  # bitmask width (uint32)


@dataclasses.dataclass(frozen=True)
class GroupWyckoff:
    """Counting structure of one group for counts <= cap."""

    number: int  # international number
    free: tuple[int, ...]  # free multiplicities (<= cap)
    bounded: tuple[tuple[int, int], ...]  # (multiplicity, max uses) after dropping redundant ones
    representable: np.ndarray  # [cap + 1] bool: count expressible by free multiplicities only
    n_states: int  # R = prod(u + 1)


def group_structure(number: int, cap: int) -> GroupWyckoff:
    """Free / bounded multiplicities of group ``number`` from the shared space-group tables."""
    sgm.validate_spacegroup(number)
    host = sgm.host_tables()
    mask = host["wyckoff_mask"][number]
    mults = host["wyckoff_mult"][number][mask]
    dofs = host["wyckoff_dof"][number][mask]
    free_set, fixed_count = set(), {}
    for m, d in zip(mults.tolist(), dofs.tolist(), strict=True):
        if d > 0:
            free_set.add(m)
        else:
            fixed_count[m] = fixed_count.get(m, 0) + 1
    free = tuple(sorted(m for m in free_set if m <= cap))
    rep = np.zeros(cap + 1, bool)
    rep[0] = True
    for v in range(1, cap + 1):
        rep[v] = any(v >= f and rep[v - f] for f in free)
    bounded = tuple(
        sorted((m, u) for m, u in fixed_count.items() if m not in free_set and m <= cap and not rep[m])
    )
    n_states = int(np.prod([u + 1 for _, u in bounded])) if bounded else 1
    return GroupWyckoff(number, free, bounded, rep, n_states)


def _transitions(gw: GroupWyckoff, cap: int, n_states: int) -> np.ndarray:
    """``[cap + 1, n_states] uint32``: bitmask of usage states reachable from ``r`` by adding ``n`` atoms."""
    radices = [u + 1 for _, u in gw.bounded]
    strides = np.cumprod([1] + radices[:-1]).astype(np.int64) if radices else np.zeros(0, np.int64)
    states = list(itertools.product(*[range(q) for q in radices])) if radices else [()]
    trans = np.zeros((cap + 1, n_states), np.uint64)
    vectors = list(itertools.product(*[range(u + 1) for _, u in gw.bounded])) if radices else [()]
    for n in range(cap + 1):
        usable = []
        for v in vectors:
            rest = n - sum(c * m for c, (m, _) in zip(v, gw.bounded, strict=True))
            if rest >= 0 and gw.representable[rest]:
                usable.append(v)
        for r_vec in states:
            r = int(np.dot(r_vec, strides)) if radices else 0
            bits = 0
            for v in usable:
                w = tuple(a + b for a, b in zip(r_vec, v, strict=True))
                if all(x < q for x, q in zip(w, radices, strict=True)):
                    bits |= 1 << int(np.dot(w, strides)) if radices else 1
            trans[n, r] = bits
    return trans.astype(np.uint32)


@dataclasses.dataclass(frozen=True)
class WyckoffTables:
    """Per-group automata for a list of groups (rows in the order of ``groups``)."""

    groups: np.ndarray  # [G] int32 international numbers
    cap: int  # largest count per element covered
    n_states: int  # R (padded, max over groups)
    trans: np.ndarray  # [G, cap + 1, R] uint32: trans[g, n, r] = reachable usage bitmask; padded states -> 0


@functools.lru_cache(maxsize=32)
def _build(groups: tuple[int, ...], cap: int) -> WyckoffTables:
    structures = [group_structure(g, cap) for g in groups]
    n_states = max(s.n_states for s in structures)
    if n_states > MAX_USAGE_STATES:
        worst = max(structures, key=lambda s: s.n_states)
        raise ValueError(
            f"per-element cap {cap} needs {n_states} Wyckoff usage states for group {worst.number} "
            f"(bounded multiplicities {worst.bounded}); at most {MAX_USAGE_STATES} are supported: lower the cap"
        )
    trans = np.zeros((len(groups), cap + 1, n_states), np.uint32)
    for i, s in enumerate(structures):
        trans[i, :, : s.n_states] = _transitions(s, cap, s.n_states)
    trans.setflags(write=False)
    return WyckoffTables(np.asarray(groups, np.int32), cap, n_states, trans)


def build_tables(groups: Sequence[int], cap: int) -> WyckoffTables:
    """Automata for ``groups`` (international numbers, validated) and counts up to ``cap`` (cached)."""
    groups = tuple(sgm.validate_spacegroup(int(g)) for g in groups)
    if cap < 1:
        raise ValueError(f"per-element cap must be >= 1, got {cap}")
    return _build(groups, int(cap))


def reach(trans_g: np.ndarray, counts: Sequence[int] | np.ndarray) -> int:
    """Host: usage bitmask after adding every non-zero count (``trans_g`` = ``trans[g]``); 0 = incompatible."""
    bits = 1
    for n in np.asarray(counts).ravel().tolist():
        if n <= 0:
            continue
        if n >= trans_g.shape[0]:
            return 0
        new = 0
        for r in range(trans_g.shape[1]):
            if bits >> r & 1:
                new |= int(trans_g[n, r])
        bits = new
    return bits


def compatible(tables: WyckoffTables, group: int, counts: Sequence[int] | np.ndarray) -> bool:
    """Host check: the element counts fit the Wyckoff positions of ``group`` (exact, joint)."""
    rows = np.nonzero(tables.groups == group)[0]
    if len(rows) == 0:
        raise ValueError(f"space group {group} is not in this table's list")
    return reach(tables.trans[rows[0]], counts) != 0


def reach_batch(trans_g: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Host, vectorised: ``[N]`` uint32 usage bitmasks for ``counts [N, E]`` (counts <= cap)."""
    counts = np.asarray(counts)
    bits = np.ones(counts.shape[0], np.uint32)
    for e in range(counts.shape[1]):
        n = counts[:, e]
        new = np.zeros_like(bits)
        for r in range(trans_g.shape[1]):
            on = (bits >> np.uint32(r)) & np.uint32(1)
            new |= np.where(on.astype(bool), trans_g[n, r], np.uint32(0))
        bits = np.where(n > 0, new, bits)
    return bits
