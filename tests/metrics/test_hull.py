"""Energy above hull against hand-computed hulls and the data set's own on-hull entries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Composition

from hgfn_jax.metrics import hull, reference


def test_binary_hull_by_hand():
    """A-B with AB at -1 eV/atom and elements at 0: the hull is the two segments A-AB-B."""
    ref = hull.HullReference(["LiF", "Li3F"], [-1.0, 0.2])  # Li3F above the hull
    assert ref.e_above_hull(Composition("LiF"), -1.0) == pytest.approx(0.0, abs=1e-9)
    assert ref.e_above_hull(Composition("LiF"), -0.9) == pytest.approx(0.1, abs=1e-9)
    assert ref.e_above_hull(Composition("LiF"), -1.2) == pytest.approx(-0.2, abs=1e-9)
    # x(F) = 0.25: hull between Li (0) and LiF (-1) is -0.5
    assert ref.e_above_hull(Composition("Li3F"), 0.2) == pytest.approx(0.7, abs=1e-9)
    assert ref.e_above_hull(Composition("Li3F"), -0.5) == pytest.approx(0.0, abs=1e-9)
    assert ref.e_above_hull(Composition("Li"), 0.05) == pytest.approx(0.05, abs=1e-9)
    # an element absent from the reference: only the corners at 0, so the hull is flat at 0
    assert ref.e_above_hull(Composition("NaF"), -0.3) == pytest.approx(-0.3, abs=1e-9)
    assert math.isnan(ref.e_above_hull(Composition("LiF"), float("nan")))


def test_dataset_on_hull_entries_have_zero_e_hull(data_dir):
    """Every stable entry of the data set's Li-Fe-O and Na-P-S hulls sits on its own hull within 1e-6."""
    table = reference.reference_table()
    ref = hull.dataset_hull()
    checked = 0
    for system in ({"Li", "Fe", "O"}, {"Na", "P", "S"}):
        rows = [i for i, e in enumerate(table["elements"]) if set(e) <= system and len(e) >= 2]
        pd = ref.phase_diagram(Composition("".join(system)))
        stable = {e.composition.reduced_formula for e in pd.stable_entries if len(e.composition.elements) >= 2}
        assert stable
        for i in rows:
            comp = Composition(table["formula"].iloc[i])
            eform = float(table["formation_energy_per_atom"].iloc[i])
            e = ref.e_above_hull(comp, eform)
            assert e >= -1e-6  # nothing of the data set lies below the hull it built
            if comp.reduced_formula in stable and e < 1e-3:
                assert abs(e) < 1e-6
                checked += 1
    assert checked >= 5


def test_stability_and_sun_fractions_count_every_sample():
    e = np.array([-0.1, 0.0, 0.05, 0.3, np.nan])
    m = hull.stability_metrics(e, unique=np.array([1, 1, 1, 1, 1], bool), novel=np.array([1, 0, 1, 1, 1], bool))
    assert m["stable_frac"] == pytest.approx(2 / 5) and m["metastable_frac"] == pytest.approx(3 / 5)
    assert m["sun"] == pytest.approx(1 / 5) and m["msun"] == pytest.approx(2 / 5)
    assert m["e_hull_available"] == pytest.approx(4 / 5)
