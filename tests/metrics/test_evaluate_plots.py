"""The evaluate CLI on a small CIF run directory: relaxation (batched), plots, cost and modes in report.md."""

from __future__ import annotations

import json

import numpy as np
from pymatgen.core import Structure

from hgfn_jax.metrics import reference


def test_evaluate_cli_structures_plots_cost_modes(tmp_path, data_dir, model_dir):
    from experiments import evaluate

    table = reference.reference_table()
    (tmp_path / "cifs").mkdir()
    rng = np.random.default_rng(0)
    for k, formula in enumerate(("NaCl", "MgO")):
        row = int(np.flatnonzero((table["reduced_formula"].to_numpy() == formula)
                                 & (table["nsites"].to_numpy() == 2))[0])
        s = reference.reference_structure(row).copy()
        s.apply_strain(-0.02)  # (the 2-site MgO row is CsCl-type: expanded, it falls into rock salt)
        s = Structure(s.lattice, s.species, s.cart_coords + rng.normal(0, 0.05, (len(s), 3)),
                      coords_are_cartesian=True)
        (tmp_path / "cifs" / f"rank_{k:05d}.cif").write_text(s.to(fmt="cif"))
    (tmp_path / "cifs" / "rank_00002.cif").write_text("data_broken\n_cell_length_a nan\n")  # unreadable
    (tmp_path / "summary.json").write_text(json.dumps({"iterations": 5, "train_seconds_this_call": 10.0,
                                                       "num_samples": 3}))
    (tmp_path / "config.json").write_text(json.dumps({"train": {"batch_size": 2}}))
    with (tmp_path / "visited.jsonl").open("w") as f:
        f.write(json.dumps({"iteration": 0, "keys": ["a", "b"], "log_reward": [1.0, -1.0]}) + "\n")
        f.write(json.dumps({"iteration": 1, "keys": ["b", "c"], "log_reward": [0.5, 2.0]}) + "\n")
    m = evaluate.main([str(tmp_path), "--max-steps", "40", "--no-fingerprints"])
    assert m["n"] == 3 and m["input_errors"] == {"unreadable_cif": 1}
    rel = m["relaxation"]
    assert rel["n"] == 3 and rel["failures"] == {"no_structure": 1}  # kept in the denominator
    assert abs(rel["match_rate_chgflownet"] - 2 / 3) < 1e-9
    assert m["cost"]["train_seconds_per_trajectory"] == 1.0 and "param_count" in m["cost"]["missing"]
    assert m["modes"]["modes"] == [1, 3] and m["modes"]["states_visited"] == [2, 4]
    out = tmp_path / "eval"
    for name in ("properties.png", "e_hull.png", "match_rate.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "![match_rate.png](match_rate.png)" in report and "## Cost (SHAFT Table 6)" in report
    assert "Modes vs states visited" in report


def test_relax_n_relaxes_the_first_samples_and_scopes_the_energy_blocks(data_dir, model_dir):
    """``relax_n``: only the first samples go to the relaxer; relaxation, energy, hull and S.U.N. blocks equal the
    suite run on those samples alone, while validity / novelty / diversity stay over all of them."""
    from hgfn_jax.metrics import samples as smp
    from hgfn_jax.metrics.relax import RelaxResult
    from hgfn_jax.metrics.suite import evaluate_samples

    class Identity:  # a relaxer that returns its input: isolates the subset logic from the potential
        name = "identity"

        def __init__(self):
            self.calls = []

        def relax_many(self, structures):
            self.calls.append(list(structures))
            return [RelaxResult(s, float("nan"), True, 0, 0.0, None) for s in structures]

    table = reference.reference_table()
    nsites = table["nsites"].to_numpy()
    rows = [int(i) for i in np.flatnonzero((nsites >= 2) & (nsites <= 6))[:5]]  # (1-site Cs has no bond: NaN)
    samples = [smp.from_structure(reference.reference_structure(r), name=f"s{k}") for k, r in enumerate(rows)]
    relaxer = Identity()
    m, per = evaluate_samples(samples, relaxer=relaxer, fingerprints=False, relax_n=2)
    assert [len(c) for c in relaxer.calls] == [2]
    assert all(a is b.structure for a, b in zip(relaxer.calls[0], samples[:2], strict=True))
    sub, _ = evaluate_samples(samples[:2], relaxer=Identity(), fingerprints=False)
    for block in ("relaxation", "energy", "stability"):
        assert m[block] == sub[block], block
    assert m["energy"]["n"] == 2 and m["stability"]["n"] == 2 and m["validity"]["n"] == 5
    assert np.isnan(per["formation_energy"][2:]).all() and np.isfinite(per["formation_energy"][:2]).all()
    full, _ = evaluate_samples(samples, relaxer=Identity(), fingerprints=False)
    assert full["energy"]["n"] == 5 and full["validity"] == m["validity"]
