"""The objective is one ``--set`` away in every GFlowNet experiment, and adding those fields to the configs does not
orphan run directories recorded before them."""

from __future__ import annotations

import json

import jax
import pytest

from experiments.configs import OBJECTIVE_DEFAULTS, available, get_config
from experiments.tasks import build_task
from experiments.train import apply_overrides
from hgfn_jax.gflownet.train import make_train
from hgfn_jax.rundir.checkpoint import ConfigMismatchError, check_resume_config, config_json


@pytest.mark.parametrize("exp", [e for e in available() if "lr_z" in get_config(e, "test").get("train", {})])
def test_every_gflownet_experiment_exposes_the_objective(exp):
    cfg = get_config(exp, "test")
    assert {k: cfg.train[k] for k in OBJECTIVE_DEFAULTS} == OBJECTIVE_DEFAULTS


def test_set_train_loss_reaches_the_training_loop():
    cfg = apply_overrides(get_config("hypergrid", "test"), ["train.loss=subtb", "train.subtb_lambda=0.5",
                                                            "train.lr_flow=0.01"])
    fns = make_train(cfg, build_task(cfg))
    ts = fns.init(jax.random.PRNGKey(0))
    assert "flow" in ts.params  # the state-flow network exists only for the DB family
    tb = get_config("hypergrid", "test")
    assert "flow" not in make_train(tb, build_task(tb)).init(jax.random.PRNGKey(0)).params
    with pytest.raises(ValueError, match="subtb_lambda"):
        make_train(apply_overrides(cfg, ["train.subtb_lambda=-1.0"]), build_task(cfg))


def test_a_run_recorded_before_the_objective_fields_still_resumes(tmp_path):
    cfg = get_config("hypergrid", "test")
    saved = json.loads(config_json(cfg))
    for k in OBJECTIVE_DEFAULTS:
        del saved["train"][k]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    (tmp_path / "checkpoints" / "10").mkdir(parents=True)
    assert check_resume_config(cfg, tmp_path)
    with pytest.raises(ConfigMismatchError, match="train.loss"):
        check_resume_config(apply_overrides(get_config("hypergrid", "test"), ["train.loss=db"]), tmp_path)


def test_configs_without_the_objective_fields_resume_unchanged(tmp_path):
    """A training config that is not a GFlowNet's (the GAN's) or a hand-built GFlowNet config without the objective
    fields must resume against its own recorded config: the defaults may not appear on one side only."""
    for cfg in (get_config("pgcgm", "test"), get_config("hypergrid", "test")):
        cfg = json.loads(config_json(cfg))
        for k in OBJECTIVE_DEFAULTS:
            cfg["train"].pop(k, None)
        (tmp_path / "config.json").write_text(json.dumps(cfg))
        (tmp_path / "checkpoints" / "3").mkdir(parents=True, exist_ok=True)
        assert check_resume_config(cfg, tmp_path)
