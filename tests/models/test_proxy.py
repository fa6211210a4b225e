"""Crystal-GFN proxy MLPs (hgfn_jax.models.proxy*): features, training, orbax checkpoints, load-only, safety."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.crystal import lattice as L
from hgfn_jax.crystal.elements import NUM_ELEMENTS
from hgfn_jax.models import proxy as P
from hgfn_jax.models import proxy_config as C
from hgfn_jax.models import proxy_data as D
from hgfn_jax.models import proxy_features as F
from hgfn_jax.models import proxy_train as T

TINY_MODEL = C.ProxyModelConfig(
    properties_proj_size=16, z_emb_size=16, period_emb_size=4, group_emb_size=4, comp_hidden=32,
    comp_layers=1, sg_emb_size=8, lat_hidden_channels=16, lat_num_layers=1, hidden_channels=64, num_layers=2,
)  # fmt: skip


def tiny_config(target="formation_energy", epochs=12, **train_kw) -> C.ProxyConfig:
    model = dataclasses.replace(TINY_MODEL, nonneg=target == "band_gap")
    train = C.ProxyTrainConfig(epochs=epochs, batch_size=64, lr=3e-3, warmup_epochs=1, **train_kw)
    return C.ProxyConfig(target=target, model=model, train=train, name="tiny")


def synthetic_data(n: int, seed: int) -> D.ProxyData:
    """Random compositions / cells whose label is a fixed function of composition, space group and density.

    Label = sum_z x_z w_z (hidden per-element weights) + 0.3 for hexagonal-or-higher space groups
    + 0.5 log(V/N / 17 A^3) + N(0, 0.02). A model that uses its inputs beats the mean predictor by far.
    """
    r = np.random.default_rng(seed)
    pool = np.array([3, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 20, 22, 25, 26, 27, 28, 29, 30, 34])
    w = np.random.default_rng(123).normal(0.0, 1.0, NUM_ELEMENTS)
    counts = np.zeros((n, NUM_ELEMENTS), np.float32)
    sg = r.choice([1, 2, 12, 62, 139, 166, 194, 221, 225, 227], n).astype(np.int32)
    for i in range(n):
        k = r.integers(1, 5)
        counts[i, r.choice(pool, k, replace=False)] = r.integers(1, 7, k)
    nat = counts.sum(1)
    vpa = r.uniform(10.0, 25.0, n)
    lengths = ((nat * vpa) ** (1 / 3))[:, None] * r.uniform(0.8, 1.2, (n, 3))
    lattice = np.concatenate([lengths, r.uniform(80.0, 100.0, (n, 3))], 1).astype(np.float32)
    y = (counts / nat[:, None]) @ w + 0.3 * (sg >= 166) + 0.5 * np.log(vpa / 17.0) + r.normal(0, 0.02, n)
    return D.ProxyData(counts, sg, lattice, y.astype(np.float32), np.maximum(y, 0.0).astype(np.float32))


@pytest.fixture(scope="module")
def trained_tiny():
    """A tiny FE proxy trained on synthetic data (shared by several tests)."""
    data = synthetic_data(1800, seed=0)
    tr, va, te = (
        data.take(np.arange(1400)),
        data.take(np.arange(1400, 1600)),
        data.take(np.arange(1600, 1800)),
    )
    config = tiny_config()
    variables, metrics = T.train_proxy(config, tr, va, te, verbose=False)
    return config, variables, metrics, te


@pytest.fixture(scope="module")
def proxy(trained_tiny):
    """The trained tiny proxy, with jitted ``apply`` and ``apply_fn`` compiled once for the module."""
    config, variables, _, _ = trained_tiny
    p = P.Proxy(config, variables)
    p.jit_apply = jax.jit(p.apply)
    p.jit_apply_fn = jax.jit(p.apply_fn)
    return p


def _example_inputs():
    counts = np.zeros((3, NUM_ELEMENTS), np.float32)
    counts[0, [11, 17]] = 4  # NaCl, conventional rock-salt cell
    counts[1, [26, 8]] = [12, 18]  # Fe2O3 (hexagonal corundum cell)
    counts[2, 14] = 8  # Si diamond
    sg = np.array([225, 167, 227], np.int32)
    lattice = np.array(
        [[5.69, 5.69, 5.69, 90, 90, 90], [5.04, 5.04, 13.75, 90, 90, 120], [5.47, 5.47, 5.47, 90, 90, 90]],
        np.float32,
    )
    return counts, sg, lattice


# ----------------------------------------------------------------------------------------------------------
# Features and geometry


def test_element_property_table_is_standardised_and_ordered():
    table = F.element_property_table()
    assert table.shape == (NUM_ELEMENTS, len(F.ELEMENT_PROPERTIES))
    assert np.all(np.isfinite(table)) and np.all(table[0] == 0)
    chi = table[:, F.ELEMENT_PROPERTIES.index("electronegativity")]
    # Pauling scale: F (9) > O (8) > Cl (17) > C (6) > Na (11) > Cs (55)
    assert chi[9] > chi[8] > chi[17] > chi[6] > chi[11] > chi[55]
    ie = table[:, F.ELEMENT_PROPERTIES.index("first_ionization_energy")]
    assert ie[2] == ie[1:].max()  # helium has the highest first ionisation energy


def test_cell_volume_matches_determinant():
    r = np.random.default_rng(0)
    lat = np.concatenate([r.uniform(2, 12, (50, 3)), r.uniform(60, 120, (50, 3))], 1)
    det = np.abs(np.linalg.det(D.lattice_matrix(lat)))
    np.testing.assert_allclose(np.asarray(jax.jit(F.cell_volume)(lat.astype(np.float32))), det, rtol=1e-4)
    back = np.stack([D.matrix_to_params(m) for m in D.lattice_matrix(lat)])
    np.testing.assert_allclose(back, lat, rtol=1e-6, atol=1e-6)


def test_features_use_fractions_and_volume_per_atom():
    counts, _, lattice = _example_inputs()
    features = jax.jit(F.composition_and_lattice_features)
    frac, feats = features(counts, lattice)
    frac2, feats2 = features(2 * counts, lattice)
    np.testing.assert_allclose(frac, frac2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(frac)[0, [11, 17]], [0.5, 0.5])
    # NaCl: V = 5.69^3 A^3 for 8 atoms; log N = log 8
    np.testing.assert_allclose(np.asarray(feats)[0, 6], np.log(5.69**3 / 8), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(feats)[0, 7], np.log(8.0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(feats2)[0, 6], np.log(5.69**3 / 16), rtol=1e-5)


def test_rhombohedral_to_hexagonal_axes():
    """Obverse setting: hexagonal vectors = P @ rhombohedral vectors, P = [[1,-1,0],[0,1,-1],[1,1,1]]."""
    r = np.random.default_rng(1)
    for a_r, al in zip(r.uniform(3, 9, 5), r.uniform(40, 110, 5), strict=True):
        m_r = D.lattice_matrix(np.array([a_r, a_r, a_r, al, al, al]))
        hex_params = D.matrix_to_params(np.array([[1, -1, 0], [0, 1, -1], [1, 1, 1]]) @ m_r)
        got = np.asarray(
            jax.jit(L.rhombohedral_to_hexagonal)(np.array([a_r, a_r, a_r, al, al, al], np.float32))
        )
        np.testing.assert_allclose(got, hex_params, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(
            abs(np.linalg.det(D.lattice_matrix(got))), 3 * abs(np.linalg.det(m_r)), rtol=1e-4
        )


def test_conventional_cell_of_primitive_rock_salt():
    """BaTe as stored in the data set (mp-1000): 2-atom fcc primitive cell, a = 5.0132 A, 60 degrees."""
    ap = 5.01321596
    lat6 = np.array([ap, ap, ap, 60.0, 60.0, 60.0])
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]])
    params, counts, sg, ok = D._conventional_row((lat6, frac, np.array([56, 52]), 225, 0.1))
    assert ok and sg == 225
    np.testing.assert_allclose(params, [ap * np.sqrt(2)] * 3 + [90.0] * 3, rtol=1e-5)
    assert counts[56] == 4 and counts[52] == 4 and counts.sum() == 8


# ----------------------------------------------------------------------------------------------------------
# Configuration


def test_config_hash_and_variants():
    fe, bg = C.default_config("formation_energy"), C.default_config("band_gap")
    assert fe.short_hash() == C.default_config("formation_energy").short_hash()
    assert fe.short_hash() != bg.short_hash()
    assert (
        fe.short_hash() != dataclasses.replace(fe, train=dataclasses.replace(fe.train, epochs=3)).short_hash()
    )
    assert bg.model.nonneg and not fe.model.nonneg
    assert C.default_config("band_gap", "paper").model.hidden_channels == 1856  # Table 1 of paper 001
    assert C.ProxyConfig.from_dict(bg.to_dict()) == bg
    with pytest.raises(ValueError, match="unknown proxy target"):
        C.default_config("density")
    with pytest.raises(ValueError, match="variant"):
        C.default_config("band_gap", "huge")
    with pytest.raises(ValueError, match="unknown proxy target"):
        P.load_proxy("bandgap")


# ----------------------------------------------------------------------------------------------------------
# Training


def test_training_reduces_loss_and_beats_mean_predictor(trained_tiny):
    _, _, m, _ = trained_tiny
    assert m["train_loss"][-1] < 0.5 * m["train_loss"][0]
    assert m["val_mae"] < 0.35 * m["val_mae_mean_baseline"]
    assert m["test_mae"] < 0.35 * m["test_mae_mean_baseline"]
    assert m["val_mae"] == pytest.approx(min(m["val_mae_history"]), rel=1e-4)  # best epoch kept


def test_band_gap_output_is_nonnegative(proxy):
    variables = jax.tree_util.tree_map(lambda x: x, proxy.variables)
    variables["consts"] = dict(variables["consts"], y_mean=jnp.asarray(-100.0))  # push predictions negative
    counts, sg, lattice = _example_inputs()
    unclamped = np.asarray(proxy.jit_apply_fn(variables, counts, sg, lattice))  # nonneg=False model
    bg_config = dataclasses.replace(
        proxy.config, target="band_gap", model=dataclasses.replace(TINY_MODEL, nonneg=True)
    )
    out = P.Proxy(bg_config, variables).predict(counts, sg, lattice)
    assert np.all(unclamped < -50) and np.all(out == 0.0)


def test_real_data_subset_beats_mean_predictor(data_dir):
    """Real labels: a tiny FE proxy on 1,200 MP crystals beats the mean predictor on 300 held-out ones."""
    from hgfn_jax.data import mp

    ds = mp.load_mp(n_max=mp.MAX_SITES, limit=1500, parse_all=False)
    data = D.build_proxy_data(ds, cell="stored")
    tr, va, te = D.split_indices(len(data), seed=0)
    config = tiny_config(epochs=25)
    _, m = T.train_proxy(config, data.take(tr), data.take(va), data.take(te), verbose=False)
    assert m["val_mae"] < 0.6 * m["val_mae_mean_baseline"], m["val_mae"]
    assert m["test_mae"] < 0.6 * m["test_mae_mean_baseline"], m["test_mae"]


# ----------------------------------------------------------------------------------------------------------
# Checkpoints


def test_save_load_roundtrip_identical(trained_tiny, tmp_path, monkeypatch):
    config, variables, metrics, te = trained_tiny
    monkeypatch.setenv("HGFN_CACHE_DIR", str(tmp_path))
    path = P.proxy_dir(config)
    assert str(path).startswith(str(tmp_path)) and config.short_hash() in path.name
    with pytest.raises(P.ProxyNotTrainedError, match="no trained formation_energy proxy.*train it with"):
        P.load_proxy("formation_energy", config)  # loads only: never trains
    assert not path.exists()
    T.save_checkpoint(path, config, variables, dict(metrics, val_mae=-1.0))
    T.save_checkpoint(path, config, variables, metrics)  # replaces the first one
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary folders left
    assert (path / P.STATE_ITEM).is_dir() and (path / P.META_ITEM).is_dir()  # one orbax composite checkpoint
    proxy = P.load_proxy("formation_energy", config)
    assert proxy.config == config and proxy.metrics["val_mae"] == metrics["val_mae"]
    model = P.ProxyModel(config.model)
    np.testing.assert_array_equal(
        T.predict_batched(model, variables, te), T.predict_batched(model, proxy.variables, te)
    )
    original = P.Proxy(config, variables).predict(te.counts, te.spacegroup, te.lattice)
    np.testing.assert_array_equal(original, proxy.predict(te.counts, te.spacegroup, te.lattice))
    chex.assert_trees_all_equal(jax.tree_util.tree_map(np.asarray, variables), proxy.variables)


# ----------------------------------------------------------------------------------------------------------
# jit / vmap safety and bad inputs


def test_apply_is_jit_vmap_safe_without_retracing(proxy):
    counts, sg, lattice = _example_inputs()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def single(c, s, l):
        return proxy.apply(c, s, l)

    outs = [single(jnp.asarray(counts[i]), jnp.asarray(sg[i]), jnp.asarray(lattice[i])) for i in range(3)]
    outs.append(single(jnp.asarray(counts[0] * 2), jnp.asarray(sg[0]), jnp.asarray(lattice[0] * 1.1)))
    assert all(o.shape == () and o.dtype == jnp.float32 for o in outs)
    batched = jax.jit(jax.vmap(proxy.apply))(counts, sg, lattice)
    np.testing.assert_allclose(np.asarray(outs[:3]), np.asarray(batched), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(proxy.predict(counts, sg, lattice), batched, rtol=1e-5, atol=1e-6)
    raw = proxy.jit_apply_fn(proxy.variables, counts, sg, lattice)
    np.testing.assert_allclose(raw, batched, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(batched))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c, s, l: (c, s.at[0].set(0), l), "spacegroup must be in 1..230"),
        (lambda c, s, l: (c, s.at[1].set(231), l), "spacegroup must be in 1..230"),
        (lambda c, s, l: (c.at[0, 11].set(-1.0), s, l), "non-negative"),
        (lambda c, s, l: (c.at[2].set(0.0), s, l), "no atoms"),
        (lambda c, s, l: (c.at[0, 0].set(1.0), s, l), "index 0 is padding"),
        (lambda c, s, l: (c, s, l.at[0, 0].set(-5.69)), "lengths"),
        (lambda c, s, l: (c, s, l.at[1, 3].set(180.0)), "angles"),
        (lambda c, s, l: (c, s, l.at[2, 3:].set(jnp.array([10.0, 10.0, 120.0]))), "zero volume"),
        (lambda c, s, l: (c, s, l.at[0, 1].set(jnp.nan)), "non-finite"),
    ],
)
def test_bad_inputs_raise_at_boundary_and_give_nan_in_jit(proxy, mutate, message):
    c, s, l = (jnp.asarray(x) for x in _example_inputs())
    bad_c, bad_s, bad_l = mutate(c, s, l)
    with pytest.raises(ValueError, match=message):
        proxy.predict(bad_c, bad_s, bad_l)
    out = np.asarray(proxy.jit_apply(bad_c, bad_s, bad_l))
    good = np.asarray(proxy.jit_apply(c, s, l))
    changed = np.any(np.asarray(bad_c) != np.asarray(c), -1) | (np.asarray(bad_s) != np.asarray(s))
    changed |= np.any(np.asarray(bad_l) != np.asarray(l), -1) | np.any(np.isnan(np.asarray(bad_l)), -1)
    if message == "index 0 is padding":
        # documented: inside jit index 0 is ignored, the prediction is unchanged
        np.testing.assert_allclose(out, good, rtol=1e-6)
    else:
        assert np.all(np.isnan(out[changed])) and np.all(np.isfinite(out[~changed]))


def test_bad_shapes_raise(proxy):
    c, s, l = _example_inputs()
    with pytest.raises(ValueError, match="counts_z must have shape"):
        proxy.predict(c[:, :100], s, l)
    with pytest.raises(ValueError, match="lattice must have shape"):
        proxy.predict(c, s, l[:, :3])
    with pytest.raises(ValueError, match="spacegroup must have shape"):
        proxy.predict(c, s[:2], l)
