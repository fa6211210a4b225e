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
from the empty composition. This runs inside jit (fixed shapes, a static loop over subsets).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from hgfn_jax.envs.crystal_gfn import composition_subspace as comp
from hgfn_jax.envs.crystal_gfn.types import CompositionState


def _add_charge(tab: comp.CompositionTables, charges: jnp.ndarray, e: jnp.ndarray, n: jnp.ndarray) -> jnp.ndarray:
    """``[NW] uint32``: charge bitset after adding ``n >= 1`` atoms of element ``e`` (as ``comp.step``)."""
    k = jnp.clip(n - 1, 0, tab.config.cap - 1)
    shifted = jax.vmap(comp._shift_words, in_axes=(None, 0))(charges, tab.shift_idx[e, k])  # [O, NW]
    shifted = jnp.where(tab.shift_ok[e, k][:, None], shifted, jnp.uint32(0))
    return lax.reduce(shifted, jnp.uint32(0), lax.bitwise_or, (0,))


def reachable_subsets(tab: comp.CompositionTables, row: jnp.ndarray, s: CompositionState) -> tuple[jnp.ndarray,
                                                                                                      jnp.ndarray]:
    """Chain mode. Returns ``(idx [K] int32, reach [2^K] bool)``: the present elements in increasing index order
    (``K = max_distinct``; slots past ``n_elements`` are padding) and, for every subset ``m`` of those slots (bit
    ``j`` = slot ``j``), whether the forward policy can reach the sub-composition from the empty one. Subsets
    containing padding slots are False; the empty subset is True."""
    cfg = tab.config
    k_max = cfg.max_distinct
    present = s.counts > 0
    idx = jnp.nonzero(present, size=k_max, fill_value=0)[0].astype(jnp.int32)  # [K]
    filled = jnp.arange(k_max) < s.n_elements  # [K]
    cnt = jnp.where(filled, s.counts[idx], 0)  # [K]
    init = comp.init_state(tab)
    wy = [init.wyckoff]
    charges = [init.charges]
    nel = [jnp.zeros((), jnp.int32)]
    atoms = [jnp.zeros((), jnp.int32)]
    metal = [jnp.ones((), bool)]
    exists = [jnp.ones((), bool)]
    reach = [jnp.ones((), bool)]
    for m in range(1, 1 << k_max):
        j = (m & -m).bit_length() - 1  # lowest slot of m
        p = m ^ (1 << j)
        e, n = idx[j], cnt[j]
        wy.append(comp.wyckoff_next(tab, row, wy[p])[jnp.clip(n, 0, cfg.cap)])
        charges.append(_add_charge(tab, charges[p], e, n))
        nel.append(nel[p] + 1)
        atoms.append(atoms[p] + n)
        metal.append(metal[p] & tab.metal[e])
        exists.append(exists[p] & filled[j])
        sub = CompositionState(counts=s.counts, n_elements=nel[m], n_atoms=atoms[m], all_metal=metal[m],
                               wyckoff=wy[m], charges=charges[m], code=s.code,
                               parents=s.parents)
        valid = exists[m] & comp.is_valid(tab, row, sub)
        if p == 0:  # one element: the forward rule from the empty composition
            ok = valid
            if not cfg.allow_elemental:
                ok |= exists[m] & tab.pair_ok[row, e, jnp.clip(n - 1, 0, cfg.cap - 1)]
            reach.append(ok)
        else:
            prev = [reach[m ^ (1 << i)] for i in range(k_max) if m >> i & 1]
            reach.append(valid & jnp.any(jnp.stack(prev)))
    return idx, jnp.stack(reach)


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
