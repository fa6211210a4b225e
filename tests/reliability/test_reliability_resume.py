"""Fault injection, training loop: a corrupt latest checkpoint, a resume with a changed config, host counters
across a resume, metrics columns that appear late and a non-finite batch.

A separate process is also killed with SIGKILL inside a jitted chunk and resumed here. All in-process runs
share one hypergrid task (``test`` preset, 5 iterations per jitted chunk, checkpoints every 10), so the
training step compiles once for the module. The task's reward goes through a host callback that keeps counters
(like the energy bridge's ``host/energy/*``) and can be told to return NaN.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import get_config
from experiments.tasks import build_task
from hgfn_jax.gflownet.train import ConfigMismatchError, compiled, train_and_evaluate
from hgfn_jax.rundir.metrics_log import MetricsLog, RunHostStats

TOTAL = 30


class _HostCounter:
    """Counts every terminal state the reward sees, and the far-corner ones as a failure reason."""

    def __init__(self, side: int):
        self.side = side
        self.counts: collections.Counter = collections.Counter()
        self.poison = False

    def host(self, pos):
        pos = np.asarray(pos)
        self.counts["host_calls"] += 1
        self.counts["evaluated"] += len(pos)
        corner = int(np.sum(np.all(pos >= self.side - 2, axis=-1)))
        if corner:
            self.counts["failed/corner"] += corner
        return np.full(len(pos), np.nan if self.poison else 0.0, np.float32)

    def stats(self) -> dict:
        return {k: float(v) for k, v in self.counts.items()}


def _config(**train):
    cfg = get_config("hypergrid", "test")  # 5 iterations per chunk, checkpoints every 10
    cfg.train.num_iterations = TOTAL
    cfg.eval.num_samples = 100
    for k, v in train.items():
        cfg.train[k] = v
    return cfg


@pytest.fixture(scope="module")
def task():
    base = build_task(_config())
    counter = _HostCounter(base.env.side)

    def log_reward(state):
        log_r, terms = base.log_reward(state)
        extra = jax.pure_callback(counter.host, jax.ShapeDtypeStruct((), jnp.float32), state.pos,
                                  vmap_method="broadcast_all")
        return log_r + extra, terms

    return dataclasses.replace(base, log_reward=log_reward, host_stats=counter.stats,
                               extras={"counter": counter})


@pytest.fixture(scope="module")
def uninterrupted(task, tmp_path_factory):
    run = tmp_path_factory.mktemp("full")
    return run, train_and_evaluate(_config(), task, run, progress=False)


@pytest.fixture(scope="module")
def stopped_at_20(task, tmp_path_factory):
    """A run killed after 20 iterations (checkpoints 10 and 20 on disk)."""
    run = tmp_path_factory.mktemp("stopped")
    out = train_and_evaluate(_config(), task, run, stop_after=20, progress=False)
    assert out["summary"]["finished"] is False
    return run


def _assert_same_run(a, b, run_a, run_b):
    for x, y in zip(jax.tree.leaves(a["state"].params), jax.tree.leaves(b["state"].params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    np.testing.assert_array_equal(a["log_r"], b["log_r"])
    # byte for byte, host counters included
    assert (run_a / "metrics.csv").read_bytes() == (run_b / "metrics.csv").read_bytes()
    assert a["summary"]["host_stats"] == b["summary"]["host_stats"]


def _corrupt(step_dir, how: str):
    files = [p for p in step_dir.rglob("*") if p.is_file()]
    assert files
    for p in files:
        data = p.read_bytes()
        if how == "truncate":  # a full disk / a crash outside orbax's atomic write
            p.write_bytes(data[: len(data) // 2])
        else:
            p.write_bytes(b"\xff\x00garbage" + data[10:])


@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_corrupt_latest_checkpoint_resumes_from_the_previous_one(task, uninterrupted, stopped_at_20, tmp_path,
                                                                 capfd, how):
    run = tmp_path / "run"
    shutil.copytree(stopped_at_20, run)
    _corrupt(run / "checkpoints" / "20", how)
    capfd.readouterr()
    resumed = train_and_evaluate(_config(), task, run, progress=False)
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "checkpoint step 20" in warnings[0], err
    assert int(resumed["state"].step) == TOTAL
    assert (run / "corrupt_checkpoints" / "20").is_dir()  # kept for inspection, out of orbax's way
    full_run, full = uninterrupted
    _assert_same_run(full, resumed, full_run, run)


def test_kill_and_resume_keeps_host_counters_exact(task, uninterrupted, stopped_at_20, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(stopped_at_20, run)
    # killed after logging iterations 11-20 but before checkpoint 20 was written: resumes from 10
    shutil.rmtree(run / "checkpoints" / "20")
    task.extras["counter"].counts["evaluated"] += 12345  # counts of another run in this process must not leak
    resumed = train_and_evaluate(_config(), task, run, progress=False)
    full_run, full = uninterrupted
    _assert_same_run(full, resumed, full_run, run)
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"host/evaluated", "host/host_calls", "nonfinite_skipped"} <= set(header)
    assert full["summary"]["host_stats"]["evaluated"] == TOTAL * 64 + 100  # training batches + evaluation


def test_resume_with_another_config_is_refused_naming_the_fields(task, stopped_at_20, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(stopped_at_20, run)
    config_before = (run / "config.json").read_text()
    cfg = _config(lr=0.05)
    cfg.policy.hidden = (32,)
    t0 = time.perf_counter()
    with pytest.raises(ConfigMismatchError) as exc:
        train_and_evaluate(cfg, task, run, progress=False)
    msg = str(exc.value)
    assert "\n" not in msg and "train.lr" in msg and "policy.hidden" in msg and "--fresh" in msg
    assert "seed" not in msg and "num_iterations" not in msg
    assert (run / "config.json").read_text() == config_before  # the record still describes the weights

    # the command line: one line on stderr, exit status 2, refused before any task is built
    from experiments import train as cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["--exp", "hypergrid", "--preset", "test", "--workdir", str(run), "--set", "train.lr=0.05",
                  "--set", "train.num_iterations=30", "--no-progress"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.lr" in err and "Traceback" not in err
    assert time.perf_counter() - t0 < 5.0

    # fields a resume may change (run length, evaluation) are accepted and recorded
    cfg = _config(num_iterations=25)
    cfg.eval.num_samples = 50
    out = train_and_evaluate(cfg, task, run, stop_after=5, progress=False)
    assert int(out["state"].step) == 25
    assert '"num_iterations": 25' in (run / "config.json").read_text()



def test_a_reused_resettable_counter_gives_a_fresh_runs_columns():
    """A counter with ``reset`` (the battery tasks' energy bridge) starts every run from zero: a failure reason
    seen only by an earlier run in the same process is no column until it occurs again (a fresh process's run
    and a reused task's run write the same metrics.csv)."""
    counts = {"host_calls": 7.0, "failed/too_dense": 3.0}  # left by an earlier run

    def fn():
        return dict(counts)

    def reset():
        counts.clear()
        counts["host_calls"] = 0.0

    fn.reset = reset
    stats = RunHostStats(fn, {})
    assert stats() == {"host_calls": 0.0}
    counts["host_calls"] += 2
    assert stats() == {"host_calls": 2.0}
    counts["failed/too_dense"] = 1.0
    assert stats() == {"failed/too_dense": 1.0, "host_calls": 2.0}
    # resumed from a row: the logged counts continue
    assert RunHostStats(fn, {"host/host_calls": 5.0})() == {"host_calls": 5.0}
    # a counter that cannot be reset: what an earlier run left shows only once it changes
    left = collections.Counter({"host_calls": 4, "failed/corner": 2})
    stats = RunHostStats(lambda: dict(left), {})
    assert stats() == {}
    left["host_calls"] += 1
    assert stats() == {"host_calls": 1.0}
    left["failed/corner"] += 3
    assert stats() == {"failed/corner": 3.0, "host_calls": 1.0}

def test_metrics_columns_of_keys_that_appear_late(tmp_path):
    log = MetricsLog(tmp_path, 0)
    log.add(1, {"loss": 1.0})
    log.add(2, {"loss": 2.0, "host/failed/huge_cell": 1.0})
    log.add(3, {"loss": 3.0, "host/failed/huge_cell": 2.0, "host/failed/no_bonds": 5.0})
    log.close()
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["host/failed/huge_cell"] for r in rows] == ["", "1.0", "2.0"]
    assert rows[2]["host/failed/no_bonds"] == "5.0"
    # truncating to step 1 keeps only the columns that step uses; the late ones come back when they reappear
    log = MetricsLog(tmp_path, 1)
    log.close()
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["step,loss", "1,1.0"]


def test_nonfinite_loss_skips_the_update(task):
    init, jit_chunk, _, _ = compiled(_config(), task)
    ts = init(jax.random.PRNGKey(0))
    counter = task.extras["counter"]
    counter.poison = True  # every reward NaN: loss and gradients NaN
    try:
        poisoned, metrics = jit_chunk(ts, 5)
    finally:
        counter.poison = False
    np.testing.assert_array_equal(np.asarray(metrics["nonfinite_skipped"]), np.ones(5))
    for a, b in zip(jax.tree.leaves((ts.params, ts.opt_state)), jax.tree.leaves((poisoned.params,
                                                                                 poisoned.opt_state)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(poisoned.step) == 5  # the step and the key advance: the next batch is a new one
    healthy, metrics = jit_chunk(poisoned, 5)
    assert np.all(np.asarray(metrics["nonfinite_skipped"]) == 0)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(healthy.params))
    assert not np.array_equal(np.asarray(healthy.params["log_z"]), np.asarray(ts.params["log_z"]))


_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import jax, jax.numpy as jnp
from test_reliability_resume import _config, _HostCounter
from experiments.tasks import build_task
from hgfn_jax.gflownet.train import train_and_evaluate
import dataclasses

base = build_task(_config())
counter = _HostCounter(base.env.side)
real = counter.host

def host(pos):
    if counter.counts["host_calls"] == 12:  # inside the jitted chunk of iterations 11-15, after checkpoint 10
        os.kill(os.getpid(), signal.SIGKILL)
    return real(pos)

def log_reward(state):
    log_r, terms = base.log_reward(state)
    return log_r + jax.pure_callback(host, jax.ShapeDtypeStruct((), jnp.float32), state.pos,
                                     vmap_method="broadcast_all"), terms

task = dataclasses.replace(base, log_reward=log_reward, host_stats=counter.stats)
train_and_evaluate(_config(), task, {run!r}, progress=False)
"""


def test_kill_9_inside_a_jitted_step_resumes_exactly(task, uninterrupted, tmp_path):
    """A real SIGKILL (no clean-up of any kind) in the middle of a jitted chunk, in a separate process."""
    import pathlib
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    script = _KILLED_RUN.format(tests=str(pathlib.Path(__file__).parent), run=str(run))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 10  # rows 1-10; 11-15 died with the process
    resumed = train_and_evaluate(_config(), task, run, progress=False)
    full_run, full = uninterrupted
    _assert_same_run(full, resumed, full_run, run)


_KILLED_DURING_WRITE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import orbax.checkpoint as ocp
import hgfn_jax.gflownet.train as T
from test_reliability_resume import _config, _HostCounter
from experiments.tasks import build_task
import dataclasses, jax, jax.numpy as jnp

base = build_task(_config())
counter = _HostCounter(base.env.side)

def log_reward(state):
    log_r, terms = base.log_reward(state)
    return log_r + jax.pure_callback(counter.host, jax.ShapeDtypeStruct((), jnp.float32), state.pos,
                                     vmap_method="broadcast_all"), terms

real_save = T.save_checkpoint

def save(mngr, ts):
    if int(ts.step) == 20:  # start orbax's (asynchronous) write of checkpoint 20, then die inside it
        mngr.save(int(ts.step), args=ocp.args.StandardSave(ts), force=True)
        os.kill(os.getpid(), signal.SIGKILL)
    real_save(mngr, ts)

T.save_checkpoint = save
task = dataclasses.replace(base, log_reward=log_reward, host_stats=counter.stats)
T.train_and_evaluate(_config(), task, {run!r}, progress=False)
"""


def test_kill_9_during_a_checkpoint_write_resumes_exactly(task, uninterrupted, tmp_path):
    """SIGKILL while orbax writes checkpoint 20: the resume starts from a good checkpoint (10) and ends equal to
    the uninterrupted run, metrics.csv byte for byte."""
    import pathlib
    import signal
    import subprocess
    import sys

    run = tmp_path / "run"
    script = _KILLED_DURING_WRITE.format(tests=str(pathlib.Path(__file__).parent), run=str(run))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resumed = train_and_evaluate(_config(), task, run, progress=False)
    full_run, full = uninterrupted
    _assert_same_run(full, resumed, full_run, run)
