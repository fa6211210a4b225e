"""The shipped CHGFlowNet bond table (hgfn_jax.data.bond_stats): contents, parsing errors, and its consistency
with statistics re-derived from the shared data set with pymatgen's neighbour search."""

from __future__ import annotations

import numpy as np
import pytest

from hgfn_jax.data import bond_stats as bt


@pytest.fixture(scope="module")
def stats():
    return bt.read_stats()


@pytest.fixture(scope="module")
def table():
    return bt.load_bond_table()


def test_bond_table_contents(stats, table):
    d_min, d_max, d_mean, known = (
        np.asarray(x) for x in (table.d_min, table.d_max, table.d_mean, table.known)
    )
    for arr in (d_min, d_max, d_mean, known):
        assert arr.shape == (119, 119)
        np.testing.assert_array_equal(arr, arr.T)
    assert known.sum() == 2 * len(stats["min"]) - sum(a == b for a, b in (k.split("_") for k in stats["min"]))
    # SHAFT (paper 002, Sec. 4.2): "minimum bond distance of Li-O is 1.63 and the average ... is 3.02"
    assert d_min[3, 8] == pytest.approx(1.63, abs=0.01)
    assert d_mean[3, 8] == pytest.approx(3.02, abs=0.01)
    assert d_max[8, 3] == pytest.approx(stats["mean"]["3_8"] + stats["std"]["3_8"], rel=1e-6)
    # absent pairs get the README defaults
    absent = [(i, j) for i in range(1, 119) for j in range(i, 119) if f"{i}_{j}" not in stats["min"]][:50]
    assert absent
    for i, j in absent:
        assert (d_min[i, j], d_max[i, j], d_mean[i, j]) == (1.0, 3.5, 2.0)
    with pytest.raises(ValueError, match="non-physical"):
        bt.table_from_stats({"min": {"3_8": -1.0}, "mean": {"3_8": 2.0}, "std": {"3_8": 0.1}})
    with pytest.raises(ValueError, match="bad bond-table key"):
        bt.table_from_stats({"min": {"3-8": 1.0}, "mean": {"3-8": 2.0}, "std": {"3-8": 0.1}})


def test_derived_table_consistent_with_shipped(data_dir, stats):
    derived, rows = bt.derive_from_dataset(n_structures=40, seed=3, max_sites=24)
    assert rows.size == 40
    report = bt.compare_tables(derived, stats)
    assert report["n_common"] >= 60
    assert report["n_common"] == report["n_derived"]  # every pair of MP structures is in the MP table
    # a sample of MP can only raise the all-MP minimum (up to MP release differences)
    assert report["frac_min_not_below"] >= 0.98
    assert 1.0 <= report["min_ratio_median"] < 1.3
    assert 0.9 < report["mean_ratio_median"] < 1.1
    assert report["min_pearson"] > 0.6 and report["mean_pearson"] > 0.5
