"""JAX SMACT validity vs ``smact.screening.smact_validity`` (SMACT 4.0.2, oxidation_states_set="smact14")."""

from __future__ import annotations

import itertools
import re
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import smact
from pymatgen.core import Composition
from smact.screening import smact_validity

from hgfn_jax.crystal import chemistry as chem
from hgfn_jax.crystal.types import Crystal

SYMBOLS = smact.ordered_elements(1, 103)
MAX_TOTAL = 80  # 5 elements x 16


@pytest.fixture(scope="module")
def tables():
    return chem.smact_tables()


def _reference(d: dict[int, int], **kw) -> bool:
    c = Composition({SYMBOLS[z - 1]: n for z, n in d.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(smact_validity(c, oxidation_states_set="smact14", **kw))


def _counts(comps: list[dict[int, int]]) -> np.ndarray:
    out = np.zeros((len(comps), 119), np.int32)
    for i, d in enumerate(comps):
        for z, n in d.items():
            out[i, z] = n
    return out


CHUNK = 2048  # every batched call uses this batch size: one compilation per static configuration


def _run(tables, comps: list[dict[int, int]], **kw) -> tuple[np.ndarray, np.ndarray]:
    """(valid [M], overflow [M]) of ``smact_valid_counts_batch`` over fixed-size chunks."""
    counts = _counts(comps)
    m = counts.shape[0]
    padded = np.zeros((-(-m // CHUNK) * CHUNK, 119), np.int32)
    padded[:m] = counts
    outs = [
        chem.smact_valid_counts_batch(jnp.asarray(padded[i : i + CHUNK]), tables, max_total=MAX_TOTAL, **kw)
        for i in range(0, padded.shape[0], CHUNK)
    ]
    valid = np.concatenate([np.asarray(v) for v, _ in outs])[:m]
    overflow = np.concatenate([np.asarray(o) for _, o in outs])[:m]
    return valid, overflow


def _random(rs: np.random.Generator, pool: np.ndarray, n: int, max_k: int = 5, max_count: int = 16) -> list:
    out = []
    for _ in range(n):
        k = int(rs.integers(1, max_k + 1))
        zs = rs.choice(pool, size=k, replace=False)
        out.append({int(z): int(c) for z, c in zip(zs, rs.integers(1, max_count + 1, size=k), strict=True)})
    return out


def _dataset_elements(data_dir) -> np.ndarray:
    from hgfn_jax.data import mp

    formulas = mp.read_meta()["formula"].astype(str)
    symbols = sorted({s for f in formulas for s in re.findall(r"[A-Z][a-z]?", f)})
    return np.array([SYMBOLS.index(s) + 1 for s in symbols])


def _edge_cases(rs: np.random.Generator, tables) -> list[dict[int, int]]:
    eneg, has_en = np.asarray(tables.eneg), np.asarray(tables.has_eneg)
    cases = [{z: int(rs.integers(1, 17))} for z in range(1, 104)]  # every single element (He, Pm, Lr...)
    special = [2, 10, 18, 61, 86, 103]  # no oxidation states (He, Ne, Ar) / no electronegativity (Pm, Rn, Lr)
    partners = [1, 8, 9, 11, 17, 26, 29, 55, 57]
    cases += [{s: int(rs.integers(1, 5)), p: int(rs.integers(1, 5))} for s in special for p in partners]
    # equal electronegativities: a cation and an anion with the same value must fail the Pauling test
    zs = [z for z in range(1, 104) if has_en[z]]
    ties = [(a, b) for a, b in itertools.combinations(zs, 2) if eneg[a] == eneg[b]]
    assert len(ties) >= 10
    for a, b in ties:
        cases += [{a: 1, b: 1}, {a: 2, b: 3}, {a: 1, b: 1, 8: 1}, {a: 1, b: 2, 3: 1}]
    # gcd-reducible multiples of the first 300 random-ish cases
    base = _random(rs, np.arange(1, 104), 300, max_k=4, max_count=6)
    cases += [
        {z: n * int(m) for z, n in d.items()} for d, m in zip(base, rs.integers(2, 5, 300), strict=True)
    ]
    cases += [
        {11: 1, 17: 1},
        {26: 2, 8: 3},
        {26: 3, 8: 4},
        {11: 2, 8: 2},
        {11: 1, 19: 1},
        {3: 1, 26: 1, 15: 1, 8: 4},
    ]
    return cases


def test_matches_smact_on_10000_random_compositions(tables, data_dir):
    rs = np.random.default_rng(2024)
    comps = _random(rs, np.arange(1, 104), 5000)  # broad list: alloys, noble gases, actinides...
    comps += _random(rs, _dataset_elements(data_dir), 5000)  # elements of the data set
    comps += _edge_cases(rs, tables)
    t0 = time.perf_counter()
    ref = np.array([_reference(d) for d in comps])
    t_smact = time.perf_counter() - t0
    t0 = time.perf_counter()
    _run(tables, comps[:CHUNK])
    t_jax_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    valid, overflow = _run(tables, comps)
    t_jax = time.perf_counter() - t0
    print(
        f"\n{len(comps)} compositions: SMACT {t_smact:.2f} s, "
        f"JAX {t_jax:.3f} s (first call {t_jax_first:.2f} s)"
    )
    assert not overflow.any()
    bad = np.flatnonzero(valid != ref)
    assert bad.size == 0, [(comps[i], bool(ref[i])) for i in bad[:10]]
    # the sample exercises every path: single elements, all-metal alloys, non-trivial valid and invalid
    n_el = np.array([len(d) for d in comps])
    metal = np.asarray(tables.is_metal)
    alloy = np.array([len(d) > 1 and all(metal[z] for z in d) for d in comps])
    nontrivial = (n_el > 1) & ~alloy
    assert (n_el == 1).sum() >= 1000 and alloy.sum() >= 500
    assert ref[nontrivial].sum() >= 500 and (~ref[nontrivial]).sum() >= 1000


def test_matches_smact_without_pauling_and_alloys(tables, data_dir):
    rs = np.random.default_rng(5)
    comps = _random(rs, _dataset_elements(data_dir), 1500) + _random(rs, np.arange(1, 104), 500)
    ref = np.array([_reference(d, use_pauling_test=False, include_alloys=False) for d in comps])
    valid, _ = _run(tables, comps, use_pauling_test=False, include_alloys=False)
    bad = np.flatnonzero(valid != ref)
    assert bad.size == 0, [(comps[i], bool(ref[i])) for i in bad[:10]]
    assert ref.sum() > 300 and (~ref).sum() > 300


def test_crystal_interface_matches_counts(tables):
    rs = np.random.default_rng(9)
    n_max, b = 16, 48
    comps = _random(rs, np.arange(1, 104), b, max_k=4, max_count=4)
    # 10 distinct elements (more than the counts API's default K = 8; the crystal default is K = N)
    ten = {3: 1, 11: 1, 19: 1, 37: 1, 55: 1, 12: 1, 20: 1, 38: 1}
    comps[0], comps[1], comps[2] = {**ten, 9: 3, 8: 4}, {**ten, 9: 4, 8: 4}, {**ten, 9: 2, 8: 2}
    species = np.zeros((b, n_max), np.int32)
    mask = np.zeros((b, n_max), bool)
    for i, d in enumerate(comps):
        zs = np.repeat(list(d), list(d.values()))
        slots = rs.choice(n_max, size=zs.size, replace=False)  # real sites scattered among padding
        species[i, slots], mask[i, slots] = zs, True
    species[~mask] = rs.integers(0, 2, size=(~mask).sum())  # padding species must be ignored
    overflow = np.zeros(b, bool)
    overflow[3] = True  # a truncated cell: composition unknown -> invalid
    mask[5] = False  # empty cell
    crystal = Crystal(
        lattice=jnp.tile(jnp.array([5.0, 5, 5, 90, 90, 90]), (b, 1)),
        frac=jnp.zeros((b, n_max, 3)),
        species=jnp.asarray(species),
        mask=jnp.asarray(mask),
        spacegroup=jnp.zeros(b, jnp.int32),
        overflow=jnp.asarray(overflow),
    )
    valid, over = jax.jit(jax.vmap(lambda c: chem.smact_valid_crystal(c, tables)))(crystal)
    counts = jax.vmap(chem.element_counts)(crystal.species, crystal.mask)
    np.testing.assert_array_equal(np.asarray(counts)[:, 1:].sum(1), mask.sum(1))
    ref = np.array([_reference(d) for d in comps])
    ref[3] = False
    ref[5] = False
    np.testing.assert_array_equal(np.asarray(valid), ref)
    np.testing.assert_array_equal(np.asarray(over), overflow)


def test_edge_cases_and_flags(tables):
    nine = {z: 1 for z in (3, 8, 9, 11, 12, 15, 16, 17, 19)}  # 9 distinct elements
    cases = [{}, nine, {11: 1, 104: 1}, {104: 3}, {11: 40, 17: 41}, {11: 80, 17: 80}]
    valid, over = _run(tables, cases)
    # empty: invalid here (SMACT returns True vacuously); 9 elements > K = 8: overflow; Z > 103 with another
    # element: invalid (SMACT raises); a single Z > 103: valid (SMACT's single-element fast path);
    # reduced total 81 > max_total: overflow; NaCl x 80 reduces to NaCl: fine
    np.testing.assert_array_equal(valid, [False, False, False, True, False, True])
    np.testing.assert_array_equal(over, [False, True, False, False, True, False])
    assert smact_validity(Composition({}), oxidation_states_set="smact14") is True
    # with K = 9 the 9-element case is evaluated and agrees with SMACT
    more = [nine, {**nine, 26: 2}, {**nine, 20: 1}]
    v9, o9 = _run(tables, more, max_elements=10)
    assert not o9.any()
    np.testing.assert_array_equal(v9, [_reference(d) for d in more])


def test_host_helper():
    assert chem.smact_valid("NaCl") and chem.smact_valid({"Fe": 2, "O": 3}) and chem.smact_valid("Na2O2")
    assert not chem.smact_valid("NaCl2")  # Na +1 and Cl -1 only in a 1:1 ratio (one state per element)
    assert not chem.smact_valid("CsF3")  # Cs is +1 only
    assert chem.smact_valid("CuZn")  # all-metal alloy fast path
    assert chem.smact_valid("He") and not chem.smact_valid("HeO")  # single element; He has no states
    assert not chem.smact_valid({}) and not chem.smact_valid("NaRf")
    assert chem.smact_valid("NaCl", oxidation_states_set="icsd24")  # other SMACT sets pass through
    np.testing.assert_array_equal(chem.counts_from_mapping("Fe2O3")[[26, 8]], [2, 3])
    with pytest.raises(ValueError, match="non-integer"):
        chem.counts_from_mapping({"Fe": 1.5})


def test_oxidation_states_are_smacts_own_lists():
    """The one loader returns SMACT's public per-element lists (``Element.oxidation_states_<set>``), sorted."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, attr in (("smact14", "oxidation_states_smact14"), ("icsd24", "oxidation_states_icsd24")):
            got = chem.oxidation_states(SYMBOLS, name)
            want = [tuple(sorted(getattr(smact.Element(s), attr) or ())) for s in SYMBOLS]
            assert got == want, name
    assert chem.oxidation_states(["Og"], "smact14") == [()]  # no SMACT data: empty, no error
    with pytest.raises(ValueError, match="unknown oxidation-state set"):
        chem.oxidation_states(["Fe"], "nonsense")


def test_tables_follow_the_loader():
    """``smact_tables`` holds exactly the loader's states for every Z (padding row 0 empty)."""
    tables = chem.smact_tables("smact14")
    states, mask = np.asarray(tables.ox_states), np.asarray(tables.ox_mask)
    assert not mask[0].any()
    for z, ox in enumerate(chem.oxidation_states(SYMBOLS, "smact14"), start=1):
        assert tuple(states[z][mask[z]].tolist()) == ox
    assert np.asarray(tables.is_metal)[1:104].tolist() == [s in smact.metals for s in SYMBOLS]
