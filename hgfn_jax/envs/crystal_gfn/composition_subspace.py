"""Composition subspace of Crystal-GFN (paper 001, sec. 4.2): atoms per element, with hard constraints.

Actions (as in the paper and the Mila ``Composition`` env): pick an element not yet present and set its number
of atoms ``n`` in ``1..cap``, or stop. A composition is *valid* (stop allowed) iff

1. it has ``min_distinct..max_distinct`` distinct elements, ``1..max_atoms`` atoms, each count <= its cap;
2. it fits the Wyckoff positions of the chosen space group (exact joint rule, see ``wyckoff.py``);
3. it passes SMACT's charge test without the Pauling test, i.e. ``smact_validity(comp, use_pauling_test=False,
   include_alloys=allow_alloys)`` with the chosen oxidation-state set: a single element is valid (SMACT fast
   path, ``allow_elemental``), an all-metal composition is valid (``allow_alloys``, SMACT's ``include_alloys``),
   otherwise some choice of ONE oxidation state per element makes ``sum_e n_e * ox_e == 0``.

Oxidation states: SMACT's default set of ``smact_validity`` (ICSD 2024 filtered with consensus 3, commonality
"low", i.e. ``smact_validity(..., oxidation_states_set=None)``; ours is ``oxidation_states="smact_default"``), or any
named SMACT set ("icsd24", "icsd16", "smact14", "pymatgen_sp", "wiki", same names and lists as SMACT's
``oxidation_states_set``). Beware: SMACT's NAMED set "icsd24" (``Element.oxidation_states_icsd24``) is narrower
than its default (e.g. Fe 1..6 against -4, 1..6; O -2, -1 against -2, -1, 2). Paper 001
trained with the Mila gflownet ``OXIDATION_STATES`` table (a wider, Wikipedia-like list that includes 0 for most
elements, checked per ATOM); App. C reports that only 84 % of its samples then pass SMACT. Here the mask and the
validity rule are SMACT's own, so every terminal composition passes the (non-Pauling) SMACT test.

Mask semantics (no dead ends). Exact "can this partial composition still be completed" is a joint search over
elements, counts, oxidation states and Wyckoff usage; two exact strategies are used:

- ``exact`` mode (small element sets, e.g. the restricted Fe-O and Li-Mn-O spaces or test configurations):
  validity is tabulated on the whole composition lattice on the host, and ``alive`` (some valid composition
  extends it) is its closure under removing elements. An action is allowed iff the next state is alive: the
  mask is EXACT (every valid composition is reachable, no dead end).
- ``chain`` mode (large element sets, e.g. the paper's 22 elements): an action is allowed iff the next state is
  itself valid, or it is the first element and a second element can complete it. Every state is then valid or
  one step from valid, so there is no dead end, and the per-step cost is O(E * cap). The terminal set is the
  valid compositions that can be built through valid intermediate compositions (with SMACT's elemental and
  alloy rules, and the broad ICSD24 states, most of them; ``coverage`` in the tests measures it).

The charge tracker is a bitset of the achievable total charges (one oxidation state per element), restricted to
the window that later elements could still cancel; the Wyckoff tracker is the usage-state bitmask.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hgfn_jax.crystal.chemistry import is_metal, oxidation_states  # SMACT's tables: one loader (crystal/chemistry)
from hgfn_jax.envs.crystal_gfn import wyckoff as wy
from hgfn_jax.envs.crystal_gfn.types import CompositionState

EXACT_MAX_STATES = 1 << 13  # exact mode when the composition lattice has at most this many points


# ----------------------------------------------------------------------------------------------------------
# Configuration and tables
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CompositionConfig:
    """Host description of the composition subspace (validated by the environment)."""

    symbols: tuple[str, ...]  # configured elements (action space order)
    cap: int  # largest atoms per element of the action space (paper: 16)
    element_caps: tuple[int, ...]  # per-element cap (<= cap; 0 = element excluded)
    max_atoms: int  # total atoms (paper: 80)
    min_distinct: int  # paper / Mila: 1
    max_distinct: int  # paper: 5
    oxidation_set: str = "smact_default"
    allow_elemental: bool = True
    allow_alloys: bool = True
    mode: str = "auto"  # "auto", "exact" or "chain"


@dataclasses.dataclass(frozen=True)
class CompositionTables:
    """Arrays used inside jit (``jnp``) and their host copies. ``G`` groups, ``E`` elements, ``C`` = cap."""

    exact: bool
    metal: jnp.ndarray  # [E] bool
    caps: jnp.ndarray  # [E] int32 per-element caps (0 = excluded)
    trans: jnp.ndarray  # [G, C + 1, R] uint32 Wyckoff automata
    neg_bit: jnp.ndarray  # [C, V] int32: bit index of charge -n*v for each distinct oxidation value v (sentinel
    #   index NW*32 = an always-zero bit when outside the window)
    has_ox_f: jnp.ndarray  # [E, V] float32: 1 if element e has oxidation value v
    shift_idx: jnp.ndarray  # [E, C, O] int32: charge shift n*ox (0 with shift_ok False)
    shift_ok: jnp.ndarray  # [E, C, O] bool
    pair_ok: jnp.ndarray  # [G, E, C] bool: chain mode, a single (e, n) can be completed by one more element
    stride: jnp.ndarray  # [E] int32: exact mode mixed-radix strides (0 for excluded elements)
    alive: jnp.ndarray  # [G, N] bool: exact mode, some valid composition extends this one
    valid: jnp.ndarray  # [G, N] bool: exact mode, composition valid
    group_feasible: np.ndarray  # [G] bool (host): a valid composition is reachable in this group
    n_words: int  # NW: charge bitset words
    half: int  # charge offset: bit j <-> charge j - half
    config: CompositionConfig


def _charge_window(cfg: CompositionConfig, ox: list[tuple[int, ...]]) -> int:
    omax = max([abs(o) for s in ox for o in s] + [1])
    return max(cfg.max_distinct - 1, 1) * cfg.cap * omax


def _neutral_host(counts: np.ndarray, ox: list[tuple[int, ...]]) -> np.ndarray:
    """``[N] bool``: one oxidation state per present element gives zero total charge (exact set DP over the
    achievable total charges, element by element)."""
    counts = np.asarray(counts, np.int64)
    n_rows = counts.shape[0]
    omax = max([abs(o) for st in ox for o in st] + [1])
    half = int(counts.sum(axis=1).max(initial=0)) * omax
    width = 2 * half + 1
    charges = np.zeros((n_rows, width), bool)
    charges[:, half] = True
    for e in range(counts.shape[1]):
        col = counts[:, e]
        if not (col > 0).any():
            continue
        new = np.where((col == 0)[:, None], charges, False)
        for n in np.unique(col[col > 0]):
            rows = col == n
            for o in ox[e]:
                sh = int(n * o)
                src = charges[rows]
                shifted = np.zeros_like(src)
                if sh >= 0:
                    shifted[:, sh:] = src[:, : width - sh]
                else:
                    shifted[:, :sh] = src[:, -sh:]
                new[rows] |= shifted
        charges = new
    return charges[:, half] & (counts > 0).any(axis=1)


def valid_host(
    cfg: CompositionConfig, wtab: wy.WyckoffTables, row: int, counts: np.ndarray, ox: list[tuple[int, ...]]
) -> np.ndarray:
    """Host, vectorised validity of compositions ``counts [N, E]`` in group row ``row`` (see module doc)."""
    counts = np.asarray(counts, np.int64)
    present = counts > 0
    k = present.sum(axis=1)
    total = counts.sum(axis=1)
    caps = np.asarray(cfg.element_caps)
    ok = (k >= max(cfg.min_distinct, 1)) & (k <= cfg.max_distinct) & (total >= 1) & (total <= cfg.max_atoms)
    ok &= np.all(counts <= caps[None, :], axis=1)
    clipped = np.minimum(counts, cfg.cap)
    ok &= wy.reach_batch(wtab.trans[row], clipped) != 0
    metal = is_metal(cfg.symbols)
    charge = _neutral_host(counts, ox)
    if cfg.allow_elemental:
        charge |= k == 1
    if cfg.allow_alloys:
        charge |= np.all(~present | metal[None, :], axis=1) & (k >= 1)
    return ok & charge


def _exact_lattice(cfg: CompositionConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """Strides and all points of the mixed-radix lattice over the allowed elements."""
    caps = np.asarray(cfg.element_caps, np.int64)
    stride = np.zeros(len(caps), np.int64)
    size = 1
    for e in range(len(caps)):
        if caps[e] > 0:
            stride[e] = size
            size *= int(caps[e]) + 1
    idx = np.arange(size, dtype=np.int64)
    counts = np.zeros((size, len(caps)), np.int64)
    for e in range(len(caps)):
        if caps[e] > 0:
            counts[:, e] = (idx // stride[e]) % (caps[e] + 1)
    return stride, counts, size


def lattice_size(cfg: CompositionConfig) -> int:
    return int(np.prod([c + 1 for c in cfg.element_caps if c > 0]))


def build_tables(cfg: CompositionConfig, wtab: wy.WyckoffTables) -> CompositionTables:
    """All host precomputations for one configuration (and one list of groups)."""
    n_el, cap = len(cfg.symbols), cfg.cap
    ox = oxidation_states(cfg.symbols, cfg.oxidation_set)
    metal = is_metal(cfg.symbols)
    caps = np.asarray(cfg.element_caps, np.int32)
    size = lattice_size(cfg)
    if cfg.mode == "auto":
        exact = size <= EXACT_MAX_STATES
    elif cfg.mode in ("exact", "chain"):
        exact = cfg.mode == "exact"
    else:
        raise ValueError(f"composition mask mode must be 'auto', 'exact' or 'chain', got {cfg.mode!r}")
    if exact and size > EXACT_MAX_STATES * 32:
        raise ValueError(f"exact composition mode needs a lattice of {size} points: too large, use mode='chain'")
    if not exact and cfg.min_distinct > 1:
        raise ValueError(
            f"min_distinct={cfg.min_distinct} > 1 needs the exact composition mask (lattice of {size} points); "
            "restrict the element set or the caps"
        )
    n_groups = len(wtab.groups)
    half = _charge_window(cfg, ox)
    n_bits = 2 * half + 1
    n_words = (n_bits + 31) // 32
    o_max = max([len(s) for s in ox] + [1])
    shift = np.zeros((n_el, cap, o_max), np.int32)
    shift_ok = np.zeros((n_el, cap, o_max), bool)
    for e, states in enumerate(ox):
        for j, o in enumerate(states):
            for n in range(1, cap + 1):
                shift[e, n - 1, j] = n * o
                shift_ok[e, n - 1, j] = True
    values = sorted({o for st in ox for o in st}) or [0]
    has_ox = np.array([[v in st for v in values] for st in ox], bool).reshape(n_el, len(values))
    neg_bit = np.full((cap, len(values)), n_words * 32, np.int32)
    for j, v in enumerate(values):
        for n in range(1, cap + 1):
            if abs(n * v) <= half:
                neg_bit[n - 1, j] = -n * v + half
    wy_single = np.zeros((n_groups, cap + 1), bool)
    for g in range(n_groups):
        wy_single[g] = wtab.trans[g, :, 0] != 0
    if exact:
        stride, counts, size = _exact_lattice(cfg)
        valid = np.zeros((n_groups, size), bool)
        for g in range(n_groups):
            valid[g] = valid_host(cfg, wtab, g, counts, ox)
        alive = _closure(valid, cfg)
        group_feasible = alive[:, 0].copy()
        pair_ok = np.zeros((n_groups, n_el, cap), bool)
    else:
        stride = np.zeros(n_el, np.int64)
        valid = np.zeros((n_groups, 1), bool)
        alive = np.zeros((n_groups, 1), bool)
        pair_ok = _pair_table(cfg, wtab, ox, metal)
        single_ok = _single_table(cfg, wy_single, ox, metal)  # [G, E, C]
        group_feasible = np.any(single_ok | pair_ok, axis=(1, 2))
    return CompositionTables(
        exact=exact,
        metal=jnp.asarray(metal),
        caps=jnp.asarray(caps),
        trans=jnp.asarray(wtab.trans),
        neg_bit=jnp.asarray(neg_bit),
        has_ox_f=jnp.asarray(has_ox.astype(np.float32)),
        shift_idx=jnp.asarray(shift),
        shift_ok=jnp.asarray(shift_ok),
        pair_ok=jnp.asarray(pair_ok),
        stride=jnp.asarray(stride.astype(np.int32)),
        alive=jnp.asarray(alive),
        valid=jnp.asarray(valid),
        group_feasible=group_feasible,
        n_words=n_words,
        half=half,
        config=cfg,
    )


def _closure(valid: np.ndarray, cfg: CompositionConfig) -> np.ndarray:
    """alive = valid, closed under removing one element (downward closure over the allowed elements)."""
    radices = [c + 1 for c in cfg.element_caps if c > 0]
    n_groups = valid.shape[0]
    # mixed radix with the FIRST allowed element fastest: numpy shape is reversed (C order = last axis fastest)
    shape = (n_groups,) + tuple(reversed(radices))
    alive = valid.reshape(shape).copy()
    for _ in range(len(radices)):
        for axis in range(1, alive.ndim):
            rest = np.take(alive, np.arange(1, alive.shape[axis]), axis=axis).any(axis=axis)
            idx = [slice(None)] * alive.ndim
            idx[axis] = 0
            alive[tuple(idx)] |= rest
    return alive.reshape(n_groups, -1)


def _charge_sets(cfg: CompositionConfig, ox: list[tuple[int, ...]]) -> tuple[np.ndarray, int]:
    """``[E, C, 2H+1] bool``: charges n * ox achievable by one element with n atoms."""
    omax = max([abs(o) for s in ox for o in s] + [1])
    h = cfg.cap * omax
    sets = np.zeros((len(ox), cfg.cap, 2 * h + 1), bool)
    for e, states in enumerate(ox):
        for n in range(1, cfg.cap + 1):
            for o in states:
                sets[e, n - 1, n * o + h] = True
    return sets, h


def _single_table(cfg, wy_single, ox, metal) -> np.ndarray:
    """``[G, E, C] bool``: the one-element composition (e, n) is valid."""
    n_el, cap = len(ox), cfg.cap
    caps = np.asarray(cfg.element_caps)
    n = np.arange(1, cap + 1)
    base = (n[None, :] <= caps[:, None]) & (n[None, :] <= cfg.max_atoms) & (cfg.min_distinct <= 1)
    charge = np.zeros((n_el, cap), bool)
    for e in range(n_el):
        charge[e] = any(o == 0 for o in ox[e])
    if cfg.allow_elemental:
        charge[:] = True
    if cfg.allow_alloys:
        charge |= metal[:, None]
    return wy_single[:, None, 1:] & (base & charge)[None]


def _pair_table(cfg, wtab, ox, metal) -> np.ndarray:
    """``[G, E, C] bool``: (e, n) followed by some other element (e2, n2) is a valid composition."""
    n_el, cap = len(ox), cfg.cap
    if cfg.max_distinct < 2:
        return np.zeros((len(wtab.groups), n_el, cap), bool)
    caps = np.asarray(cfg.element_caps)
    sets, h = _charge_sets(cfg, ox)
    flat = sets.reshape(n_el * cap, -1).astype(np.float32)
    neutral = (flat @ flat[:, ::-1].T) > 0  # sum of one charge from each set can be 0
    both_metal = (metal[:, None] & metal[None, :]).repeat(cap, 0).repeat(cap, 1)
    charge = neutral | (both_metal if cfg.allow_alloys else False)
    n = np.arange(1, cap + 1)
    ok_e = (n[None, :] <= caps[:, None]).reshape(-1)
    same = np.repeat(np.repeat(np.eye(n_el, dtype=bool), cap, 0), cap, 1)
    tot = (n[:, None] + n[None, :]) <= cfg.max_atoms  # [C, C]
    tot = np.tile(tot, (n_el, n_el))
    pair = charge & ok_e[:, None] & ok_e[None, :] & ~same & tot  # [E*C, E*C]
    out = np.zeros((len(wtab.groups), n_el, cap), bool)
    for g in range(len(wtab.groups)):
        tr = wtab.trans[g]
        w1 = tr[1:, 0]  # [C] usage after the first element
        # pair Wyckoff: any usage state reachable from w1(n) by n2
        wy_pair = np.zeros((cap, cap), bool)
        for r in range(tr.shape[1]):
            on = (w1 >> np.uint32(r)) & np.uint32(1)
            wy_pair |= on.astype(bool)[:, None] & (tr[None, 1:, r] != 0)
        wp = np.tile(wy_pair, (n_el, n_el))
        out[g] = np.any(pair & wp, axis=1).reshape(n_el, cap)
    return out


# ----------------------------------------------------------------------------------------------------------
# JAX: state, masks, step
# ----------------------------------------------------------------------------------------------------------


def init_state(tab: CompositionTables) -> CompositionState:
    n_el = len(tab.config.symbols)
    charges = np.zeros(tab.n_words, np.uint32)
    charges[tab.half >> 5] = np.uint32(1) << np.uint32(tab.half & 31)
    return CompositionState(
        counts=jnp.zeros(n_el, jnp.int32),
        n_elements=jnp.zeros((), jnp.int32),
        n_atoms=jnp.zeros((), jnp.int32),
        all_metal=jnp.ones((), bool),
        wyckoff=jnp.ones((), jnp.uint32),
        charges=jnp.asarray(charges),
        code=jnp.zeros((), jnp.int32),
        parents=jnp.zeros(n_el, bool),
    )


def _bit(words: jnp.ndarray, idx: jnp.ndarray) -> jnp.ndarray:
    """Bits ``idx`` (any shape, -1 = absent) of a packed bitset."""
    safe = jnp.clip(idx, 0, words.shape[0] * 32 - 1)
    w = words[safe >> 5]
    return ((w >> (safe & 31).astype(jnp.uint32)) & jnp.uint32(1)).astype(bool) & (idx >= 0)


def _shift_words(words: jnp.ndarray, s: jnp.ndarray) -> jnp.ndarray:
    """Packed bitset shifted by ``s`` bits toward higher indices (``s`` may be negative); bits fall off."""
    nw = words.shape[0]
    q = jnp.floor_divide(s, 32)
    r = (s - 32 * q).astype(jnp.uint32)
    j = jnp.arange(nw) - q
    lo = jnp.where((j >= 0) & (j < nw), words[jnp.clip(j, 0, nw - 1)], jnp.uint32(0))
    j1 = j - 1
    hi = jnp.where((j1 >= 0) & (j1 < nw), words[jnp.clip(j1, 0, nw - 1)], jnp.uint32(0))
    carry = jnp.where(r == 0, jnp.uint32(0), hi >> ((jnp.uint32(32) - r) & jnp.uint32(31)))
    return (lo << r) | carry


def wyckoff_next(tab: CompositionTables, row: jnp.ndarray, wbits: jnp.ndarray) -> jnp.ndarray:
    """``[C + 1] uint32``: usage bitmask after adding ``n`` atoms of a new element, for every ``n``."""
    tr = tab.trans[row]  # [C+1, R]
    r = jnp.arange(tr.shape[1], dtype=jnp.uint32)
    on = ((wbits >> r) & jnp.uint32(1)).astype(bool)  # [R]
    sel = jnp.where(on[None, :], tr, jnp.uint32(0))
    return lax.reduce(sel, jnp.uint32(0), lax.bitwise_or, (1,))


def wyckoff_add(tab: CompositionTables, row: jnp.ndarray, wbits: jnp.ndarray, n: jnp.ndarray) -> jnp.ndarray:
    """``[...] uint32``: ``wyckoff_next(tab, row, wbits)[n]`` for counts ``n`` (one row of the automaton each;
    ``wbits`` and ``n`` of one shape)."""
    tr = tab.trans[row, jnp.clip(n, 0, tab.config.cap)]  # [..., R]
    on = ((wbits[..., None] >> jnp.arange(tr.shape[-1], dtype=jnp.uint32)) & jnp.uint32(1)).astype(bool)
    return lax.reduce(jnp.where(on, tr, jnp.uint32(0)), jnp.uint32(0), lax.bitwise_or, (tr.ndim - 1,))


def is_valid(tab: CompositionTables, row: jnp.ndarray, s: CompositionState) -> jnp.ndarray:
    """``[] bool``: the composition satisfies every constraint (stop allowed)."""
    if tab.exact:
        return tab.valid[row, s.code]
    return valid_chain(tab, s.n_elements, s.n_atoms, s.all_metal, s.wyckoff, _bit(s.charges, jnp.asarray(tab.half)))


def valid_chain(tab: CompositionTables, n_elements, n_atoms, all_metal, wyckoff, neutral) -> jnp.ndarray:
    """``[] bool``: chain-mode validity from the trackers (``neutral``: the charge set holds 0)."""
    cfg = tab.config
    charge_ok = neutral
    if cfg.allow_elemental:
        charge_ok |= n_elements == 1
    if cfg.allow_alloys:
        charge_ok |= all_metal
    return (
        (n_elements >= max(cfg.min_distinct, 1))
        & (n_elements <= cfg.max_distinct)
        & (n_atoms >= 1)
        & (wyckoff != 0)
        & charge_ok
    )


def forward_mask(tab: CompositionTables, row: jnp.ndarray, s: CompositionState) -> jnp.ndarray:
    """``[E * C + 1] bool`` allowed actions: (element, count) pairs then stop (see module doc)."""
    cfg = tab.config
    n_el, cap = len(cfg.symbols), cfg.cap
    n = jnp.arange(1, cap + 1, dtype=jnp.int32)
    present = s.counts > 0
    base = (
        ~present[:, None]
        & (n[None, :] <= tab.caps[:, None])
        & (s.n_atoms + n[None, :] <= cfg.max_atoms)
        & (s.n_elements < cfg.max_distinct)
    )
    if tab.exact:
        code = s.code + n[None, :] * tab.stride[:, None]
        nxt = tab.alive[row, jnp.clip(code, 0, tab.alive.shape[1] - 1)]
    else:
        w_ok = wyckoff_next(tab, row, s.wyckoff)[1:] != 0  # [C]
        n_bits = tab.n_words * 32
        nb = jnp.minimum(tab.neg_bit, n_bits - 1)  # the sentinel n_bits (outside the window) reads as 0 below
        word = s.charges[nb >> 5]  # [C, V]
        neutral_nv = (((word >> (nb & 31).astype(jnp.uint32)) & jnp.uint32(1)) != 0) & (tab.neg_bit < n_bits)
        charge = (tab.has_ox_f @ neutral_nv.astype(jnp.float32).T) > 0.5  # [E, C]
        if cfg.allow_elemental:
            charge |= s.n_elements == 0
        if cfg.allow_alloys:
            charge |= (s.all_metal & tab.metal)[:, None]
        nxt = w_ok[None, :] & charge
        if not cfg.allow_elemental:  # with the elemental rule a completable single element is already valid
            nxt |= (s.n_elements == 0) & tab.pair_ok[row]
    allowed = base & nxt
    return jnp.concatenate([allowed.reshape(n_el * cap), is_valid(tab, row, s)[None]])


def step(tab: CompositionTables, row: jnp.ndarray, s: CompositionState, index: jnp.ndarray) -> CompositionState:
    """Adds element ``index // cap`` with ``index % cap + 1`` atoms (the stop index is handled by the env).
    ``parents`` becomes the present elements; the environment narrows it in chain mode (composition_parents)."""
    cap = tab.config.cap
    e = index // cap
    n = index % cap + 1
    counts = s.counts.at[e].set(n)
    wbits = wyckoff_add(tab, row, s.wyckoff, n)
    if tab.exact:
        charges = s.charges
    else:
        shifted = jax.vmap(_shift_words, in_axes=(None, 0))(s.charges, tab.shift_idx[e, n - 1])  # [O, NW]
        shifted = jnp.where(tab.shift_ok[e, n - 1][:, None], shifted, jnp.uint32(0))
        charges = lax.reduce(shifted, jnp.uint32(0), lax.bitwise_or, (0,))
    return CompositionState(
        counts=counts,
        n_elements=s.n_elements + 1,
        n_atoms=s.n_atoms + n,
        all_metal=s.all_metal & tab.metal[e],
        wyckoff=wbits,
        charges=charges,
        code=s.code + n * tab.stride[e],
        parents=counts > 0,
    )
