"""Modes vs states visited against a hand-enumerated stream; cost metrics from a hand-made run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hgfn_jax.metrics import cost, modes


def test_modes_curve_hand_enumerated():
    # threshold 1.0; by hand:
    # it 0: a(0.5) b(2.0) a(0.5)  -> visited 3, distinct {a,b}=2, modes {b}=1
    # it 1: c(1.0) a(1.5) nan d   -> visited 6, distinct {a,b,c,d}=4, modes {b,c,a}=3 (d's NaN never counts)
    # it 2: b(3.0) b(0.1)         -> visited 8, distinct 4, modes 3 (b counted once)
    # it 3: (empty batch)         -> unchanged
    stream = [(["a", "b", "a"], [0.5, 2.0, 0.5]), (["c", "a", "d"], [1.0, 1.5, float("nan")]),
              (["b", "b"], [3.0, 0.1]), ([], [])]
    c = modes.modes_curve(stream, threshold=1.0)
    assert c["states_visited"].tolist() == [3, 6, 8, 8]
    assert c["distinct_states"].tolist() == [2, 4, 4, 4]
    assert c["modes"].tolist() == [1, 3, 3, 3]
    assert modes.modes_at(c, [0, 2, 3, 7, 100]).tolist() == [0, 0, 1, 3, 3]
    # integer keys (numpy hashes) are the same keys as Python ints
    c2 = modes.modes_curve([(np.array([7, 7, 9]), [2.0, 2.0, 0.0]), ([9], [5.0])], threshold=1.0)
    assert c2["modes"].tolist() == [1, 2]
    with pytest.raises(ValueError):
        modes.modes_curve([(["a"], [1.0, 2.0])], threshold=0.0)


def test_read_visited_orders_iterations(tmp_path):
    p = tmp_path / "visited.jsonl"
    p.write_text(json.dumps({"iteration": 1, "keys": ["x"], "log_reward": [0.0]}) + "\n"
                 + json.dumps({"iteration": 0, "keys": ["y", "x"], "log_reward": [1.0, -1.0]}) + "\n")
    c = modes.modes_curve(modes.read_visited(p), threshold=0.0)
    assert c["states_visited"].tolist() == [2, 3] and c["modes"].tolist() == [1, 2]


def test_cost_metrics_from_run_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"train": {"batch_size": 4}, "eval": {"num_samples": 16}}))
    (tmp_path / "summary.json").write_text(json.dumps({"iterations": 10, "train_seconds_this_call": 20.0,
                                                       "num_samples": 16}))
    m = cost.cost_metrics(tmp_path)
    assert m["train_seconds_per_trajectory"] == pytest.approx(20.0 / 40)
    assert m["param_count"] is None and m["sample_seconds_per_sample"] is None
    assert set(m["missing"]) == set(cost.MISSING)
    (tmp_path / "summary.json").write_text(json.dumps({"iterations": 10, "train_seconds_this_call": 20.0,
                                                       "num_samples": 16, "sample_seconds": 4.0,
                                                       "param_count": 123}))
    m = cost.cost_metrics(tmp_path)
    assert m["param_count"] == 123 and m["sample_seconds_per_sample"] == pytest.approx(0.25)
    assert m["samples_per_second"] == pytest.approx(4.0)
    # a resumed run (steps 8-10 in the last call): the rate is that call's seconds over that call's trajectories
    (tmp_path / "summary.json").write_text(json.dumps({"iterations": 10, "iterations_this_call": 2,
                                                       "train_seconds_this_call": 6.0, "param_count": 7,
                                                       "sample_seconds_per_sample": 0.02}))
    m = cost.cost_metrics(tmp_path)
    assert m["train_seconds_per_trajectory"] == pytest.approx(6.0 / (2 * 4)) and m["train_iterations_timed"] == 2
    assert m["sample_seconds_per_sample"] == pytest.approx(0.02) and m["samples_per_second"] == pytest.approx(50.0)
    assert m["missing"] == []


def test_param_count_from_orbax_checkpoint(tmp_path):
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    state = {"params": {"log_z": jnp.zeros(()), "policy": {"w": jnp.zeros((3, 4)), "b": jnp.zeros(4)}},
             "opt_state": {"mu": jnp.zeros((3, 4))}, "step": jnp.zeros((), jnp.int32)}
    ckpt = ocp.StandardCheckpointer()
    ckpt.save((tmp_path / "checkpoints" / "5" / "default").resolve(), state)
    ckpt.wait_until_finished()
    counts = cost.checkpoint_param_counts(tmp_path)
    assert counts == {"param_count": 1 + 12 + 4, "param_count_policy": 16, "checkpoint_step": 5}
