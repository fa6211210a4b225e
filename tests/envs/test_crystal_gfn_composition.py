"""Composition subspace of Crystal-GFN: Wyckoff compatibility vs pyxtal, charge neutrality vs SMACT, exact and
chain masks without dead ends, restricted sampling (Fe-O, Li-Mn-O) valid at every terminal state."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.envs.crystal_gfn import FE_O, LI_MN_O, PAPER_SPACEGROUPS, CrystalGFN
from hgfn_jax.envs.crystal_gfn import composition_subspace as comp
from hgfn_jax.envs.crystal_gfn import wyckoff as wy
from hgfn_jax.envs.crystal_gfn.types import STAGE_COMPOSITION, CrystalAction


@functools.lru_cache(maxsize=1)
def paper_env() -> CrystalGFN:
    return CrystalGFN()


def _random_counts(rng: np.random.Generator, n: int, n_el: int, cap: int, max_k: int = 5) -> np.ndarray:
    out = np.zeros((n, n_el), np.int64)
    for i in range(n):
        k = rng.integers(1, max_k + 1)
        els = rng.choice(n_el, size=k, replace=False)
        c = rng.integers(1, cap + 1, size=k)
        if rng.random() < 0.5:  # bias towards multiples of common multiplicities
            c = np.clip(rng.choice([1, 2, 3, 4, 6, 8, 12, 16], size=k), 1, cap)
        out[i, els] = c
    return out


def test_wyckoff_compatibility_matches_pyxtal():
    from pyxtal.symmetry import Group

    tables = wy.build_tables(PAPER_SPACEGROUPS, 16)
    rng = np.random.default_rng(0)
    n_checked, n_compatible = 0, 0
    for row, g in enumerate(PAPER_SPACEGROUPS):
        group = Group(g)
        counts = _random_counts(rng, 24, 5, 16)
        ours = wy.reach_batch(tables.trans[row], counts) != 0
        for c, o in zip(counts, ours, strict=True):
            ref = group.check_compatible([int(x) for x in c if x > 0])[0]
            assert bool(o) == bool(ref), (g, c.tolist(), bool(o), ref)
            n_checked += 1
            n_compatible += int(ref)
    assert n_checked == 24 * 113
    assert 0.1 < n_compatible / n_checked < 0.9  # both outcomes well represented


def _build_state_full(tab, row, cnt):
    """In-jit: the composition state reached by adding the non-zero counts element by element."""
    cap = tab.config.cap

    def body(e, s):
        nxt = comp.step(tab, row, s, e * cap + jnp.maximum(cnt[e], 1) - 1)
        return jax.tree.map(lambda a, b: jnp.where(cnt[e] > 0, b, a), s, nxt)

    return jax.lax.fori_loop(0, cnt.shape[0], body, comp.init_state(tab))


def _build_state(tab, row, cnt):
    return _build_state_full(tab, row, cnt).wyckoff


def test_in_jit_wyckoff_tracker_matches_host(rng):
    env = paper_env()
    tab = env.comp
    rows = jnp.asarray(np.random.default_rng(1).integers(0, len(env.spacegroups), 256))
    counts = _random_counts(np.random.default_rng(2), 256, len(env.elements), 16)

    def run(row, cnt):
        return _build_state(tab, row, cnt)


    wbits = jax.jit(jax.vmap(run))(rows, jnp.asarray(counts))
    for r, c, w in zip(np.asarray(rows), counts, np.asarray(wbits), strict=True):
        assert (w != 0) == (wy.reach(tab.trans.__array__()[r], c) != 0)


def _smact_ok(symbols, counts, oxidation_states_set=None) -> bool:
    """SMACT's own verdict; ``None`` is its default set (our "smact_default")."""
    from smact.screening import smact_validity

    formula = "".join(f"{s}{int(n)}" for s, n in zip(symbols, counts, strict=True) if n > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(smact_validity(formula, use_pauling_test=False, include_alloys=True,
                                   oxidation_states_set=oxidation_states_set))


@pytest.mark.parametrize("name", ["icsd24", "smact14"])
def test_named_oxidation_sets_match_smact(name):
    """A named set means exactly SMACT's set of that name (SMACT's named "icsd24" is narrower than its default:
    the two must not be confused), host rule and in-jit bitset alike."""
    env = CrystalGFN(spacegroups=(1,), oxidation_states=name)
    counts = _random_counts(np.random.default_rng(5), 200, len(env.elements), 16, max_k=3)
    host = comp.valid_host(env.comp_config, env.wyckoff, 0, counts, comp.oxidation_states(env.elements, name))
    in_jit = np.asarray(jax.jit(jax.vmap(
        lambda c: comp.is_valid(env.comp, jnp.int32(0), _build_state_full(env.comp, jnp.int32(0), c))
    ))(jnp.asarray(counts)))
    ref = np.array([_smact_ok(env.elements, c, name) for c in counts])
    assert 0.05 < ref.mean() < 0.95
    np.testing.assert_array_equal(host, ref)
    np.testing.assert_array_equal(in_jit, ref)


def test_charge_rule_matches_smact_host_and_jit():
    """Our charge rule (host enumeration AND the in-jit bitset) equals SMACT's smact_validity without the
    Pauling test, on random compositions of the paper's 22 elements (group P1: no Wyckoff restriction)."""
    env = CrystalGFN(spacegroups=(1,))
    tab = env.comp
    # SMACT enumerates every oxidation-state combination in Python: <= 3 elements keeps it fast
    counts = _random_counts(np.random.default_rng(3), 300, len(env.elements), 16, max_k=3)
    ox = comp.oxidation_states(env.elements, "smact_default")
    host = comp.valid_host(env.comp_config, env.wyckoff, 0, counts, ox)

    def run(cnt):
        return comp.is_valid(tab, jnp.int32(0), _build_state_full(tab, jnp.int32(0), cnt))

    in_jit = np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(counts)))
    ref = np.array([_smact_ok(env.elements, c) for c in counts])
    assert 0.2 < ref.mean() < 0.95
    np.testing.assert_array_equal(host, ref)
    np.testing.assert_array_equal(in_jit, ref)


_WALKERS: dict = {}


def _walk_compositions(env: CrystalGFN, row: int, n_walks: int, seed: int):
    """Uniform random walks through the composition subspace from the empty composition of group ``row``:
    returns (terminal counts [n, E], min number of allowed actions met at any visited state)."""
    if id(env) not in _WALKERS:
        _WALKERS[id(env)] = (env, jax.jit(jax.vmap(_walker(env), in_axes=(0, None)), static_argnums=()))
    counts, done, min_allowed = _WALKERS[id(env)][1](jax.random.split(jax.random.PRNGKey(seed), n_walks),
                                                     jnp.int32(row))
    assert bool(jnp.all(done)), "a walk did not stop within max_distinct + 1 steps"
    return np.asarray(counts), int(jnp.min(min_allowed))


def _walker(env: CrystalGFN):
    tab = env.comp
    stop = env.n_comp_actions - 1

    def walk(key, row):
        def body(carry, k):
            s, done, min_allowed = carry
            mask = comp.forward_mask(tab, row, s)
            a = jax.random.categorical(k, jnp.where(mask, 0.0, -jnp.inf))
            min_allowed = jnp.where(done, min_allowed, jnp.minimum(min_allowed, jnp.sum(mask)))
            is_stop = a == stop
            nxt = comp.step(tab, row, s, jnp.minimum(a, stop - 1))
            s = jax.tree.map(lambda x, y: jnp.where(done | is_stop, x, y), s, nxt)
            return (s, done | is_stop, min_allowed), None

        init = (comp.init_state(tab), jnp.zeros((), bool), jnp.asarray(10**6))
        (s, done, min_allowed), _ = jax.lax.scan(body, init, jax.random.split(key, env.comp_config.max_distinct + 1))
        return s.counts, done, min_allowed

    return walk


def test_chain_mask_no_dead_end_and_valid_terminals():
    env = paper_env()
    for group in (1, 15, 63, 139, 166, 194, 225, 230):
        row = int(np.nonzero(env.spacegroups == group)[0][0])
        counts, min_allowed = _walk_compositions(env, row, 256, seed=group)
        assert min_allowed >= 1  # every visited state had an allowed action (stop included)
        ok = comp.valid_host(env.comp_config, env.wyckoff, row, counts,
                             comp.oxidation_states(env.elements, "smact_default"))
        assert ok.all(), counts[~ok]
        small = [c for c in counts if (c > 0).sum() <= 3][:10]
        assert all(_smact_ok(env.elements, c) for c in small)


def test_strict_neutrality_chain_mode_no_dead_end():
    """Without SMACT's elemental/alloy shortcuts the first element alone is never neutral: the pair lookahead
    must still leave no dead end."""
    env = CrystalGFN(allow_elemental=False, allow_alloys=False, spacegroups=(2, 62, 225))
    for g in (2, 62, 225):
        row = int(np.nonzero(env.spacegroups == g)[0][0])
        counts, min_allowed = _walk_compositions(env, row, 128, seed=g)
        assert min_allowed >= 1
        ox = comp.oxidation_states(env.elements, "smact_default")
        assert comp._neutral_host(counts, ox).all()
        assert all(env.composition_valid(g, c) for c in counts)


def _enumerate_dag(env: CrystalGFN, row: int):
    """Exhaustive search of the composition DAG with the environment's masks (host BFS)."""
    tab = env.comp
    n_el, cap = len(env.elements), env.cap
    mask_fn = jax.jit(lambda s: comp.forward_mask(tab, jnp.int32(row), s))
    step_fn = jax.jit(lambda s, a: comp.step(tab, jnp.int32(row), s, a))
    seen, terminals, frontier = set(), set(), [comp.init_state(tab)]
    while frontier:
        s = frontier.pop()
        key = tuple(np.asarray(s.counts).tolist())
        if key in seen:
            continue
        seen.add(key)
        m = np.asarray(mask_fn(s))
        assert m.any(), f"dead end at {key}"
        if m[-1]:
            terminals.add(key)
        for a in np.nonzero(m[:-1])[0]:
            frontier.append(step_fn(s, jnp.int32(a)))
    assert n_el * cap + 1 == env.n_comp_actions
    return terminals


@pytest.mark.parametrize("mode", ["exact", "chain"])
def test_small_config_reachable_set(mode):
    """On an enumerable configuration the exact mask reaches EVERY valid composition (and nothing else); the
    chain mask reaches a subset of valid compositions, without dead ends."""
    elements, cap, groups = ("Li", "Fe", "O", "F"), 4, (2, 221)
    env = CrystalGFN(elements=elements, spacegroups=groups, max_per_element=cap, composition_mode=mode,
                     allow_elemental=False, allow_alloys=False)
    ox = comp.oxidation_states(elements, "smact_default")
    grid = np.stack(np.meshgrid(*[np.arange(cap + 1)] * len(elements), indexing="ij"), -1).reshape(-1, len(elements))
    for row, g in enumerate(env.spacegroups):
        valid = {tuple(c) for c in grid if env.composition_valid(int(g), c)}
        # independent check of the valid set: pyxtal + neutrality by brute force over oxidation states
        from pyxtal.symmetry import Group

        grp = Group(int(g))
        for c in grid[1:]:
            nz = [int(x) for x in c if x > 0]
            neutral = comp._neutral_host(c[None], ox)[0]
            assert (tuple(c) in valid) == (bool(grp.check_compatible(nz)[0]) and neutral)
        reached = _enumerate_dag(env, row)
        assert reached <= valid
        if mode == "exact":
            assert reached == valid
        else:
            assert len(reached) >= 0.5 * len(valid)


@pytest.mark.parametrize("restriction", [FE_O, LI_MN_O], ids=["Fe-O", "Li-Mn-O"])
def test_restricted_compositions_valid(restriction):
    env = paper_env().restrict(restriction)
    assert env.comp.exact
    allowed = set(restriction.elements)
    rng = np.random.default_rng(5)
    for row in rng.choice(np.nonzero(env.sg_ok)[0], 4, replace=False):
        g = int(env.spacegroups[row])
        counts, min_allowed = _walk_compositions(env, int(row), 48, seed=g)
        assert min_allowed >= 1
        for c in counts:
            present = {s for s, n in zip(env.elements, c, strict=True) if n > 0}
            assert present <= allowed
            assert c.max() <= restriction.max_per_element
            if restriction.min_distinct:
                assert len(present) >= restriction.min_distinct
            assert env.composition_valid(g, c) and _smact_ok(env.elements, c)


def test_stop_only_when_valid():
    env = paper_env()
    tab = env.comp
    row = int(np.nonzero(env.spacegroups == 225)[0][0])
    s = comp.init_state(tab)
    assert not bool(comp.forward_mask(tab, jnp.int32(row), s)[-1])  # empty composition
    na, cl = env.elements.index("Na"), env.elements.index("Cl")
    s = comp.step(tab, jnp.int32(row), s, na * 16 + 3)  # Na4 (4a)
    m = comp.forward_mask(tab, jnp.int32(row), s)
    assert bool(m[-1])  # elemental Na4 in Fm-3m is valid (SMACT fast path)
    assert bool(m[cl * 16 + 3])  # Na4Cl4 (4a + 4b), rock salt
    assert not bool(m[cl * 16 + 2])  # Cl3 does not fit Fm-3m
    f = env.elements.index("F")
    s2 = comp.step(tab, jnp.int32(row), s, cl * 16 + 3)
    assert bool(comp.forward_mask(tab, jnp.int32(row), s2)[-1])  # NaCl neutral
    s3 = comp.step(tab, jnp.int32(row), s, f * 16 + 7)  # Na4F8 (4a + 8c): Na+1, F-1 -> -4, not neutral
    assert not bool(comp.forward_mask(tab, jnp.int32(row), s3)[-1])


def test_action_encoding_roundtrip():
    env = paper_env()
    s = env.init()
    a = CrystalAction(stage=jnp.int32(STAGE_COMPOSITION), index=jnp.int32(5 * 16 + 2), value=jnp.zeros(6))
    s = s.replace(stage=jnp.int32(STAGE_COMPOSITION), spacegroup=s.spacegroup.replace(row=jnp.int32(0)))
    s2 = env.step(s, a)
    assert int(s2.composition.counts[5]) == 3 and int(s2.composition.n_atoms) == 3
