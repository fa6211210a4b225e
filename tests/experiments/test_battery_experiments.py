"""The battery experiments (CHGFlowNet, SHAFT, flat baseline) end to end on their ``test`` presets, with the
real M3GNet formation-energy model behind the host callback: training, exact kill-and-resume, evaluation
outputs (CIFs readable by pymatgen, records, the evaluation suite's eval/report.md checked against the CIFs, a
failing suite that keeps the run), and energy-model failures counted instead of raised."""

import json

import jax
import numpy as np
import pytest
from pymatgen.core import Structure

import experiments.evaluate
from experiments.configs import get_config
from experiments.tasks import build_task
from hgfn_jax.gflownet.train import train_and_evaluate


def _small(cfg):
    cfg.eval.untrained_reference = False
    return cfg


def test_chgflownet_battery_kill_and_resume_is_exact(tmp_path):
    cfg = _small(get_config("chgflownet_battery", "test"))
    # the CHGFlowNet reward needs the raw energy (E < -10 eV/atom -> +10 is the reward's rule, not a clamp)
    task = build_task(cfg)
    assert task.extras["energy_bridge"].clamp is None
    full = train_and_evaluate(cfg, task, tmp_path / "full", progress=False)

    part = train_and_evaluate(cfg, task, tmp_path / "killed", stop_after=2, progress=False)
    assert part["summary"]["finished"] is False and int(part["state"].step) == 2
    resumed = train_and_evaluate(cfg, task, tmp_path / "killed", progress=False)
    assert int(resumed["state"].step) == cfg.train.num_iterations
    leaves = zip(jax.tree.leaves(full["state"].params), jax.tree.leaves(resumed["state"].params), strict=True)
    for a, b in leaves:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(full["log_r"], resumed["log_r"])
    ((_, jit_chunk, _, _),) = task.cache.entries.values()
    assert jit_chunk._cache_size() == 1  # neither the second run nor the resumed one recompiled the step
    rows_full = (tmp_path / "full" / "metrics.csv").read_text().splitlines()
    rows_resumed = (tmp_path / "killed" / "metrics.csv").read_text().splitlines()
    assert len(rows_full) == cfg.train.num_iterations + 1
    # byte-identical metrics, host counters included (restored from the checkpoint step's row on resume)
    assert any(h.startswith("host/energy/") for h in rows_full[0].split(","))
    assert rows_full == rows_resumed
    # visited.jsonl (train.record_visited, on in the battery configs): one line per iteration, byte-identical
    # after the kill and resume, its log-rewards averaging to the logged batch mean
    visited = (tmp_path / "full" / "visited.jsonl").read_bytes()
    assert visited == (tmp_path / "killed" / "visited.jsonl").read_bytes()
    lines = [json.loads(x) for x in visited.decode().splitlines()]
    assert [r["iteration"] for r in lines] == list(range(1, cfg.train.num_iterations + 1))
    assert all(len(r["keys"]) == len(r["log_reward"]) == cfg.train.batch_size for r in lines)
    logged = [float(r.split(",")[rows_full[0].split(",").index("log_reward_mean")]) for r in rows_full[1:]]
    np.testing.assert_allclose([np.mean(r["log_reward"]) for r in lines], logged, rtol=1e-6)

    # ---- outputs of the finished run
    run = tmp_path / "full"
    summary = json.loads((run / "summary.json").read_text())
    stats = summary["host_stats"]
    n_evals = cfg.train.num_iterations * cfg.train.batch_size + cfg.eval.num_samples
    assert stats["energy/evaluated"] == n_evals  # every terminal structure went through the bridge once
    assert stats["energy/valid"] + stats["energy/failed"] == n_evals
    top = summary["trained_top_k"]
    assert top["n"] == cfg.eval.top_k
    for k in ("cif_validity", "structure_validity", "composition_validity", "spacegroup_match_symprec_0.1"):
        assert 0.0 <= top[k] <= 1.0
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(records) == cfg.eval.num_samples
    allowed = set(cfg.env.elements)
    for r in records:
        assert r["spacegroup"] in cfg.env.spacegroups
        assert np.isfinite(r["log_reward"])
        if r["overflow"] or r["structure_valid"] == 0.0:
            assert r["log_reward"] == pytest.approx(np.log(1e-4), abs=1e-4)  # the floor, never a crash or NaN
    cifs = sorted((run / "cifs").glob("rank_*.cif"))
    assert len(cifs) == summary["cifs_written"] > 0
    ranked = sorted(records, key=lambda r: -r["log_reward"])
    for path in cifs:
        s = Structure.from_file(path)
        rank = int(path.stem.split("_")[1])
        assert len(s) == ranked[rank]["num_sites"]
        assert {el.symbol for el in s.composition.elements} <= allowed
        assert any(el.symbol in cfg.env.required_elements for el in s.composition.elements)
    assert (run / "training_curves.png").stat().st_size > 0

    # ---- the evaluation suite the run ended with (test preset: every CIF written, no relaxation)
    assert summary["eval_suite"]["n"] == len(cifs) and summary["eval_suite"]["report"] == "eval/report.md"
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["n"] == metrics["n_with_structure"] == len(cifs)
    # CDVAE structure validity recomputed from the CIFs with pymatgen's distance matrix (distinct-site pairs)
    ok = []
    for path in cifs:
        d = Structure.from_file(path).distance_matrix
        ok.append(bool(np.all(d[np.triu_indices(len(d), 1)] > 0.5)))
    assert metrics["validity"]["structure_cdvae"] == pytest.approx(np.mean(ok))
    report = (run / "eval" / "report.md").read_text()
    assert f"(distinct sites, V >= 0.1 A^3): {np.mean(ok):.4g}." in report
    # modes vs states visited from visited.jsonl (paper 000 Fig. 3): every training terminal state counted
    assert "## Modes vs states visited" in report
    assert metrics["modes"]["states_visited"][-1] == cfg.train.num_iterations * cfg.train.batch_size
    # the suite's cost figures read this run's summary (written before the evaluation), not a stale one
    assert metrics["cost"]["train_seconds"] == pytest.approx(summary["train_seconds_this_call"])
    # ... and the loop records what they need (SHAFT Table 6): parameters counted from the trained state
    n_params = sum(np.size(x) for x in jax.tree.leaves(full["state"].params))
    assert metrics["cost"]["param_count"] == summary["param_count"] == n_params and metrics["cost"]["missing"] == []
    assert summary["iterations_this_call"] == cfg.train.num_iterations and summary["sample_seconds_per_sample"] > 0
    # the resumed call timed only its own iterations
    assert json.loads((tmp_path / "killed" / "summary.json").read_text())["iterations_this_call"] == \
        cfg.train.num_iterations - 2


@pytest.mark.parametrize(("exp", "suite_fails"), [("shaft_battery", False), ("gfn_flat_battery", True)])
def test_other_battery_experiments_train_and_evaluate(exp, suite_fails, tmp_path, monkeypatch, capsys):
    if suite_fails:  # a failure inside the evaluation suite must not lose the trained run
        def boom(*args, **kwargs):
            raise RuntimeError("suite exploded\n(second line)")

        monkeypatch.setattr(experiments.evaluate, "evaluate_run", boom)
    cfg = _small(get_config(exp, "test"))
    cfg.train.num_iterations = 2
    cfg.eval.num_samples = 8
    cfg.eval.top_k = 4
    task = build_task(cfg)
    bridge = task.extras["energy_bridge"]
    if exp == "shaft_battery":
        assert bridge.clamp == (-10.0, 10.0)  # paper 002 sec. 10.8
    out = train_and_evaluate(cfg, task, tmp_path, progress=False)
    assert np.isfinite(out["log_r"]).all()
    assert out["summary"]["trained_top_k"]["n"] == 4
    assert out["summary"]["host_stats"]["energy/evaluated"] == 2 * cfg.train.batch_size + 8
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["trained_top_k"]["n"] == 4 and summary["iterations"] == 2
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 8
    cifs = sorted((tmp_path / "cifs").glob("rank_*.cif"))
    assert len(cifs) == summary["cifs_written"] > 0
    if suite_fails:
        error = "RuntimeError: suite exploded (second line)"
        assert summary["eval_suite"]["error"] == out["summary"]["eval_suite"]["error"] == error
        assert f"warning: evaluation suite failed ({error})" in capsys.readouterr().out
        assert not (tmp_path / "eval" / "report.md").exists()
    else:
        assert summary["eval_suite"]["n"] == len(cifs)
        assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["n"] == len(cifs)
        assert "# Evaluation of" in (tmp_path / "eval" / "report.md").read_text()
