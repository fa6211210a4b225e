"""The Materials Project data pipeline against the source files read independently (pandas, pymatgen)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Element, Lattice, Structure

from hgfn_jax.crystal import convert as C
from hgfn_jax.crystal.lattice import density
from hgfn_jax.data import composition_counts, load_mp, mp, split
from hgfn_jax.paths import MissingResourceError

N_SAMPLE = 1000
N_MAX = 80


@pytest.fixture(scope="module")
def meta(data_dir) -> pd.DataFrame:
    return pd.read_csv(data_dir / "cgcnn_mp_36737_meta.csv.gz")


@pytest.fixture(scope="module")
def empty_cache(tmp_path_factory):
    """Point the cache at an empty folder: the module exercises the parse-only-what-is-needed path."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HGFN_CACHE_DIR", str(tmp_path_factory.mktemp("mp_cache")))
        yield


@pytest.fixture(scope="module")
def sample_rows(meta) -> np.ndarray:
    """1,000 rows spread evenly over the file among cells with <= N_MAX sites."""
    small = np.flatnonzero(meta["nsites"].to_numpy() <= N_MAX)
    return small[np.linspace(0, small.size - 1, N_SAMPLE).astype(int)]


@pytest.fixture(scope="module")
def sample(empty_cache, sample_rows) -> mp.MPDataset:
    return load_mp(n_max=N_MAX, rows=sample_rows, parse_all=False)


@pytest.fixture(scope="module")
def cifs(data_dir, sample_rows) -> list[str]:
    df = pd.read_csv(data_dir / "cgcnn_mp_36737.csv.gz", usecols=["id", "cif"])
    return df["cif"].to_numpy()[sample_rows].tolist()


def test_labels_and_shapes_match_source(sample, meta, sample_rows):
    assert len(sample) == N_SAMPLE and sample.n_max == N_MAX
    assert sample.frac.shape == (N_SAMPLE, N_MAX, 3) and sample.frac.dtype == np.float32
    assert sample.species.dtype == np.int32 and sample.lattice.dtype == np.float32
    ref = meta.iloc[sample_rows]
    np.testing.assert_array_equal(sample.row, sample_rows)
    np.testing.assert_array_equal(sample.material_id, ref["material_id"].to_numpy().astype(str))
    np.testing.assert_allclose(sample.formation_energy, ref["formation_energy_per_atom"], rtol=1e-6)
    np.testing.assert_allclose(sample.band_gap, ref["band_gap"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(sample.spacegroup, ref["spacegroup_symprec0.1"])
    np.testing.assert_array_equal(sample.nsites, ref["nsites"])
    np.testing.assert_array_equal(sample.mask.sum(1), ref["nsites"])
    np.testing.assert_array_equal(sample.species > 0, sample.mask)
    assert np.all(sample.frac[~sample.mask] == 0) and np.all((sample.frac >= 0) & (sample.frac < 1))
    # cell volume from the padded lattice against the source's own volume column
    vol = [Lattice.from_parameters(*p.astype(np.float64)).volume for p in sample.lattice]
    np.testing.assert_allclose(vol, ref["volume"], rtol=1e-5)


@pytest.mark.filterwarnings("ignore:Issues encountered while parsing CIF")
def test_sites_match_pymatgen_parse_of_source_cif(sample, cifs):
    for i in range(0, N_SAMPLE, 25):
        ref = Structure.from_str(cifs[i], fmt="cif")
        got = sample.get_structure(i)
        np.testing.assert_allclose(got.lattice.abc, ref.lattice.abc, rtol=1e-6)
        np.testing.assert_allclose(got.lattice.angles, ref.lattice.angles, atol=1e-4)
        assert [s.specie.Z for s in got] == [s.specie.Z for s in ref]
        d = got.frac_coords - ref.frac_coords
        assert np.abs(d - np.round(d)).max() < 1e-6
    assert len(list(mp.iter_structures(sample, [0, 1, 2]))) == 3


@pytest.mark.filterwarnings("ignore:Issues encountered while parsing CIF")
def test_round_trip_padded_structure_cif_padded_on_1000_crystals(sample):
    """padded -> Structure -> CIF -> Structure -> padded, exact to tolerance, sites in order."""
    crystals = sample.crystals()
    dens = np.asarray(jax.jit(jax.vmap(density))(jax.tree.map(jnp.asarray, crystals)))
    for i in range(len(sample)):
        c = sample.crystal(i)
        s = C.to_structure(c)
        assert dens[i] == pytest.approx(s.density, rel=1e-5)
        back = C.from_structure(Structure.from_str(C.to_cif(c), fmt="cif"), n_max=N_MAX)
        np.testing.assert_array_equal(back.species, c.species)
        np.testing.assert_array_equal(back.mask, c.mask)
        np.testing.assert_allclose(back.lattice, c.lattice, rtol=1e-4)
        d = back.frac - c.frac
        assert np.abs(d - np.round(d)).max() < 1e-5, sample.material_id[i]


def test_n_max_slices_the_same_sites(sample):
    small = np.flatnonzero(sample.nsites <= 12)[:20]
    d12 = load_mp(n_max=12, rows=sample.row[small], parse_all=False)
    np.testing.assert_array_equal(d12.frac, sample.frac[small, :12])
    np.testing.assert_array_equal(d12.species, sample.species[small, :12])
    np.testing.assert_array_equal(d12.lattice, sample.lattice[small])
    assert not sample.mask[small, 12:].any()
    # rows beyond n_max are left out, never truncated
    mixed = load_mp(n_max=12, rows=sample.row[:40], parse_all=False)
    np.testing.assert_array_equal(mixed.row, sample.row[:40][sample.nsites[:40] <= 12])


def test_filters_match_an_independent_selection(empty_cache, meta):
    allowed = ["Li", "Na", "K", "Mg", "Ca", "Zn", "O", "S", "Se", "F", "Cl", "P", "N"]
    sgs = [12, 14, 15, 62, 166, 225]
    ds = load_mp(n_max=20, elements=allowed, spacegroups=sgs, n_elements=3, limit=15, parse_all=False)
    ref_ids = []
    for _, row in meta.iterrows():
        if row["nsites"] > 20 or row["spacegroup_symprec0.1"] not in sgs:
            continue
        els = {e.symbol for e in Composition(row["formula"]).elements}
        if len(els) == 3 and els <= set(allowed):
            ref_ids.append(row["material_id"])
    assert len(ref_ids) > 15  # the limit matters
    np.testing.assert_array_equal(ds.material_id, ref_ids[:15])
    for i in range(len(ds)):
        z = set(ds.species[i][ds.mask[i]].tolist())
        assert len(z) == 3 and {Element.from_Z(e).symbol for e in z} <= set(allowed)
        assert ds.nsites[i] <= 20 and ds.spacegroup[i] in sgs
    binaries = load_mp(n_max=8, n_elements=2, elements=[3, 8, 9], limit=5, parse_all=False)
    assert all(set(binaries.species[i][binaries.mask[i]]) <= {3, 8, 9} for i in range(len(binaries)))


def test_only_needed_rows_are_parsed(empty_cache, monkeypatch):
    seen = []
    original = mp._parse_many

    def spy(cifs, workers=2):
        seen.append(len(cifs))
        return original(cifs, workers=workers)

    monkeypatch.setattr(mp, "_parse_many", spy)
    ds = load_mp(n_max=10, n_elements=2, limit=5)
    assert len(ds) == 5 and seen == [5]


def test_partial_cache_is_used_and_equal(empty_cache, monkeypatch, sample):
    rows = sample.row[:6]
    mp.build_cache(workers=1, rows=rows, verbose=False)
    parsed = load_mp(n_max=N_MAX, rows=rows[:4], parse_all=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("the cache covers these rows: nothing should be parsed")

    monkeypatch.setattr(mp, "_parse_many", forbidden)
    cached = load_mp(n_max=N_MAX, rows=rows[:4], parse_all=False)
    for field in ("lattice", "frac", "species", "mask", "nsites", "row"):
        np.testing.assert_array_equal(getattr(cached, field), getattr(parsed, field))
        np.testing.assert_array_equal(getattr(cached, field), getattr(sample, field)[:4])
    # rows outside the partial cache are parsed, not refused
    monkeypatch.setattr(mp, "_parse_many", lambda cifs, workers=2: [mp._parse_one(c) for c in cifs])
    other = load_mp(n_max=N_MAX, rows=sample.row[10:12], parse_all=False)
    np.testing.assert_array_equal(other.frac, sample.frac[10:12])


def test_split_is_deterministic_and_disjoint(sample):
    train, val, test = split(sample, (0.8, 0.1, 0.1), seed=3)
    assert (len(train), len(val), len(test)) == (800, 100, 100)
    ids = [set(part.material_id) for part in (train, val, test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set.union(*ids) == set(sample.material_id)
    again = split(sample, (0.8, 0.1, 0.1), seed=3)
    for a, b in zip((train, val, test), again, strict=True):
        np.testing.assert_array_equal(a.material_id, b.material_id)
        np.testing.assert_array_equal(a.frac, b.frac)
    assert not np.array_equal(split(sample, seed=4)[0].material_id, train.material_id)
    with pytest.raises(ValueError, match="summing to 1"):
        split(sample, (0.8, 0.1, 0.2))


def test_composition_counts_match_pymatgen(sample):
    counts = composition_counts(sample)
    assert counts.shape == (N_SAMPLE, 119) and counts[:, 0].sum() == 0
    for i in range(0, N_SAMPLE, 50):
        comp = sample.get_structure(i).composition
        expected = np.zeros(119, int)
        for el, amount in comp.items():
            expected[el.Z] = int(round(amount))
        np.testing.assert_array_equal(counts[i], expected)
    oxides = load_mp(n_max=10, elements=["Mg", "Ca", "O"], n_elements=2, limit=4, parse_all=False)
    sub = composition_counts(oxides, ["O", "Mg", "Ca"])
    np.testing.assert_array_equal(sub, composition_counts(oxides)[:, [8, 12, 20]])
    np.testing.assert_array_equal(sub.sum(1), oxides.nsites)
    with pytest.raises(ValueError, match="outside the given list"):
        composition_counts(oxides, ["O"])


def test_bad_requests_raise_clear_errors(empty_cache, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown element symbol 'Xx'"):
        load_mp(n_max=10, elements=["Fe", "Xx"], limit=1)
    with pytest.raises(ValueError, match="max_sites=30 exceeds n_max=20"):
        load_mp(n_max=20, max_sites=30)
    with pytest.raises(ValueError, match="n_max must lie in 1..200"):
        load_mp(n_max=201)
    with pytest.raises(ValueError, match="space groups must lie in 1..230"):
        load_mp(n_max=10, spacegroups=[0, 225])
    with pytest.raises(ValueError, match="rows must lie in 0..36736"):
        load_mp(n_max=10, rows=[5, 36737])
    monkeypatch.setenv("HGFN_DATA_DIR", str(tmp_path))
    with pytest.raises(MissingResourceError, match="cgcnn_mp_36737"):
        load_mp(n_max=10, limit=1)
