"""The battery evaluation reports what its names say (issue 10, sec. 3): composition validity is the papers'
(CDVAE's) SMACT check WITH the Pauling test, and the mean formation energy counts refused structures."""

import numpy as np
from pymatgen.core import Lattice, Structure
from smact.screening import smact_validity

from experiments.hierarchical import quality_metrics
from hgfn_jax.crystal.convert import from_structure, stack


def _rocksalt(species):
    return Structure(Lattice.cubic(5.0), species, [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]][: len(species)])


def test_composition_validity_uses_pauling_and_energy_mean_counts_refusals():
    structures = [_rocksalt(["Li", "Cl"]), _rocksalt(["Li", "C", "Cl"]), _rocksalt(["Na", "Cl"])]
    # independent reference: SMACT itself (CDVAE convention: use_pauling_test=True, include_alloys=True)
    want = [smact_validity(s.composition, use_pauling_test=True, include_alloys=True,
                           oxidation_states_set="smact14") for s in structures]
    neutral = [smact_validity(s.composition, use_pauling_test=False, include_alloys=True,
                              oxidation_states_set="smact14") for s in structures]
    assert want == [True, False, True] and neutral == [True, True, True]  # LiCCl: neutral, fails Pauling
    crystals = stack([from_structure(s, 8) for s in structures])
    energy = np.array([-1.0, 0.5, 10.0], np.float32)  # the third was refused by the energy model
    terms = {"energy": energy, "energy_valid": np.array([1.0, 1.0, 0.0], np.float32)}
    idx = np.arange(3)
    m = quality_metrics(crystals, terms, np.zeros(3), idx, np.ones(3, bool), energy_penalty=10.0)
    assert m["composition_validity"] == np.mean(want)
    assert m["composition_charge_neutral_no_pauling"] == np.mean(neutral)
    np.testing.assert_allclose(m["energy_refused_frac"], 1.0 / 3.0)
    np.testing.assert_allclose(m["formation_energy_mean_accepted"], (-1.0 + 0.5) / 2)
    np.testing.assert_allclose(m["formation_energy_mean_all"], (-1.0 + 0.5 + 10.0) / 3)
    assert "formation_energy_mean" not in m  # the ambiguous name is gone
