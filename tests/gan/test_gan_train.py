"""PGCGM training loop (test preset): runs, exact resume, generation + expansion + merging, post-processing."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from experiments.configs import get_config
from hgfn_jax.data import pgcgm
from hgfn_jax.gan import generate as G
from hgfn_jax.gan.postprocess import merge_same_element, min_same_element_distance
from hgfn_jax.gan.train import make_tables, train_gan


@pytest.fixture(scope="module")
def small_data():
    return pgcgm.build(limit=30, workers=1, progress=False)


def _leaves(ts):
    return [np.asarray(x) for x in jax.tree.leaves((ts.g_params, ts.g_stats, ts.d_params, ts.g_opt, ts.d_opt))]


def test_train_resume_is_exact_and_generates(small_data, tmp_path):
    cfg = get_config("pgcgm", "test")
    full = train_gan(cfg, tmp_path / "full", small_data, progress=False)
    assert full["summary"]["finished"]
    part = train_gan(cfg, tmp_path / "part", small_data, stop_after=2, progress=False)
    assert not part["summary"]["finished"]
    resumed = train_gan(cfg, tmp_path / "part", small_data, progress=False)
    for a, b in zip(_leaves(full["state"]), _leaves(resumed["state"]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "full/metrics.csv").read_bytes() == (tmp_path / "part/metrics.csv").read_bytes()
    header = (tmp_path / "full/metrics.csv").read_text().splitlines()[0].split(",")
    for k in ("d_loss", "gp", "w_dist", "g_adv", "l_inter", "l_intra", "l_full", "l_base", "nonfinite_skipped"):
        assert k in header
    changed = cfg.copy_and_resolve_references()
    changed.loss.variant = "dist"
    with pytest.raises(ValueError, match="loss.variant"):
        train_gan(changed, tmp_path / "part", small_data, progress=False)

    # Generation: conditions from the data, Algorithm 1 through the orbit expansion, then merging.
    ts = full["state"]
    sampler = G.make_sampler(full["generate"], make_tables())
    gi, el = G.conditions(small_data, 6, 0)
    crystals, sets = sampler(ts.g_params, ts.g_stats, jax.random.PRNGKey(0), gi, el)
    assert sets.shape == (6, 3, 3, 3) and bool(np.all((np.asarray(sets) >= 0) & (np.asarray(sets) <= 1)))
    assert not bool(np.any(np.asarray(crystals.overflow)))
    lat = np.asarray(crystals.lattice)
    cubic = np.isin(np.asarray(crystals.spacegroup), (225, 227, 221, 216))
    assert np.allclose(lat[cubic, 0], lat[cubic, 2], rtol=1e-5)  # lengths tied by the group's system
    pairs = G.to_structures(crystals, 0.5)
    assert all(r is not None and m is not None and len(m) <= len(r) for r, m in pairs)


def _threshold(z, ratio):
    return ratio * 2.0 * float(pgcgm.atomic_radii()[z])


def test_merge_never_leaves_close_same_element_atoms():
    rng = np.random.default_rng(0)
    for trial in range(6):
        n = 40
        frac = np.concatenate([rng.uniform(0, 1, (n, 3)), rng.uniform(0, 1, (5, 3)) * 0.02 + 0.3])  # a clump
        s = Structure(Lattice.cubic(6.0 + trial), ["O"] * 20 + ["Fe"] * 25, frac)
        merged = merge_same_element(s, 0.5)
        for z, d in min_same_element_distance(merged).items():
            assert d >= _threshold(z, 0.5) - 1e-9
        assert 0 < len(merged) < len(s)


def test_merge_keeps_clean_dataset_structures_and_their_group():
    from hgfn_jax.data.mp import load_mp

    ds = load_mp(n_max=200, n_elements=3, spacegroups=(225, 227, 194, 62, 139, 166), limit=8)
    checked = 0
    for i in range(len(ds)):
        s = ds.get_structure(i)
        if min(min_same_element_distance(s).values()) < min(_threshold(sp.Z, 0.5) for sp in s.composition):
            continue
        merged = merge_same_element(s, 0.5)
        assert len(merged) == len(s)
        assert (SpacegroupAnalyzer(merged, symprec=0.1).get_space_group_number()
                == SpacegroupAnalyzer(s, symprec=0.1).get_space_group_number())
        checked += 1
    assert checked >= 5


def _random_state(init, seed: int = 0):
    """``(g_params, g_stats, d_params)`` of ``init``'s shapes (``eval_shape``: no compile; compiling the real
    init costs ~50 s here): kernels N(0, 1/fan_in), BatchNorm scales and running variances 1, the rest 0."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(path[-1].key)
        if name == "kernel":
            return rng.normal(0.0, 1.0 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape).astype(leaf.dtype)
        return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, leaf.dtype)

    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    return tuple(jax.tree_util.tree_map_with_path(fill, t) for t in (shapes.g_params, shapes.g_stats, shapes.d_params))


def test_table1_variants_use_exactly_their_loss_terms(small_data):
    """Table 1's rows (paper 003): PGCGM = adversarial loss only, +dist = + eq. 5 (inter and intra distance
    losses), +dist+coor = + eq. 5 + eq. 6 (full and base coordinate losses). For each ``loss.variant`` the
    objective the update differentiates reports its value (``g_loss``) and every term, whether used or not;
    with weights 2, 3, 5, 7 and every term clearly non-zero, ``g_loss - g_adv`` must equal the weighted sum of
    exactly the variant's terms and no other of the 16 subsets (so a term silently added or dropped fails)."""
    import itertools

    from hgfn_jax.gan.train import make_gan_train

    spec = {"pgcgm": (0, 0, 0, 0), "dist": (1, 1, 0, 0), "dist_coor": (1, 1, 1, 1)}  # paper Table 1 caption
    weights = np.asarray([2.0, 3.0, 5.0, 7.0])
    tables, params = make_tables(), None
    for variant, on in spec.items():
        cfg = get_config("pgcgm", "test")
        cfg.loss.variant = variant
        cfg.loss.lambdas = tuple(weights)
        cfg.loss.phi = (0.5, 2.2, 0.5, 6.0)  # intra lower bound > 0 so that L_intra is non-zero at step 0
        init, *_, g_loss = make_gan_train(cfg, small_data, tables)
        params = _random_state(init) if params is None else params  # same shapes for every variant
        _, (_, m) = g_loss(*params, jax.random.PRNGKey(1))  # eager: no compile
        terms = np.asarray([float(m[k]) for k in ("l_inter", "l_intra", "l_full", "l_base")], np.float64)
        assert np.all(terms > 1e-3), terms  # otherwise the subsets below could not be told apart
        extra = float(m["g_loss"]) - float(m["g_adv"])
        sums = {s: float(np.sum(weights * np.asarray(s) * terms)) for s in itertools.product((0, 1), repeat=4)}
        tol = 1e-4 * (1.0 + abs(extra))
        assert abs(extra - sums[on]) < tol, (variant, extra, sums[on])
        others = [s for s, v in sums.items() if s != on and abs(v - sums[on]) < 10 * tol]
        assert not others, (variant, others)
