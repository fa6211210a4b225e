"""Property distances by hand and the evaluate CLI on a composition-only (Crystal-GFN style) run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

from hgfn_jax.metrics import properties
from hgfn_jax.metrics import samples as sm


def test_property_distances_by_hand():
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # d = 2*sqrt(3) = 3.464 A
    samples = [sm.from_structure(s), sm.from_cif("broken"),
               sm.Sample(None, Composition("Li2"), "no_positions", 229, (200.0, 200.0, 200.0, 90.0, 90.0, 90.0))]
    ref = {"min_distance": np.array([3.0, 4.0]), "max_distance": np.array([3.464]), "density": np.array([1.0]),
           "volume_per_atom": np.array([10.0, 20.0, 40.0])}
    m = properties.property_metrics(samples, reference=ref)
    d = 2 * np.sqrt(3.0)
    assert m["wd_min_distance"] == pytest.approx(0.5 * abs(d - 3.0) + 0.5 * abs(d - 4.0))
    assert m["wd_max_distance"] == pytest.approx(abs(d - 3.464))
    assert m["min_distance_n"] == 1
    assert m["plausible_volume_frac"] == pytest.approx(1 / 3)  # NaCl 32 A^3/atom; Li2 4e6; broken: none
    # density: NaCl from pymatgen, the composition-only Li2 from its mass over the lattice volume (8e6 A^3)
    li2 = float(Composition("Li2").weight) / 8e6 * 1.66053906660
    assert m["density_mean"] == pytest.approx((s.density + li2) / 2, rel=1e-6)


def test_evaluate_cli_on_composition_only_run(tmp_path, data_dir):
    from experiments import evaluate

    rng = np.random.default_rng(0)
    with (tmp_path / "samples.jsonl").open("w") as f:
        for i in range(12):
            comp = {"Li": int(rng.integers(1, 3)), "O": int(rng.integers(1, 3))}
            a = 3.0 if i % 3 else 30.0
            f.write(json.dumps({"formula": "x", "composition": comp, "spacegroup": int(rng.integers(1, 231)),
                                "lattice": [a, a, a, 90, 90, 90], "formation_energy": -1.0 - i / 10,
                                "log_reward": 0.0}) + "\n")
        f.write(json.dumps({"formula": "Xq2", "spacegroup": 1, "lattice": [float("nan")] * 6}) + "\n")
    m = evaluate.main([str(tmp_path), "--relaxer", "none", "--no-fingerprints"])
    assert m["n"] == 13 and m["n_with_structure"] == 0
    assert m["validity"]["cif"] is None and m["validity"]["distance_pgcgm"] is None  # not "all invalid"
    assert 0 < m["validity"]["composition_cdvae"] < 1
    assert m["stability"]["sun_level"] == "composition" and m["stability"]["n"] == 13
    assert m["properties"]["plausible_volume_frac"] < 1
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "no atomic positions" in report and "ours" in report
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == 13
