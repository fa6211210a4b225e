"""SMACT chemistry: the oxidation-state tables and composition validity (charge neutrality + Pauling test), in JAX.

This module is the one place that reads SMACT's oxidation-state sets (:func:`oxidation_states`, through SMACT's
public ``Element.oxidation_states_<set>`` attributes and, for SMACT's default set, its ``ICSD24OxStatesFilter``);
the Crystal-GFN composition subspace and the reward's jit rule both use it.

The composition-validity term of CHGFlowNet (paper 000, Sec. 4.3, ``R_comp = 1`` for a valid composition,
0 otherwise) and SHAFT (paper 002, Sec. 4.2) is the CDVAE metric: SMACT's ``smact_validity`` (Davies et al.
2019). This module re-implements it exactly, in fixed shapes, so it can run inside a jitted reward, and keeps
a host-side wrapper around SMACT itself (``smact_valid``) for metrics.

The reference call (SMACT 4.0.2, ``smact.screening.smact_validity``) this module reproduces::

    smact_validity(Composition(counts), use_pauling_test=True, include_alloys=True,
                   check_metallicity=False, oxidation_states_set="smact14", mixed_valence=False)

Choice of oxidation-state set: the CDVAE metric used by CHGFlowNet/SHAFT calls ``Element.oxidation_states``
of SMACT 2.x, i.e. the original ``oxidation_states.txt`` table. SMACT 4 changed the default to a filtered
ICSD-2024 set; the original table is still shipped and is selected with ``oxidation_states_set="smact14"``
(``Element.oxidation_states_smact14``). We pass it explicitly, so results do not depend on SMACT's default.

SMACT's rule, read from ``smact/screening.py`` (4.0.2):

1. fast paths: a single distinct element is valid; with ``include_alloys`` a composition whose elements are
   all in ``smact.metals`` is valid;
2. counts are reduced by their gcd (``Na2O2 -> NaO``); the ``threshold`` argument of ``neutral_ratios`` is
   then irrelevant because ``stoichs`` is given (a single ratio per element, whose gcd is 1);
3. an element without oxidation states in the set (He, Ne, Ar for smact14) makes it invalid;
4. valid iff some assignment of ONE oxidation state ``o_i`` per element has ``sum_i o_i n_i = 0`` (n_i the
   reduced counts) AND passes ``pauling_test``: for every pair of elements, a cation (``o > 0``) must have a
   strictly lower Pauling electronegativity than an anion (``o < 0``); an element without an
   electronegativity (He, Ne, Ar, Pm, Rn, Lr) fails the test for every assignment.

JAX algorithm (no enumeration of the product of oxidation states): sort the distinct elements by
electronegativity. An assignment passes the Pauling test iff there is a cut of that order, between two
strictly different electronegativities, such that every element below the cut takes a state ``o >= 0`` and
every element above takes ``o <= 0``. For each cut, charge neutrality asks whether the positive charge
reachable by the lower part equals the negative charge reachable by the upper part. Both sets of reachable
charges are computed by a subset-sum dynamic programme over charges ``0..Q`` (boolean vectors of fixed
length; the partial sums only grow, so charges above ``Q`` can be dropped), as prefix sets for the lower parts
and suffix sets for the upper parts: ``O(K * S * Q)`` work for ``K`` element slots and ``S`` states per
element.

Deviations from SMACT (documented, all outside its defined domain):

- an empty composition is INVALID here (SMACT returns True vacuously: ``all([])`` of the alloy test);
- elements missing from SMACT's data (Z > 103) make a multi-element composition invalid (SMACT raises
  ``KeyError``); a single such element is valid, as in SMACT's fast path;
- more than ``max_elements`` distinct elements, or reduced counts summing to more than ``max_total``, cannot
  be represented: ``valid = False`` and the returned ``overflow`` flag is set.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal.elements import NUM_ELEMENTS, SYMBOLS
from hgfn_jax.crystal.types import Crystal

SMACT_MAX_Z = 103  # SMACT's element data covers Z = 1..103
OXIDATION_STATES_SET = "smact14"  # the set used by the CDVAE/CHGFlowNet/SHAFT metric (see module docstring)
DEFAULT_MAX_ELEMENTS = 8
# SMACT's named sets (the ``oxidation_states_set`` names of ``smact_validity``) and "smact_default", the set
# ``smact_validity`` uses when none is named (ICSD 2024 filtered with consensus 3, commonality "low").
OXIDATION_SETS = ("smact_default", "icsd24", "icsd16", "smact14", "pymatgen_sp", "wiki")
_SET_ATTRIBUTE = {
    "icsd24": "oxidation_states_icsd24",
    "icsd16": "oxidation_states_icsd16",
    "smact14": "oxidation_states_smact14",
    "pymatgen_sp": "oxidation_states_sp",
    "wiki": "oxidation_states_wiki",
}


# Host data from SMACT (the one loader)

@functools.lru_cache(maxsize=8)
def _oxidation_dict(name: str) -> dict[str, tuple[int, ...]]:
    """``{symbol: states}`` of SMACT's set ``name`` for Z = 1..103 (elements without states are left out)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import smact
        from smact.utils.oxidation import ICSD24OxStatesFilter

        if name == "smact_default":  # what smact_validity uses when no set is named (ICSD24FilterConfig defaults)
            df = ICSD24OxStatesFilter().filter(consensus=3, include_zero=False, commonality="low")
            return {
                str(r["element"]): tuple(int(x) for x in str(r["oxidation_state"]).split()) for _, r in df.iterrows()
            }
        attr = _SET_ATTRIBUTE[name]
        out = {}
        for z in range(1, SMACT_MAX_Z + 1):
            sym = SYMBOLS[z]
            try:
                states = getattr(smact.Element(sym), attr)
            except Exception:  # noqa: BLE001 - SMACT has no data for some heavy elements
                continue
            if states:
                out[sym] = tuple(int(x) for x in states)
        return out


def oxidation_states(symbols: Sequence[str], name: str = "smact_default") -> list[tuple[int, ...]]:
    """Oxidation states of each element in SMACT's set ``name`` (sorted; empty tuple when SMACT lists none)."""
    if name not in OXIDATION_SETS:
        raise ValueError(f"unknown oxidation-state set {name!r}; choose one of {OXIDATION_SETS}")
    table = _oxidation_dict(name)
    return [tuple(sorted(table.get(s, ()))) for s in symbols]


@functools.lru_cache(maxsize=1)
def smact_metals() -> frozenset[str]:
    """SMACT's list of metals (``smact.metals``, used by its alloy rule)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import smact

        return frozenset(smact.metals)


def is_metal(symbols: Sequence[str]) -> np.ndarray:
    """``[E] bool``: element is in SMACT's list of metals."""
    return np.array([s in smact_metals() for s in symbols], bool)


# Tables for the jit rule

@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["ox_states", "ox_mask", "has_ox", "eneg", "has_eneg", "is_metal"],
    meta_fields=["max_pos_ox", "max_neg_ox", "oxidation_states_set"],
)
@dataclasses.dataclass(frozen=True)
class SmactTables:
    """Per-element SMACT data indexed by atomic number Z (row 0 = padding, never a real element)."""

    ox_states: jnp.ndarray  # [119, S] int32: allowed oxidation states of element Z, padded with 0
    ox_mask: jnp.ndarray  # [119, S] bool: real entries of ox_states
    has_ox: jnp.ndarray  # [119] bool: element has a non-empty oxidation-state set
    eneg: jnp.ndarray  # [119] float32: SMACT Pauling electronegativity (0 where missing)
    has_eneg: jnp.ndarray  # [119] bool: SMACT has a Pauling electronegativity for Z
    is_metal: jnp.ndarray  # [119] bool: Z is in ``smact.metals`` (the alloy fast path)
    max_pos_ox: int = 8  # [] static: largest positive state in the set
    max_neg_ox: int = 4  # [] static: largest |negative| state in the set
    oxidation_states_set: str = OXIDATION_STATES_SET  # [] static: the set's name


@functools.lru_cache(maxsize=4)
def smact_tables(oxidation_states_set: str = OXIDATION_STATES_SET) -> SmactTables:
    """Builds the tables from SMACT on the host (cached). ``oxidation_states_set``: a name of ``OXIDATION_SETS``."""
    import smact

    lists: list[list[int]] = [[] for _ in range(NUM_ELEMENTS)]
    eneg = np.zeros(NUM_ELEMENTS, np.float32)
    has_eneg = np.zeros(NUM_ELEMENTS, bool)
    symbols = SYMBOLS[1 : SMACT_MAX_Z + 1]
    ox_lists = oxidation_states(symbols, oxidation_states_set)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        elems = [smact.Element(s) for s in symbols]
    for z, (e, ox) in enumerate(zip(elems, ox_lists, strict=True), start=1):
        lists[z] = sorted(set(ox))
        if e.pauling_eneg is not None:
            eneg[z] = float(e.pauling_eneg)
            has_eneg[z] = True
    metal = np.zeros(NUM_ELEMENTS, bool)
    metal[1 : SMACT_MAX_Z + 1] = is_metal(symbols)
    width = max(len(x) for x in lists)
    states = np.zeros((NUM_ELEMENTS, width), np.int32)
    mask = np.zeros((NUM_ELEMENTS, width), bool)
    for z, ox in enumerate(lists):
        states[z, : len(ox)] = ox
        mask[z, : len(ox)] = True
    all_states = [o for ox in lists for o in ox]
    return SmactTables(
        ox_states=jnp.asarray(states),
        ox_mask=jnp.asarray(mask),
        has_ox=jnp.asarray(mask.any(axis=1)),
        eneg=jnp.asarray(eneg),
        has_eneg=jnp.asarray(has_eneg),
        is_metal=jnp.asarray(metal),
        max_pos_ox=max(0, max(all_states)),
        max_neg_ox=max(0, -min(all_states)),
        oxidation_states_set=oxidation_states_set,
    )


def element_counts(species: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """[119] int32 real sites per atomic number; species [N] int32 (Z, 0 = padding), mask [N] bool."""
    z = jnp.where(mask, species, 0).astype(jnp.int32)
    z = jnp.clip(z, 0, NUM_ELEMENTS - 1)
    return jnp.zeros(NUM_ELEMENTS, jnp.int32).at[z].add(mask.astype(jnp.int32)).at[0].set(0)


def _gcd_reduce(c: jnp.ndarray) -> jnp.ndarray:
    g = c[0]
    for k in range(1, c.shape[0]):
        g = jnp.gcd(g, c[k])
    return jnp.maximum(g, 1)


def _reach_step(reach: jnp.ndarray, shifts: jnp.ndarray, allowed: jnp.ndarray) -> jnp.ndarray:
    """new[q] = OR_s allowed[s] & reach[q - shifts[s]] (out-of-range reads False); reach [W], shifts [S]."""
    width = reach.shape[0]
    q = jnp.arange(width)[None, :] - shifts[:, None]  # [S, W]
    inside = (q >= 0) & (q < width)  # explicit: jnp.take would wrap negative indices
    got = reach[jnp.clip(q, 0, width - 1)] & inside
    return jnp.any(got & allowed[:, None], axis=0)


def _scan_step(reach: jnp.ndarray, xs: tuple) -> tuple[jnp.ndarray, jnp.ndarray]:
    shifts, allowed, is_real = xs
    new = jnp.where(is_real, _reach_step(reach, shifts, allowed), reach)
    return new, new


def smact_valid_counts(
    counts: jnp.ndarray,
    tables: SmactTables,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_total: int = 128,
    use_pauling_test: bool = True,
    include_alloys: bool = True,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """SMACT validity of one composition given as element counts. jit/vmap-safe, unbatched.

    Args:
        counts: [119] int, number of atoms of each element Z (index 0 ignored); non-negative.
        tables: ``smact_tables(...)``.
        max_elements: static K, the most distinct elements handled (product-free, cost linear in K).
        max_total: static bound on the sum of the gcd-reduced counts (sizes the charge vectors).
        use_pauling_test, include_alloys: as in ``smact.screening.smact_validity``.

    Returns:
        (valid [] bool, overflow [] bool): ``overflow`` is True when the composition has more than
        ``max_elements`` distinct elements or a reduced total above ``max_total``; then ``valid`` is False.
    """
    counts = jnp.asarray(counts).astype(jnp.int32).at[0].set(0)
    counts = jnp.maximum(counts, 0)
    k_max = max_elements
    present = counts > 0
    n_distinct = jnp.sum(present)
    (idx,) = jnp.nonzero(present, size=k_max, fill_value=0)
    real = jnp.arange(k_max) < jnp.minimum(n_distinct, k_max)  # [K]
    idx = jnp.where(real, idx, 0)
    c = jnp.where(real, counts[idx], 0)
    c = c // _gcd_reduce(c)
    total = jnp.sum(c)
    overflow = (n_distinct > k_max) | (total > max_total)

    single = n_distinct == 1
    alloy = (n_distinct >= 1) & jnp.all(~real | tables.is_metal[idx]) if include_alloys else jnp.bool_(False)
    missing_ox = jnp.any(real & ~tables.has_ox[idx])

    states = tables.ox_states[idx]  # [K, S]
    smask = tables.ox_mask[idx] & real[:, None]  # [K, S]
    if use_pauling_test:
        missing_en = jnp.any(real & ~tables.has_eneg[idx])
        key = jnp.where(real, tables.eneg[idx], jnp.inf)
        order = jnp.argsort(key)
        key, c, states, smask, real_s = key[order], c[order], states[order], smask[order], real[order]
        q_cap = min(tables.max_pos_ox, tables.max_neg_ox) * max_total
        width = q_cap + 1
        start = jnp.zeros(width, bool).at[0].set(True)
        # cation side (below the cut): o >= 0, charge c*o; anion side (above): o <= 0, charge magnitude -c*o
        pos = (c[:, None] * states, smask & (states >= 0), real_s)
        neg = (-c[:, None] * states, smask & (states <= 0), real_s)
        _, pre = jax.lax.scan(_scan_step, start, pos)  # pre[k]: reachable charge of elements 0..k
        _, suf = jax.lax.scan(_scan_step, start, neg, reverse=True)  # suf[k]: |charge| of elements k..K-1
        pre = jnp.concatenate([start[None], pre])  # [K+1, W]: row m = elements below cut m
        suf = jnp.concatenate([suf, start[None]])  # [K+1, W]: row m = elements above cut m
        cut_ok = jnp.concatenate([jnp.array([True]), key[:-1] < key[1:], jnp.array([True])])  # [K+1]
        neutral = jnp.any(cut_ok & jnp.any(pre & suf, axis=1))
        charge_ok = neutral & ~missing_en
    else:
        off = tables.max_neg_ox * max_total
        width = off + tables.max_pos_ox * max_total + 1
        reach = jnp.zeros(width, bool).at[off].set(True)
        reach, _ = jax.lax.scan(_scan_step, reach, (c[:, None] * states, smask, real))
        charge_ok = reach[off]
    valid = single | alloy | (~missing_ox & charge_ok)
    valid = valid & (n_distinct >= 1) & ~overflow
    return valid, overflow


def smact_valid_crystal(
    crystal: Crystal,
    tables: SmactTables,
    *,
    max_elements: int | None = None,
    use_pauling_test: bool = True,
    include_alloys: bool = True,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """SMACT validity of one (unbatched) crystal's composition: (valid [] bool, overflow [] bool).

    The charge vectors are sized by the padded site count N (the reduced total can never exceed it).
    ``max_elements`` defaults to N, so every composition a crystal can hold is evaluated exactly (the cost is
    linear in it; SMACT's own cost grows exponentially with the number of elements). A crystal with
    ``crystal.overflow`` (its true cell had more than N sites) has an unknown composition: invalid, and
    ``overflow`` is set.
    """
    counts = element_counts(crystal.species, crystal.mask)
    valid, overflow = smact_valid_counts(
        counts,
        tables,
        max_elements=crystal.n_max if max_elements is None else max_elements,
        max_total=crystal.n_max,
        use_pauling_test=use_pauling_test,
        include_alloys=include_alloys,
    )
    overflow = overflow | crystal.overflow
    return valid & ~crystal.overflow, overflow


def smact_valid(
    composition: Mapping[str, float] | str,
    *,
    use_pauling_test: bool = True,
    include_alloys: bool = True,
    oxidation_states_set: str = OXIDATION_STATES_SET,
) -> bool:
    """Host-side SMACT validity (for metrics): ``smact.screening.smact_validity`` with an explicit set.

    ``composition`` is a pymatgen-parsable formula or a ``{symbol: count}`` mapping (a pymatgen Composition
    works too). Same guards as the JAX version: an empty composition is invalid, and an element unknown to
    SMACT (Z > 103) in a multi-element composition is invalid instead of raising.
    """
    from pymatgen.core import Composition
    from smact.screening import smact_validity

    comp = Composition(composition)
    if comp.num_atoms <= 0 or len(comp) == 0:
        return False
    if len(comp) > 1 and any(el.Z > SMACT_MAX_Z for el in comp.elements):
        return False
    return bool(
        smact_validity(
            comp,
            use_pauling_test=use_pauling_test,
            include_alloys=include_alloys,
            oxidation_states_set=oxidation_states_set,
        )
    )


def counts_from_mapping(composition: Mapping[str, float] | str) -> np.ndarray:
    """[119] int32 counts of a formula or ``{symbol: count}`` mapping (integer counts required)."""
    from pymatgen.core import Composition

    out = np.zeros(NUM_ELEMENTS, np.int32)
    for el, amt in Composition(composition).items():
        if not math.isclose(amt, round(amt)):
            raise ValueError(f"non-integer count {amt} for {el} in {composition!r}")
        out[el.Z] += int(round(amt))
    return out


__all__ = [
    "OXIDATION_SETS",
    "OXIDATION_STATES_SET",
    "SmactTables",
    "counts_from_mapping",
    "element_counts",
    "is_metal",
    "oxidation_states",
    "smact_tables",
    "smact_valid",
    "smact_valid_counts",
    "smact_valid_counts_batch",
    "smact_valid_crystal",
    "smact_metals",
]


@functools.partial(
    jax.jit, static_argnames=("max_elements", "max_total", "use_pauling_test", "include_alloys")
)
def smact_valid_counts_batch(
    counts: jnp.ndarray,
    tables: SmactTables,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_total: int = 128,
    use_pauling_test: bool = True,
    include_alloys: bool = True,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Jitted batch of ``smact_valid_counts``: counts [B, 119] -> (valid [B] bool, overflow [B] bool)."""
    fn = functools.partial(
        smact_valid_counts,
        tables=tables,
        max_elements=max_elements,
        max_total=max_total,
        use_pauling_test=use_pauling_test,
        include_alloys=include_alloys,
    )
    return jax.vmap(fn)(counts)
