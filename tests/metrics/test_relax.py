"""Relaxation: a rattled and strained data-set crystal relaxes back and matches; failures are counted.

Two 2-atom cells and a step cap of 40 keep this to a few seconds (the heavy run is benchmarks/, not a test)."""

from __future__ import annotations

import numpy as np
import pytest

from hgfn_jax.metrics import reference, relax


@pytest.fixture(scope="module")
def relaxer(model_dir):
    return relax.Relaxer(max_steps=40, time_limit_s=30.0)


def test_rattled_strained_crystal_relaxes_back_and_matches(data_dir, relaxer):
    table = reference.reference_table()
    row = int(np.flatnonzero((table["reduced_formula"].to_numpy() == "NaCl") & (table["nsites"].to_numpy() == 2))[0])
    ref = reference.reference_structure(row)
    gen = ref.copy()
    gen.apply_strain(0.04)
    gen.perturb(0.05, min_distance=0.02)
    res = relaxer.relax(gen)
    assert res.structure is not None and res.converged and res.reason is None
    # back to the DFT cell: volume within 3 % (M3GNet on MP data), and the same structure as the reference
    assert res.structure.volume == pytest.approx(ref.volume, rel=0.03)
    assert relax.match(ref, res.structure, "pgcgm") is not None
    rms = relax.match(ref, ref.copy(), "pgcgm")
    assert rms == pytest.approx(0.0, abs=1e-10)
    m = relax.relaxation_metrics([gen, None], [res, relaxer.relax(None)])
    assert m["match_rate_chgflownet"] == pytest.approx(0.5)  # the missing structure stays in the denominator
    assert m["failures"] == {"no_structure": 1}
    e = relax.formation_energies([res.structure, None])
    assert e[0] == pytest.approx(float(table["formation_energy_per_atom"].iloc[row]), abs=0.1) and np.isnan(e[1])


def test_unsupported_element_and_step_cap(relaxer):
    from pymatgen.core import Lattice, Structure

    exotic = Structure(Lattice.cubic(4.0), ["Og"], [[0, 0, 0]]) if "Og" not in relaxer.elements else None
    if exotic is not None:
        assert relaxer.relax(exotic).reason == "unsupported_element"
    capped = relax.Relaxer(max_steps=1, time_limit_s=30.0)
    far = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # compressed CsCl type
    r = capped.relax(far)
    assert r.reason == "step_cap" and r.structure is not None and not r.converged
