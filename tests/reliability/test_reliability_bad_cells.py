"""Fault injection, energy bridge: one absurd cell (or one structure that breaks the model) among valid ones never
changes the valid ones' energies, and each failure is counted under its own reason.

"Equal to evaluating them alone" is checked to 1e-5 eV/atom: valid structures still go through the model in
batches, and batched vs one-at-a-time matgl energies differ by float summation order only (measured <= 1.4e-6
eV/atom for MEGNet, <= 4.8e-7 for M3GNet), far below anything a reward can see.
"""

from __future__ import annotations

import jax
import numpy as np
from pymatgen.core import Lattice, Structure

from hgfn_jax.crystal.convert import from_structure, stack
from hgfn_jax.models.host_bridge import REASONS, make_property_fn

MEGNET = "MEGNet-MP-2018.6.1-Eform"
N_PAD = 8
TOL = 1e-5  # eV/atom, see the module docstring


def _valid_structures():
    return [
        Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(Lattice.cubic(4.2), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]),
        Structure(Lattice.hexagonal(3.2, 5.2), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.38]]),
    ]


def _absurd(length: float) -> Structure:
    return Structure(Lattice.cubic(length), ["Li", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_absurd_cells_do_not_poison_their_batch(model_dir):
    good = _valid_structures()
    fn = make_property_fn(MEGNET, clamp=(-10.0, 10.0), min_distance=0.5, max_sites=N_PAD)
    f = jax.jit(jax.vmap(fn))
    alone = np.array([float(f(stack([from_structure(s, N_PAD)]))[0][0]) for s in good])

    # 1e4-1e6 A cells made pymatgen ask for 1 TB - 17 TB (MemoryError, every batch mate invalid); a 300 A cell
    # takes seconds in the neighbour search (2e8 grid cells at 0.5 A) and is screened by the grid estimate
    bad = [_absurd(1e4), _absurd(1e6), _absurd(300.0), _absurd(1e5)]
    order = [good[0], bad[0], good[1], bad[1], bad[2], good[2], bad[3], good[3]]
    is_good = np.array([any(s is g for g in good) for s in order])
    fn.reset_stats()
    values, valid = f(stack([from_structure(s, N_PAD) for s in order]))
    values, valid = np.asarray(values), np.asarray(valid)
    np.testing.assert_array_equal(valid, is_good)
    np.testing.assert_allclose(values[is_good], alone, rtol=0, atol=TOL)
    assert np.all(values[~is_good] == 10.0)
    stats = fn.stats()
    assert stats["failures"] == {"huge_cell": 4} and stats["valid"] == 4
    assert "huge_cell" in REASONS


def test_a_structure_that_breaks_the_batched_model_call_is_isolated(model_dir, monkeypatch):
    """A batched forward that raises (an unforeseen model failure) is retried structure by structure."""
    good = _valid_structures()
    fn = make_property_fn(MEGNET, clamp=(-10.0, 10.0), min_distance=0.5, max_sites=N_PAD)
    f = jax.jit(jax.vmap(fn))
    alone = np.array([float(f(stack([from_structure(s, N_PAD)]))[0][0]) for s in good])

    poison = Structure(Lattice.cubic(4.0), ["K", "Br"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    real = fn.model.predict_with_reasons

    def faulty(structures):
        if any(s.composition.reduced_formula == "KBr" for s in structures):
            raise MemoryError("injected: the model cannot take this structure")
        return real(structures)

    monkeypatch.setattr(fn.model, "predict_with_reasons", faulty)
    order = [good[0], good[1], poison, good[2], good[3]]
    fn.reset_stats()
    values, valid = f(stack([from_structure(s, N_PAD) for s in order]))
    values, valid = np.asarray(values), np.asarray(valid)
    np.testing.assert_array_equal(valid, [True, True, False, True, True])
    np.testing.assert_allclose(values[[0, 1, 3, 4]], alone, rtol=0, atol=TOL)
    assert fn.stats()["failures"] == {"internal_error": 1}
