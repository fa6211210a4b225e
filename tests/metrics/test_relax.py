"""Relaxation: a rattled and strained data-set crystal relaxes back and matches its source; broken inputs are
counted by reason while their batch mates get results; the batch equals ASE's own one-structure FIRE.

Small cells (2-8 sites) and step caps of <= 60 keep this to seconds (the heavy run is benchmarks/, not a test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from hgfn_jax.metrics import reference, relax


@pytest.fixture(scope="module")
def relaxer(model_dir):
    return relax.Relaxer(max_steps=60, time_limit_s=30.0)


def _row(formula: str, nsites: int) -> int:
    t = reference.reference_table()
    return int(np.flatnonzero((t["reduced_formula"].to_numpy() == formula) & (t["nsites"].to_numpy() == nsites))[0])


def _rattled(row: int, strain: float, sigma: float, seed: int) -> tuple[Structure, Structure]:
    ref = reference.reference_structure(row)
    gen = ref.copy()
    gen.apply_strain(strain)
    rng = np.random.default_rng(seed)
    gen = Structure(gen.lattice, gen.species, gen.cart_coords + rng.normal(0, sigma, (len(gen), 3)),
                    coords_are_cartesian=True)
    return ref, gen


def _nan_lattice() -> Structure:
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.lattice = Lattice(np.full((3, 3), np.nan))
    return s


def test_batch_relaxes_back_and_isolates_broken_inputs(data_dir, relaxer):
    table = reference.reference_table()
    nacl_row, mgo_row = _row("NaCl", 2), _row("MgO", 2)
    nacl_ref, nacl = _rattled(nacl_row, 0.04, 0.05, 0)
    mgo_ref, mgo = _rattled(mgo_row, -0.03, 0.05, 1)
    overlap = Structure(Lattice.cubic(4.0), ["Na", "Cl", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    batch = [nacl, _nan_lattice(), None, overlap, mgo]
    res = relaxer.relax_many(batch)
    assert [r.reason for r in res] == [None, "invalid_cell", "no_structure", "overlapping_atoms", None]
    for ref, r in ((nacl_ref, res[0]), (mgo_ref, res[4])):
        assert r.structure is not None and r.converged and math.isfinite(r.energy_per_atom)
        # back to the DFT cell: volume within 3 % (M3GNet on MP data), and the source structure again
        assert r.structure.volume == pytest.approx(ref.volume, rel=0.03)
        assert relax.match(ref, r.structure, "pgcgm") is not None
    assert relax.match(nacl_ref, nacl_ref.copy(), "pgcgm") == pytest.approx(0.0, abs=1e-10)
    m = relax.relaxation_metrics(batch, res)
    assert m["n"] == 5 and m["relaxed"] == pytest.approx(0.4)  # failures stay in the denominator
    assert m["match_rate_chgflownet"] == pytest.approx(0.4)
    assert m["failures"] == {"invalid_cell": 1, "no_structure": 1, "overlapping_atoms": 1}
    e = relax.formation_energies([res[0].structure, None])
    assert e[0] == pytest.approx(float(table["formation_energy_per_atom"].iloc[nacl_row]), abs=0.1) and np.isnan(e[1])


def test_batched_equals_ase_single_structure_fire(data_dir, relaxer):
    """Reference: ASE's FIRE + FrechetCellFilter driven by matgl's own PESCalculator, one structure at a time."""
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE
    from matgl.ext.ase import PESCalculator
    from pymatgen.io.ase import AseAtomsAdaptor

    gens = [_rattled(_row("NaCl", 2), 0.04, 0.05, 2)[1], _rattled(_row("MgO", 2), 0.03, 0.05, 3)[1]]
    res = relaxer.relax_many(gens)
    calc = PESCalculator(potential=relaxer.model, stress_unit="eV/A3")
    for g, r in zip(gens, res, strict=True):
        atoms = AseAtomsAdaptor.get_atoms(g)
        atoms.calc = calc
        opt = FIRE(FrechetCellFilter(atoms), logfile=None)
        assert opt.run(fmax=0.1, steps=60)
        assert r.steps == opt.nsteps
        assert r.energy_per_atom == pytest.approx(atoms.get_potential_energy() / len(atoms), abs=1e-4)
        assert np.allclose(r.structure.lattice.matrix, atoms.cell.array, atol=1e-3)


def test_step_cap_timeout_unsupported_and_model_error(data_dir, relaxer, monkeypatch):
    far = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # compressed CsCl type
    capped = relax.Relaxer(max_steps=1, time_limit_s=30.0)
    r = capped.relax(far)
    assert r.reason == "step_cap" and r.structure is not None and not r.converged and r.steps == 1
    timed = relax.Relaxer(max_steps=60, time_limit_s=0.0)
    r = timed.relax(far)
    assert r.reason == "timeout" and r.structure is not None and r.steps == 0
    if "Og" not in relaxer.elements:
        assert relaxer.relax(Structure(Lattice.cubic(4.0), ["Og"], [[0, 0, 0]])).reason == "unsupported_element"
    # a forward that raises for one structure marks that one alone; its batch mate still relaxes
    real = relaxer._forward

    def flaky(graphs, lats):
        if any(g.num_nodes == 3 for g in graphs):
            raise RuntimeError("boom")
        return real(graphs, lats)

    monkeypatch.setattr(relaxer, "_forward", flaky)
    three = Structure(Lattice.cubic(5.0), ["Na", "Cl", "K"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])
    nacl = _rattled(_row("NaCl", 2), 0.02, 0.03, 4)[1]
    res = relaxer.relax_many([three, nacl])
    assert res[0].reason == "model_error" and res[0].structure is None
    assert res[1].converged and res[1].reason is None


@pytest.fixture(scope="module")
def tensornet(model_dir):
    return relax.Relaxer(relax.TENSORNET_POTENTIAL, max_steps=20, time_limit_s=30.0)


def test_tensornet_loads_and_relaxes_one_structure(data_dir, tensornet):
    """TensorNet-MatPES through the same batched path: one structure, step cap 20, finite energy, cap respected."""
    _, gen = _rattled(_row("NaCl", 2), 0.04, 0.05, 5)
    r = tensornet.relax(gen)
    assert r.structure is not None and math.isfinite(r.energy_per_atom) and r.steps <= 20
    assert r.reason in (None, "step_cap", "timeout")


@pytest.mark.xfail(strict=True, reason="TensorNet-MatPES under matgl 4.1.2 (stock loader) has no minimum near "
                   "MP's NaCl: E/atom falls monotonically from 0.9 V0 to 1.2 V0 (-2.55 -> -3.00 eV/atom, stress "
                   "-12 GPa at V0; the JAX port agrees, so the weights/loader, not the torch code path). "
                   "Remove the mark once a matgl_fix for TensorNet exists.")
def test_tensornet_relaxes_back(data_dir, tensornet):
    """A strained copy of MP's NaCl relaxes back to the source volume (PBE minimum, like MatPES-PBE's)."""
    ref, gen = _rattled(_row("NaCl", 2), 0.04, 0.05, 5)
    r = tensornet.relax(gen)
    assert r.structure is not None
    assert r.structure.volume == pytest.approx(ref.volume, rel=0.04)
