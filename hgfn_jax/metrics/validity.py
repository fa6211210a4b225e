"""Validity of generated crystals, each check named by the convention it follows.

=========================  ===================================================================================
``cif``                    CIF readable by pymatgen (PGCGM Table 1 "CIFs", paper 000 Table 1 "CIF"): every
                           sample that reached us as a parsed, finite, ordered structure.
``structure_cdvae``        CDVAE (Xie et al. 2022, ``scripts/eval_utils.structure_validity``; paper 002 Table 1):
                           every distinct-site minimum-image distance >= 0.5 A AND cell volume >= 0.1 A^3.
``distance_pgcgm``         PGCGM Table 1 "Distance" / paper 000 Table 1 "Structure": the shortest distance
                           between any two atoms > 0.5 A, periodic images (a site's own images) included.
``composition_cdvae``      CDVAE's SMACT check: some oxidation-state combination (SMACT 2014 set, ``smact14``)
                           is charge neutral AND passes the Pauling electronegativity test (missing
                           electronegativity data passes, as in CDVAE); one-element and all-metal (alloy)
                           compositions are valid. Counts are gcd-reduced first.
``charge_neutral_smact``   the same without the Pauling test.
``charge_pgcgm``           PGCGM Table 1 "Charge": pymatgen ``Composition.oxi_state_guesses()`` is non-empty.
``composition_reward``     the project's reward rule (``hgfn_jax.crystal.chemistry.smact_valid_counts``, the
                           jit SMACT check with its own bounds), for comparison with the reward.
=========================  ===================================================================================

Composition checks use the sample's composition, so composition-only samples (Crystal-GFN) are judged too.
Every fraction is over ALL samples: an unreadable or broken sample fails every check it cannot pass.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
from pymatgen.core import Composition, Structure

from hgfn_jax.metrics.samples import Sample, error_counts

MIN_DISTANCE = 0.5  # A (CDVAE, PGCGM, paper 000 sec. 5.1)
MIN_VOLUME = 0.1  # A^3 (CDVAE)
OXIDATION_STATES_SET = "smact14"  # the SMACT 2014 list, CDVAE's ``Element.oxidation_states`` at the time


def structure_valid_cdvae(s: Structure | None, cutoff: float = MIN_DISTANCE, min_volume: float = MIN_VOLUME) -> bool:
    """CDVAE: min distinct-site minimum-image distance >= cutoff and volume >= min_volume."""
    if s is None:
        return False
    try:
        if not np.isfinite(s.volume) or s.volume < min_volume:
            return False
        if len(s) < 2:
            return True
        d = np.asarray(s.distance_matrix, float)
        d = d + np.eye(len(s)) * (cutoff + 10.0)
        return bool(np.isfinite(d).all() and d.min() >= cutoff)
    except Exception:  # noqa: BLE001 - a structure pymatgen cannot measure is invalid
        return False


def distance_valid_pgcgm(s: Structure | None, cutoff: float = MIN_DISTANCE) -> bool:
    """PGCGM / paper 000: no two atoms (periodic images included) closer than ``cutoff``."""
    if s is None or len(s) == 0:
        return False
    try:
        _, _, _, dists = s.get_neighbor_list(cutoff, exclude_self=True)
        return not bool(np.any(np.asarray(dists) <= cutoff))
    except Exception:  # noqa: BLE001
        return False


def _reduced_counts(comp: Composition) -> tuple[tuple[str, ...], tuple[int, ...]]:
    items = sorted((el.symbol, amt) for el, amt in comp.element_composition.items())
    syms = tuple(k for k, _ in items)
    counts = np.array([int(round(v)) for _, v in items], np.int64)
    if np.any(counts <= 0) or not np.allclose(counts, [v for _, v in items], atol=1e-6):
        raise ValueError(f"non-integer composition {comp}")
    counts = counts // np.gcd.reduce(counts)
    return syms, tuple(int(c) for c in counts)


@functools.lru_cache(maxsize=100000)
def _smact_cdvae(syms: tuple[str, ...], counts: tuple[int, ...], use_pauling_test: bool, include_alloys: bool,
                 oxidation_states_set: str) -> bool:
    import smact
    from smact.screening import pauling_test

    if len(set(syms)) == 1:
        return True
    if include_alloys and all(s in smact.metals for s in syms):
        return True
    space = smact.element_dictionary(syms)
    elems = [space[s] for s in syms]
    attr = {"smact14": "oxidation_states_smact14", "icsd16": "oxidation_states_icsd16",
            "icsd24": "oxidation_states_icsd24", "pymatgen_sp": "oxidation_states_sp"}[oxidation_states_set]
    ox_combos = [getattr(e, attr) for e in elems]
    if any(not ox for ox in ox_combos):
        return False
    electronegs = [e.pauling_eneg for e in elems]
    stoichs = [(c,) for c in counts]
    threshold = max(counts)
    for ox_states in itertools.product(*ox_combos):
        if not smact.neutral_ratios(ox_states, stoichs=stoichs, threshold=threshold):
            continue
        if not use_pauling_test:
            return True
        try:
            ok = pauling_test(ox_states, electronegs)
        except TypeError:  # no electronegativity data: CDVAE counts it as passing
            ok = True
        if ok:
            return True
    return False


def composition_valid_cdvae(comp: Composition | None, use_pauling_test: bool = True, include_alloys: bool = True,
                            oxidation_states_set: str = OXIDATION_STATES_SET) -> bool:
    """CDVAE's SMACT composition validity (see the module docstring); False for a missing composition."""
    if comp is None:
        return False
    try:
        syms, counts = _reduced_counts(comp)
    except (ValueError, KeyError):
        return False
    if not syms:
        return False
    try:
        return _smact_cdvae(syms, counts, bool(use_pauling_test), bool(include_alloys), oxidation_states_set)
    except (KeyError, NameError):  # element unknown to SMACT
        return False


@functools.lru_cache(maxsize=100000)
def _pgcgm_charge(reduced: str) -> bool:
    """Is ``Composition(reduced).oxi_state_guesses()`` non-empty, decided without enumerating it.

    pymatgen lists, per element, every multiset of its ``n`` atoms' oxidation states
    (``combinations_with_replacement``, ``C(n + k - 1, k - 1)`` of them, each scored) and then every product of the
    per-element sums: 7.4 s for Mn37V41O143 on this CPU (this function: 1.7 ms), growing as ``n^(k-1)``; the
    evaluation of the PGCGM default run's generated structures (unmerged cells of up to hundreds of atoms) spent
    over 10 minutes there. A guess exists iff zero is in the sumset of the
    per-element achievable sums, and the achievable sums of ``n`` atoms are ``n``-fold sumsets of the element's
    states: a set recursion, the same answer (checked against pymatgen on random compositions in
    ``tests/metrics/test_validity.py``) in microseconds. Oxidation states as pymatgen's default takes them:
    ``icsd_oxidation_states`` or, if empty, ``common_oxidation_states``; one element alone counts as neutral, as
    in pymatgen."""
    from pymatgen.core import Element

    amounts = Composition(reduced).get_el_amt_dict()
    if len(amounts) == 1:
        return True  # pymatgen: an element alone is neutral ({el: 0})
    total = {0}
    for el, amt in amounts.items():
        if amt != int(amt):
            return False  # pymatgen raises for non-integer amounts
        states = Element(el).icsd_oxidation_states or Element(el).common_oxidation_states
        sums = {0}
        for _ in range(int(amt)):
            sums = {a + o for a in sums for o in states}
        total = {t + a for t in total for a in sums}
        if not total:
            return False
    return 0 in total


def charge_valid_pgcgm(comp: Composition | None) -> bool:
    """PGCGM: pymatgen finds at least one charge-neutral oxidation-state assignment."""
    if comp is None:
        return False
    try:
        return _pgcgm_charge(comp.reduced_formula)
    except Exception:  # noqa: BLE001
        return False


def composition_valid_reward(comps: list[Composition | None]) -> np.ndarray:
    """The reward's jit SMACT rule (``smact_valid_counts``, Pauling test on, alloys valid) per composition."""
    import jax
    import jax.numpy as jnp

    from hgfn_jax.crystal.chemistry import smact_tables, smact_valid_counts

    out = np.zeros(len(comps), bool)
    counts = np.zeros((len(comps), 119), np.int32)
    ok = np.zeros(len(comps), bool)
    for i, c in enumerate(comps):
        if c is None:
            continue
        try:
            for el, amt in c.element_composition.items():
                counts[i, el.Z] = int(round(amt))
            ok[i] = True
        except Exception:  # noqa: BLE001
            ok[i] = False
    if not ok.any():
        return out
    k = int(max(1, (counts > 0).sum(axis=1).max()))
    total = int(max(1, counts.sum(axis=1).max()))
    tables = smact_tables()
    fn = jax.jit(jax.vmap(lambda x: smact_valid_counts(x, tables, max_elements=k, max_total=total)))
    valid, _ = fn(jnp.asarray(counts))
    return np.asarray(valid) & ok


def validity_flags(samples: list[Sample], reward_rule: bool = False) -> dict[str, np.ndarray]:
    """Per-sample boolean arrays of every check (see the module docstring)."""
    n = len(samples)
    flags = {k: np.zeros(n, bool) for k in ("cif", "structure_cdvae", "distance_pgcgm", "composition_cdvae",
                                           "charge_neutral_smact", "charge_pgcgm")}
    for i, s in enumerate(samples):
        st = s.structure
        flags["cif"][i] = st is not None
        flags["structure_cdvae"][i] = structure_valid_cdvae(st)
        flags["distance_pgcgm"][i] = distance_valid_pgcgm(st)
        flags["composition_cdvae"][i] = composition_valid_cdvae(s.composition)
        flags["charge_neutral_smact"][i] = composition_valid_cdvae(s.composition, use_pauling_test=False)
        flags["charge_pgcgm"][i] = charge_valid_pgcgm(s.composition)
    flags["valid_cdvae"] = flags["structure_cdvae"] & flags["composition_cdvae"]
    if reward_rule:
        flags["composition_reward"] = composition_valid_reward([s.composition for s in samples])
    return flags


def validity_metrics(samples: list[Sample], flags: dict[str, np.ndarray] | None = None) -> dict:
    """Fractions over all samples, plus the counts of unusable inputs by reason."""
    flags = validity_flags(samples) if flags is None else flags
    n = len(samples)
    out = {"n": n, "errors": error_counts(samples)}
    # a composition-only generator (Crystal-GFN): no sample has positions (broken records aside)
    no_positions = any(s.error == "no_positions" for s in samples) and all(s.structure is None for s in samples)
    for k, v in flags.items():
        out[k] = float(v.mean()) if n else float("nan")
        if no_positions and k in ("cif", "structure_cdvae", "distance_pgcgm", "valid_cdvae"):
            out[k] = None  # not measurable without positions (a 0 would read as "all invalid")
    return out
