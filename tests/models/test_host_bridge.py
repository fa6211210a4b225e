"""Host-callback bridge: one host call per jitted+vmapped batch, finite values, exact failure counts."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure

from hgfn_jax.crystal.convert import from_structure, stack
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.models.host_bridge import REASONS, make_property_fn
from hgfn_jax.models.matgl import get_property_model

MEGNET = "MEGNet-MP-2018.6.1-Eform"
M3GNET = "M3GNet-MP-2018.6.1-Eform"
N_PAD = 512  # the batch holds a 500-site cell, so every crystal is padded to 512


@pytest.fixture(scope="module")
def good_structures(data_dir):
    meta = pd.read_csv(data_dir / "cgcnn_mp_36737_meta.csv.gz", usecols=["nsites"], nrows=400)
    df = pd.read_csv(data_dir / "cgcnn_mp_36737.csv.gz", usecols=["material_id", "cif"], nrows=400)
    rows = df[(meta.nsites.values >= 2) & (meta.nsites.values <= 12)].iloc[[3, 11, 29, 47]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Structure.from_str(c, fmt="cif") for c in rows.cif]


def _replace(c: Crystal, **kw) -> Crystal:
    fields = {
        k: np.array(getattr(c, k)) for k in ("lattice", "frac", "species", "mask", "spacegroup", "overflow")
    }
    fields.update({k: np.asarray(v) for k, v in kw.items()})
    return Crystal(**fields)


def _mixed_batch(good_structures):
    """(batched crystal, expected valid, expected reason per crystal)."""
    goods = [from_structure(s, N_PAD) for s in good_structures]
    g = goods[0]
    frac = np.array(g.frac)
    frac[1] = (frac[0] + np.array([0.01, 0.0, 0.0])) % 1.0  # ~0.03-0.1 A from site 0
    overlapping = _replace(g, frac=frac)
    big = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.6), ["Cu"], [[0, 0, 0]])
    big.make_supercell([5, 5, 5])  # 500 sites, a perfectly fine metal
    five_hundred = from_structure(big, N_PAD)
    nan_lattice = _replace(goods[1], lattice=np.array([np.nan, 5.0, 5.0, 90.0, 90.0, 90.0], np.float32))
    overflowed = _replace(goods[2], overflow=np.bool_(True))
    flat = _replace(goods[3], lattice=np.array([5.0, 5.0, 5.0, 90.0, 90.0, 179.99], np.float32))
    empty = _replace(goods[1], mask=np.zeros(N_PAD, bool))
    bad_z = _replace(goods[2], species=np.where(np.array(goods[2].mask), 200, 0).astype(np.int32))
    crystals = [
        goods[0],
        overlapping,
        goods[1],
        five_hundred,
        nan_lattice,
        goods[2],
        overflowed,
        flat,
        empty,
        bad_z,
        goods[3],
    ]
    reasons = [
        None,
        "overlapping_atoms",
        None,
        "too_many_sites",
        "nonfinite_input",
        None,
        "overflow",
        "degenerate_lattice",
        "empty",
        "invalid_species",
        None,
    ]
    return stack(crystals), np.array([r is None for r in reasons]), reasons


def test_mixed_batch_under_jit_and_vmap(good_structures):
    fn = make_property_fn(MEGNET, clamp=(-10.0, 10.0), invalid_value=7.5, min_distance=0.5, max_sites=256)
    batch, expected_valid, reasons = _mixed_batch(good_structures)
    f = jax.jit(jax.vmap(fn))
    values, valid = f(batch)
    assert values.shape == valid.shape == (len(reasons),)
    assert values.dtype == jnp.float32 and valid.dtype == jnp.bool_
    values, valid = np.asarray(values), np.asarray(valid)
    assert np.all(np.isfinite(values))
    np.testing.assert_array_equal(valid, expected_valid)
    assert np.all(values[~valid] == 7.5)
    # valid values are exactly what the model gives on the pymatgen structures (independent of the bridge)
    ref, ok = get_property_model(MEGNET).predict(good_structures)
    assert ok.all()
    np.testing.assert_allclose(values[valid], ref.astype(np.float32), atol=1e-5)

    stats = fn.stats()
    assert stats["host_calls"] == 1  # ONE host call for the whole vmapped batch
    assert stats["evaluated"] == len(reasons) and stats["valid"] == 4 and stats["failed"] == 7
    assert stats["failures"] == {r: 1 for r in reasons if r is not None}
    assert set(stats["failures"]) <= set(REASONS)

    f(batch)  # second call: one more host call, counts double
    stats = fn.stats()
    assert stats["host_calls"] == 2 and stats["evaluated"] == 2 * len(reasons)
    assert stats["failures"]["overflow"] == 2
    fn.reset_stats()
    assert fn.stats() == {
        "host_calls": 0,
        "evaluated": 0,
        "valid": 0,
        "failed": 0,
        "clamped": 0,
        "failures": {},
    }


def test_clamp_default_invalid_value_and_direct_batch(good_structures):
    ref, _ = get_property_model(MEGNET).predict(good_structures)
    lo, hi = float(np.sort(ref)[1]) + 1e-3, float(ref.max()) + 1.0  # clamps the lowest two from below
    fn = make_property_fn(MEGNET, clamp=(lo, hi))
    crystals = [from_structure(s, 16) for s in good_structures]
    crystals.append(_replace(crystals[0], overflow=np.bool_(True)))
    values, valid = jax.jit(fn)(stack(crystals))  # a batched crystal without vmap: also one host call
    values = np.asarray(values)
    np.testing.assert_allclose(values[:4], np.clip(ref, lo, hi).astype(np.float32), atol=1e-5)
    assert values[4] == np.float32(hi) and not bool(valid[4])  # invalid_value defaults to clamp[1]
    assert fn.stats()["clamped"] == 2 and fn.stats()["host_calls"] == 1

    single_value, single_valid = jax.jit(fn)(crystals[2])
    assert single_value.shape == () and bool(single_valid)
    assert float(single_value) == pytest.approx(float(np.clip(ref[2], lo, hi)), abs=1e-5)


def test_nested_vmap_and_m3gnet_bridge(good_structures):
    fn = make_property_fn(M3GNET)
    crystals = [from_structure(s, 16) for s in good_structures]
    batch = jax.tree.map(lambda x: x.reshape((2, 2) + x.shape[1:]), stack(crystals))
    values, valid = jax.jit(jax.vmap(jax.vmap(fn)))(batch)
    assert values.shape == (2, 2) and bool(np.all(valid))
    ref, _ = get_property_model(M3GNET).predict(good_structures)
    np.testing.assert_allclose(np.asarray(values).reshape(-1), ref.astype(np.float32), atol=1e-5)
    assert fn.stats()["host_calls"] == 1


def test_model_side_failures_and_density_guard():
    fn = make_property_fn(MEGNET, min_volume_per_atom=2.0)
    isolated = from_structure(
        Structure(Lattice.cubic(9.0), ["Na"], [[0, 0, 0]]), 4
    )  # no neighbour within 4 A
    americium = from_structure(Structure(Lattice.cubic(3.0), ["Am"], [[0, 0, 0]]), 4)  # not in the model
    dense = from_structure(Structure(Lattice.cubic(1.2), ["C"], [[0, 0, 0]]), 4)  # 1.7 A^3 per atom
    values, valid = jax.jit(jax.vmap(fn))(stack([isolated, americium, dense]))
    assert not np.any(np.asarray(valid)) and np.all(np.asarray(values) == 10.0)
    assert fn.stats()["failures"] == {"no_bonds": 1, "unsupported_element": 1, "too_dense": 1}


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="clamp"):
        make_property_fn(MEGNET, clamp=(1.0, -1.0))
    with pytest.raises(ValueError, match="invalid_value"):
        make_property_fn(MEGNET, invalid_value=float("nan"))
    with pytest.raises(KeyError, match="unknown matgl model"):
        make_property_fn("not-a-model")
