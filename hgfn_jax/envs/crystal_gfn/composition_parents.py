"""Backward support of the composition subspace: which present element may have been added LAST.

Trajectory balance samples R(x) only if P_B puts mass exactly on the parents the forward policy can come from:
a parent ``p = s - e`` (element ``e`` removed) is admissible iff

1. ``p`` is reachable from the empty composition under the forward mask, and
2. the forward mask at ``p`` allows adding ``e`` with its count (which gives ``s`` back).

In ``exact`` mode every present element qualifies: the forward mask allows a step iff the next composition is
*alive* (extends to a valid one), and ``alive`` is closed under removing elements, so every sub-composition of
an alive state is alive and reachable (add its elements in any order).

In ``chain`` mode a step is allowed iff the next composition is valid (or, without SMACT's elemental rule, it is
a single element that one more element can complete). A removal can then leave a valid but *unreachable* parent
(every ordering of its elements passes through an invalid composition), or an invalid one: Li4Co4O8 in Fm-3m is
built through Li -> Co -> O but never through Li -> O, since Li4O8 is not charge-neutral. A P_B over all present
elements would leak mass to trajectories P_F never samples, and TB would then converge to ``R(x) q(x)`` with
``q`` the feasible share of P_B, not to ``R(x)``.

Reachability is a property of the SET of present elements (the charge bitset and the Wyckoff usage set after
adding a set of elements do not depend on the order), so it is computed exactly by a dynamic programme over
the ``2^K`` subsets of the ``K <= max_distinct`` present elements (``K = 5``: 31 subsets):
``reach(m) = valid(m) and any(reach(m - j) for j in m)`` for ``|m| >= 2``, and for one element the forward rule
from the empty composition. This runs inside jit (fixed shapes, one array operation per subset size).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from hgfn_jax.envs.crystal_gfn import composition_subspace as comp
from hgfn_jax.envs.crystal_gfn.types import CompositionState


@functools.cache
def _layers(k: int) -> tuple[tuple[dict, ...], np.ndarray]:
    """Static index tables of the subsets of ``k`` slots, by size ``s = 1..k`` (layer ``s`` lists its subsets
    in increasing bitmask order): ``members [n_s, s]`` (slots, increasing), ``drop [n_s, s]`` (position in layer
    ``s - 1`` of the subset without each member), ``wy_parent [n_s]`` (position in layer ``s - 1`` of the subset
    without the lowest member, -1 for s = 1) and, for ``s >= 3``, ``base [n_s]``: position among the pairs (layer
    2) of the two highest members. Also ``order [2^k]``: position of each bitmask in the concatenation
    ``[empty, layer 1, ..., layer k]``."""
    by_size = [[m for m in range(1 << k) if bin(m).count("1") == s] for s in range(k + 1)]
    pos = {m: i for layer in by_size for i, m in enumerate(layer)}
    layers = []
    for s in range(1, k + 1):
        members = np.array([[j for j in range(k) if m >> j & 1] for m in by_size[s]], np.int32).reshape(-1, s)
        pairs = list(zip(by_size[s], members, strict=True))
        lay = {
            "members": members,
            "drop": np.array([[pos[m ^ (1 << j)] for j in row] for m, row in pairs], np.int32),
            "wy_parent": np.array([pos[m ^ (1 << row[0])] if s > 1 else -1 for m, row in pairs], np.int32),
        }
        if s >= 3:
            lay["base"] = np.array([pos[(1 << row[-2]) | (1 << row[-1])] for row in members], np.int32)
        layers.append(lay)
    offsets = np.cumsum([0] + [len(layer) for layer in by_size])
    order = np.array([offsets[bin(m).count("1")] + pos[m] for m in range(1 << k)], np.int32)
    return tuple(layers), order


def _charge_grid(sh: jnp.ndarray, ok: jnp.ndarray, slots: np.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """For subsets ``slots [n, q]``: total charge ``[n, O^q]`` and validity of every choice of one oxidation state
    per slot (``sh, ok [K, O]``)."""
    n, q = slots.shape
    o = sh.shape[1]
    total, valid = jnp.zeros((n,) + (1,) * q, jnp.int32), jnp.ones((n,) + (1,) * q, bool)
    for i in range(q):
        shape = [n] + [1] * q
        shape[1 + i] = o
        total = total + sh[slots[:, i]].reshape(shape)
        valid = valid & ok[slots[:, i]].reshape(shape)
    return total.reshape(n, -1), valid.reshape(n, -1)


def reachable_subsets(tab: comp.CompositionTables, row: jnp.ndarray, s: CompositionState) -> tuple[jnp.ndarray,
                                                                                                      jnp.ndarray]:
    """Chain mode. Returns ``(idx [K] int32, reach [2^K] bool)``: the present elements in increasing index order
    (``K = max_distinct``; slots past ``n_elements`` are padding) and, for every subset ``m`` of those slots (bit
    ``j`` = slot ``j``), whether the forward policy can reach the sub-composition from the empty one. Subsets
    containing padding slots are False; the empty subset is True.

    Cost (this runs for every state of a batch at every composition step, so both its arithmetic and its number
    of operations matter): the subsets are processed by size, each size as one array operation over all its
    subsets (index tables from :func:`_layers`), and charge neutrality is decided without building a subset's
    charge set: for sizes 1-2 every choice of oxidation states is enumerated (``O^s`` sums); larger subsets read
    the charge set of their two highest slots (boolean arrays filled by one scatter of ``O^2`` sums per pair) at
    ``-(sum of the other slots' charges)`` for every choice of those (``O^(s - 2)`` reads). The full set uses the
    state's own tracker (``comp.is_valid``), and the Wyckoff tracker reads one row of the automaton per subset.
    Identical to building every subset's charge bitset by shifts (the previous form, ~7x slower on a batch of
    1024), checked against the SMACT / pyxtal brute force in ``tests/envs/test_crystal_gfn_parents``.
    """
    cfg = tab.config
    k_max = cfg.max_distinct
    layers, order = _layers(k_max)
    present = s.counts > 0
    idx = jnp.nonzero(present, size=k_max, fill_value=0)[0].astype(jnp.int32)  # [K]
    filled = jnp.arange(k_max) < s.n_elements  # [K]
    cnt = jnp.where(filled, s.counts[idx], 0)  # [K]
    kk = jnp.clip(cnt - 1, 0, cfg.cap - 1)
    sh = tab.shift_idx[idx, kk]  # [K, O] charge n * ox of each slot's oxidation states
    ok = tab.shift_ok[idx, kk] & filled[:, None]  # [K, O]
    metal_k = tab.metal[idx]  # [K]
    half = tab.half  # |charge of <= K - 1 slots| <= half
    n_bits = 2 * half + 1
    pair_sets = None  # [n_pairs, 2 * half + 1] bool: charges of each pair of slots (+ half)
    wy_prev = comp.init_state(tab).wyckoff[None]  # [1] (the empty subset)
    reach_prev = jnp.ones(1, bool)
    out = [reach_prev]
    for size, lay in enumerate(layers, start=1):
        members = lay["members"]  # [n, s]
        low = members[:, 0]
        exists = jnp.all(filled[members], axis=1)
        if size == k_max:  # the full set: the state itself, whose own trackers say whether it is valid
            valid = exists & comp.is_valid(tab, row, s)
        else:
            wy = comp.wyckoff_add(tab, row, wy_prev[np.maximum(lay["wy_parent"], 0)], cnt[low])  # [n]
            atoms = jnp.sum(cnt[members], axis=1)
            metal = jnp.all(metal_k[members], axis=1)
            if size <= 2:
                total, grid_ok = _charge_grid(sh, ok, members)
                neutral = jnp.any(grid_ok & (total == 0), axis=1)
            else:
                if pair_sets is None:
                    total, grid_ok = _charge_grid(sh, ok, layers[1]["members"])  # [n_pairs, O^2]
                    at = jnp.where(grid_ok, total + half, n_bits)  # n_bits: out of range, dropped
                    rows = jnp.broadcast_to(jnp.arange(at.shape[0])[:, None], at.shape)
                    pair_sets = jnp.zeros((at.shape[0], n_bits), bool).at[rows, at].set(True, mode="drop")
                total, grid_ok = _charge_grid(sh, ok, members[:, :-2])  # [n, O^(s-2)]
                look = half - total
                hit = pair_sets[lay["base"][:, None], jnp.clip(look, 0, n_bits - 1)]
                neutral = jnp.any(grid_ok & hit & (look >= 0) & (look < n_bits), axis=1)
            valid = exists & comp.valid_chain(tab, jnp.full(len(members), size), atoms, metal, wy, neutral)
            wy_prev = wy
        if size == 1:  # one element: the forward rule from the empty composition
            reach = valid
            if not cfg.allow_elemental:
                reach = reach | (exists & tab.pair_ok[row, idx[low], kk[low]])
        else:
            reach = valid & jnp.any(reach_prev[lay["drop"]], axis=1)
        out.append(reach)
        reach_prev = reach
    return idx, jnp.concatenate(out)[order]


def parent_mask(tab: comp.CompositionTables, row: jnp.ndarray, s: CompositionState) -> jnp.ndarray:
    """``[E] bool``: elements whose removal gives an admissible parent of ``s`` (see the module doc). For a
    state the forward policy reached, at least the element it added last is True."""
    present = s.counts > 0
    if tab.exact:
        return present
    k_max = tab.config.max_distinct
    idx, reach = reachable_subsets(tab, row, s)
    full = (jnp.int32(1) << s.n_elements) - 1
    slots = jnp.arange(k_max, dtype=jnp.int32)
    ok = reach[full ^ (jnp.int32(1) << slots)] & (slots < s.n_elements)  # [K]
    out = jnp.zeros(present.shape, bool).at[idx].max(ok)
    return out & present


def is_reachable(tab: comp.CompositionTables, row: jnp.ndarray, s: CompositionState) -> jnp.ndarray:
    """``[] bool``: the forward policy can build the composition ``s`` from the empty one."""
    if tab.exact:
        return tab.alive[row, s.code]
    _, reach = reachable_subsets(tab, row, s)
    return reach[(jnp.int32(1) << s.n_elements) - 1]
