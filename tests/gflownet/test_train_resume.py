"""Kill-and-resume: a run stopped mid-way and resumed from its orbax checkpoint equals an uninterrupted run."""

import csv

import jax
import numpy as np

from experiments.configs import get_config
from experiments.tasks import build_task
from hgfn_jax.gflownet.train import train_and_evaluate


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_kill_and_resume_is_exact(tmp_path):
    cfg = get_config("hypergrid", "test")  # 20 iterations, chunks of 5, checkpoints every 10
    task = build_task(cfg)
    full = train_and_evaluate(cfg, task, tmp_path / "full", progress=False)

    part = tmp_path / "part"
    # "killed" after 13 iterations: the last checkpoint is at 10, iterations 11-13 are lost
    first = train_and_evaluate(cfg, task, part, stop_after=13, progress=False)
    assert first["summary"]["finished"] is False
    assert len(_rows(part / "metrics.csv")) == 13
    resumed = train_and_evaluate(cfg, task, part, progress=False)

    leaves_a = jax.tree.leaves(full["state"].params)
    leaves_b = jax.tree.leaves(resumed["state"].params)
    for a, b in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(full["state"].key), np.asarray(resumed["state"].key))
    # the metrics log is rewound to the checkpoint and continues without duplicate or missing steps
    rows_a, rows_b = _rows(tmp_path / "full" / "metrics.csv"), _rows(part / "metrics.csv")
    assert [r["step"] for r in rows_b] == [str(i) for i in range(1, 21)]
    assert [r["loss"] for r in rows_a] == [r["loss"] for r in rows_b]
    np.testing.assert_array_equal(full["log_r"], resumed["log_r"])
