"""One training loop for every GFlowNet environment.

Two entry points over the same pure update:
- ``make_train(config, task)`` returns pure functions (purejaxrl style): ``init(rng) -> TrainState``,
  ``update(ts) -> (ts, metrics)`` and ``train(rng) -> (ts, metrics)`` (the whole run in one ``lax.scan``; vmap it
  over seeds and hyper-parameters, see ``experiments/sweep.py``).
- ``train_and_evaluate(config, workdir)`` runs ``update`` in jitted chunks with a progress bar, CSV and TensorBoard
  logs, orbax checkpoints and exact resume, then samples the trained model and hands the samples to the task's
  evaluation (plots, CIF/records).

Reliability: an unreadable checkpoint is moved to ``corrupt_checkpoints/`` with a warning and the previous one
is used; a resume whose config differs from the recorded ``config.json`` (outside ``RESUME_MAY_CHANGE``) is refused
with the fields named (:class:`ConfigMismatchError`); ``metrics.csv`` after a kill and resume equals the
uninterrupted run's byte for byte, host counters included; an update with a non-finite loss or gradient is
skipped (parameters and optimiser state kept) and flagged in the ``nonfinite_skipped`` metric.

Optimisation (paper 000 Table 6): Adam on the policy (lr 1e-4) and on log Z with its own learning rate (0.1).
Learning rates are injected hyper-parameters (``optax.inject_hyperparams``) so a sweep can vmap over them.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from hgfn_jax.gflownet.env import Environment, Exploration
from hgfn_jax.gflownet.losses import trajectory_balance_residual
from hgfn_jax.gflownet.rollout import Trajectory, init_states, rollout
from hgfn_jax.policies.mlp import Policy

# log_reward(terminal_state) -> (log_r [], terms: dict[str, []]) on ONE state; the train step vmaps it.
LogReward = Callable[[Any], tuple[jnp.ndarray, dict[str, jnp.ndarray]]]


@dataclass(frozen=True)
class Task:
    """Everything an experiment plugs into the shared loop."""

    name: str
    env: Environment
    policy: Policy
    log_reward: LogReward
    # Host-side evaluation of the trained sampler: evaluate(samples, log_r, terms, workdir) -> summary dict.
    evaluate: Callable[..., dict] | None = None
    # Host-side COUNTERS to log (e.g. energy-model failures from the host-callback bridge): additive counts that
    # only grow; the loop logs them per run (minus their value at the call's start, plus the restored step's row
    # on a resume), so they must not be rates or other non-additive values.
    host_stats: Callable[[], dict] | None = None
    extras: dict = field(default_factory=dict)


@struct.dataclass
class TrainState:
    params: Any  # {"policy": policy params, "log_z": [] float32}
    opt_state: Any  # optax state (holds the injected learning rates)
    key: jax.Array  # [2] uint32 PRNG key
    step: jnp.ndarray  # [] int32: completed iterations


def make_optimizer(lr: float | jnp.ndarray, lr_z: float | jnp.ndarray, grad_clip: float = 0.0):
    def adam(learning_rate):
        tx = optax.adam(learning_rate)
        return optax.chain(optax.clip_by_global_norm(grad_clip), tx) if grad_clip > 0 else tx

    return optax.multi_transform(
        {
            "policy": optax.inject_hyperparams(adam)(learning_rate=lr),
            "log_z": optax.inject_hyperparams(adam)(learning_rate=lr_z),
        },
        {"policy": "policy", "log_z": "log_z"},
    )


def exploration_from(cfg) -> Exploration:
    return Exploration.make(float(cfg.epsilon), float(cfg.get("temperature", 1.0)))


def make_train(config, task: Task):
    """Pure functions of the run. ``config.train`` holds batch_size, lr, lr_z, num_iterations, epsilon, ..."""
    tc = config.train
    env, policy = task.env, task.policy
    batch = int(tc.batch_size)
    explore = exploration_from(tc)
    v_reward = jax.vmap(task.log_reward)

    def init(rng, lr=None, lr_z=None):
        k_init, k_run = jax.random.split(rng)
        example = init_states(env, 2)
        # jitted: eager Flax init of a graph policy dispatches (and compiles) hundreds of small ops, ~1 min
        params = {"policy": jax.jit(policy.init)(k_init, example),
                  "log_z": jnp.asarray(tc.get("init_log_z", 0.0), jnp.float32)}
        tx = make_optimizer(tc.lr if lr is None else lr, tc.lr_z if lr_z is None else lr_z, tc.get("grad_clip", 0.0))
        return TrainState(params=params, opt_state=tx.init(params), key=k_run, step=jnp.asarray(0, jnp.int32))

    tx_static = make_optimizer(tc.lr, tc.lr_z, tc.get("grad_clip", 0.0))  # transform structure; lrs live in state

    def loss_fn(params, key):
        traj: Trajectory = rollout(key, env, policy.apply, params["policy"], batch, explore)
        log_r, terms = v_reward(jax.lax.stop_gradient(traj.final))
        log_r = jax.lax.stop_gradient(log_r)
        resid = trajectory_balance_residual(params["log_z"], traj, log_r)
        loss = jnp.mean(jnp.square(resid))
        metrics = {
            "loss": loss,
            "log_z": params["log_z"],
            "log_reward_mean": jnp.mean(log_r),
            "log_reward_max": jnp.max(log_r),
            "traj_len_mean": jnp.mean(traj.length.astype(jnp.float32)),
            "not_done_frac": jnp.mean((~traj.done).astype(jnp.float32)),
        }
        metrics.update({f"reward/{k}": jnp.mean(v.astype(jnp.float32)) for k, v in terms.items()})
        return loss, metrics

    def update(ts: TrainState):
        key, k_roll = jax.random.split(ts.key)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.params, k_roll)
        updates, opt_state = tx_static.update(grads, ts.opt_state, ts.params)
        params = optax.apply_updates(ts.params, updates)
        # Non-finite guard: a NaN/inf loss or gradient (one pathological batch) must not poison the weights or
        # Adam's moments for good. Such an update is skipped (params and optimiser state unchanged; the key and
        # the step still advance, so the next batch is a different one) and flagged in ``nonfinite_skipped``.
        finite = jnp.all(jnp.stack([jnp.isfinite(loss)] + [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        params = jax.tree.map(lambda new, old: jnp.where(finite, new, old), params, ts.params)
        opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), opt_state, ts.opt_state)
        metrics["nonfinite_skipped"] = (~finite).astype(jnp.float32)
        return TrainState(params=params, opt_state=opt_state, key=key, step=ts.step + 1), metrics

    def run_chunk(ts: TrainState, n: int):
        return jax.lax.scan(lambda s, _: update(s), ts, None, length=n)

    def train(rng, lr=None, lr_z=None):
        ts = init(rng, lr, lr_z)
        return run_chunk(ts, int(tc.num_iterations))

    def sample(params, key, n: int, explore_sample: Exploration | None = None) -> Trajectory:
        ex = Exploration.make(0.0, 1.0) if explore_sample is None else explore_sample
        return rollout(key, env, policy.apply, params["policy"], n, ex)

    return init, update, run_chunk, train, sample


# --------------------------------------------------------------------------------------------------------------
# The host loop: progress, logging, checkpoints, exact resume, evaluation.
# --------------------------------------------------------------------------------------------------------------


class _MetricsLog:
    """CSV + TensorBoard writer that can be truncated back to a restored step (exact resume).

    The CSV's columns are the union of every row's keys in order of first appearance (a failure reason that
    first shows up late gets its column; earlier rows leave it empty): when a row brings a new key the file is
    rewritten with the extended header. Truncating to a restored step keeps the rows up to it and the columns
    they use, so a resumed run writes the same bytes as an uninterrupted one.
    """

    def __init__(self, workdir: Path, resume_step: int):
        self.path = workdir / "metrics.csv"
        rows: list[dict] = []
        header: list[str] = []
        if self.path.exists() and resume_step > 0:
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                header = list(reader.fieldnames or [])
                for r in reader:
                    try:
                        step = int(r["step"])
                    except (KeyError, TypeError, ValueError):
                        continue  # a torn last line from a kill mid-write
                    if step <= resume_step:
                        rows.append({k: v for k, v in r.items() if k is not None and v not in (None, "")})
        self.rows = rows
        used = {k for r in rows for k in r}
        self.fieldnames: list[str] = [k for k in header if k in used]
        self._rewrite()
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def row_at(self, step: int) -> dict:
        """The logged row of ``step`` (strings as in the file), or ``{}``."""
        for r in reversed(self.rows):
            if int(r["step"]) == step:
                return r
        return {}

    def _rewrite(self):
        if not self.fieldnames:
            self.path.write_text("")
            return
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fieldnames)
            w.writeheader()
            w.writerows(self.rows)

    def add(self, step: int, metrics: dict):
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.rows.append(row)
        new = [k for k in row if k not in self.fieldnames]
        if new:
            self.fieldnames += new
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fieldnames).writerow(row)
        for k, v in row.items():
            if k != "step":
                self.tb.add_scalar(k, v, step)

    def close(self):
        self.tb.close()


def _checkpoint_manager(workdir: Path, max_to_keep: int = 2):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        (workdir / "checkpoints").resolve(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False),
    )


def save_checkpoint(mngr, ts: TrainState) -> None:
    import orbax.checkpoint as ocp

    mngr.save(int(ts.step), args=ocp.args.StandardSave(ts), force=True)
    mngr.wait_until_finished()


def restore_checkpoint(mngr, template: TrainState, step: int | None = None) -> TrainState:
    import orbax.checkpoint as ocp

    step = mngr.latest_step() if step is None else step
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.asarray(x).dtype), template)
    restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
    # orbax hands back device-committed arrays; a fresh state is uncommitted, and jit keys its cache on that, so
    # without this round trip every resumed run would recompile the training step (minutes for crystal policies).
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x)), restored)


def _step_dirs(workdir: Path) -> list[Path]:
    """Finished-looking checkpoint step folders (orbax names them by the step; temporaries carry a suffix)."""
    root = workdir / "checkpoints"
    return [p for p in root.iterdir() if p.is_dir() and p.name.isdigit()] if root.is_dir() else []


def _short(exc: BaseException, n: int = 160) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:n]}{'...' if len(text) > n else ''}"


def restore_latest_good(workdir: Path, template: TrainState):
    """``(manager, state, step)`` from the newest checkpoint that restores; ``state`` is ``template`` and ``step``
    0 when there is none.

    A checkpoint that fails to restore (files truncated or garbled by a full disk or a crash outside orbax's
    atomic write: ``JSONDecodeError``, tensorstore read errors, ...) is moved to ``workdir/corrupt_checkpoints/``
    (kept for inspection, out of orbax's way) with one warning naming it, and the previous one is tried.
    """
    mngr = _checkpoint_manager(workdir)
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            ts = restore_checkpoint(mngr, template, step)
            if int(ts.step) != int(step):
                raise ValueError(f"checkpoint {step} holds step {int(ts.step)}")
            return mngr, ts, int(step)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is skipped, none may block a resume
            bad = workdir / "checkpoints" / str(step)
            dest = workdir / "corrupt_checkpoints" / str(step)
            k = 1
            while dest.exists():
                dest, k = workdir / "corrupt_checkpoints" / f"{step}.{k}", k + 1
            if bad.exists():
                dest.parent.mkdir(parents=True, exist_ok=True)
                bad.rename(dest)
            print(f"warning: checkpoint step {step} in {workdir} cannot be restored ({_short(exc)}); moved it to "
                  f"{dest} and trying the previous checkpoint", file=sys.stderr, flush=True)
            mngr.close()
            mngr = _checkpoint_manager(workdir)  # a fresh manager: orbax may cache the bad step's metadata
    return mngr, template, 0


class ConfigMismatchError(ValueError):
    """A run directory holds a run trained with another config."""


# Fields a resume may change (everything else must equal the recorded config): the run length and the host
# loop's chunking / checkpoint cadence, and the evaluation that follows training.
RESUME_MAY_CHANGE = tuple(f"train.{k}" for k in ("num_iterations", "steps_per_call", "checkpoint_every")) + ("eval",)


def _config_json(config) -> str:
    if hasattr(config, "to_json_best_effort"):
        return config.to_json_best_effort(indent=2)
    return json.dumps(config, indent=2, default=str)


def _flatten(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """``[(field, saved value, current value)]`` for dotted fields that differ, except ``RESUME_MAY_CHANGE``."""
    a, b = _flatten(saved), _flatten(current)
    may = lambda k: any(k == f or k.startswith(f + ".") for f in RESUME_MAY_CHANGE)  # noqa: E731
    missing = object()
    return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if not may(k) and a.get(k, missing) != b.get(k, missing)]


def check_resume_config(config, workdir: str | Path) -> bool:
    """Whether ``workdir`` holds a run to resume; raises :class:`ConfigMismatchError` (one line: the fields that
    differ) when that run's recorded ``config.json`` differs from ``config`` outside ``RESUME_MAY_CHANGE``.
    Cheap (no orbax, no task): call it before building anything."""
    workdir = Path(workdir)
    if not _step_dirs(workdir):
        return False
    path = workdir / "config.json"
    if not path.exists():
        print(f"warning: {workdir} has checkpoints but no config.json; resuming without checking the config",
              file=sys.stderr, flush=True)
        return True
    try:
        saved = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigMismatchError(f"cannot resume {workdir}: its config.json is unreadable ({_short(exc, 80)}); "
                                  "start over with --fresh or use another --workdir") from None
    diffs = config_differences(saved, json.loads(_config_json(config)))
    if diffs:
        fmt = lambda v: "(absent)" if not isinstance(v, (str, int, float, bool, list, type(None))) else repr(v)  # noqa: E731
        what = ", ".join(f"{k} ({fmt(a)[:40]} -> {fmt(b)[:40]})" for k, a, b in diffs)
        raise ConfigMismatchError(f"cannot resume {workdir}: it was trained with another config; differing "
                                  f"fields: {what}. Start over with --fresh or use another --workdir")
    return True


# Config fields that only steer the host loop (not the compiled update): changing them reuses the compilation.
_HOST_ONLY_TRAIN_FIELDS = ("num_iterations", "steps_per_call", "checkpoint_every")


def _compiled(config, task: Task):
    """``(init, jit(run_chunk), jit(sample), jit(vmap(log_reward)))`` for ``task``, memoised on the task per
    compiled-relevant training config, so a resumed run (or a second run of the same task in one process) does
    not recompile: XLA does not persist executables with host callbacks (the energy-model bridge)."""
    train_cfg = {k: v for k, v in config.train.to_dict().items() if k not in _HOST_ONLY_TRAIN_FIELDS}
    key = json.dumps(train_cfg, sort_keys=True, default=str)
    cache = task.extras.setdefault("_compiled", {})
    if key not in cache:
        init, _, run_chunk, _, sample = make_train(config, task)
        cache[key] = (init, jax.jit(run_chunk, static_argnums=1), jax.jit(sample, static_argnums=2),
                      jax.jit(jax.vmap(task.log_reward)))
    return cache[key]


class _RunHostStats:
    """The task's host counters counted over the RUN, across resumes: ``offset`` (the counters logged at the
    restored step) plus what the counters gained since this call started. So ``host/*`` in ``metrics.csv``
    continue exactly after a resume (and a task reused for a second run does not carry the first one's counts).
    Keys are sorted, so a run and its resumed copy add the columns of new failure reasons in the same order."""

    def __init__(self, fn: Callable[[], dict], restored_row: dict):
        self.fn = fn
        self.base = {k: float(v) for k, v in fn().items()}
        self.offset = {k[len("host/"):]: float(v) for k, v in restored_row.items() if k.startswith("host/")}

    def __call__(self) -> dict:
        now = {k: float(v) for k, v in self.fn().items()}
        keys = sorted(set(now) | set(self.offset))
        return {k: self.offset.get(k, 0.0) + (now.get(k, 0.0) - self.base.get(k, 0.0)) for k in keys}


def train_and_evaluate(config, workdir: str | Path, task: Task | None = None, stop_after: int | None = None,
                       progress: bool = True) -> dict:
    """Trains ``task`` (built from ``config`` when not given) in ``workdir``; resumes from its latest checkpoint.

    ``stop_after`` ends this call after that many iterations (used to test kill-and-resume); the run can be
    continued by calling again with the same workdir.
    """
    from tqdm.auto import tqdm

    workdir = Path(workdir)
    tc = config.train
    chunk = int(tc.get("steps_per_call", 10))
    ckpt_every = int(tc.get("checkpoint_every", 100))
    if chunk < 1 or ckpt_every < 1 or ckpt_every % chunk:
        raise ValueError(f"train.checkpoint_every={ckpt_every} must be a positive multiple of "
                         f"train.steps_per_call={chunk}")
    total = int(tc.num_iterations)
    # Before anything slow: a run directory trained with another config is refused, never silently resumed.
    check_resume_config(config, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if task is None:
        from experiments.registry import build_task

        task = build_task(config)
    init, jit_chunk, sample_jit, v_reward = _compiled(config, task)

    ts = init(jax.random.PRNGKey(int(config.seed)))
    mngr, ts, start = restore_latest_good(workdir, ts)
    if start:
        print(f"resumed {workdir} from step {start}")
    # Written after the restore: a resume may only have changed RESUME_MAY_CHANGE fields, recorded here.
    (workdir / "config.json").write_text(_config_json(config))
    log = _MetricsLog(workdir, start)
    host_stats = _RunHostStats(task.host_stats, log.row_at(start)) if task.host_stats else None

    t0 = time.perf_counter()
    end = total if stop_after is None else min(total, start + stop_after)
    bar = tqdm(total=total, initial=start, desc=f"train {task.name}", disable=not progress, dynamic_ncols=True)
    step = start
    while step < end:
        n = min(chunk, end - step, ckpt_every - step % ckpt_every)
        ts, metrics = jit_chunk(ts, n)
        metrics = jax.device_get(metrics)
        host = host_stats() if host_stats else {}
        for i in range(n):
            row = {k: v[i] for k, v in metrics.items()}
            row.update({f"host/{k}": v for k, v in host.items()})
            log.add(step + i + 1, row)
        step += n
        bar.update(n)
        bar.set_postfix(loss=f"{metrics['loss'][-1]:.3g}", logZ=f"{metrics['log_z'][-1]:.3g}",
                        logR=f"{metrics['log_reward_mean'][-1]:.3g}")
        if step % ckpt_every == 0 or step == total:
            save_checkpoint(mngr, ts)
    bar.close()
    log.close()
    train_s = time.perf_counter() - t0
    summary: dict[str, Any] = {"task": task.name, "iterations": step, "train_seconds_this_call": train_s}
    if step < total:
        summary["finished"] = False
        return {"state": ts, "summary": summary}

    # ---- sampling and evaluation ----------------------------------------------------------------------------
    ev = config.get("eval", None)
    n_samples = int(ev.num_samples) if ev is not None else 1000
    sample_batch = int(ev.get("batch_size", 1000)) if ev is not None else 1000
    key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 10_000_019)
    finals, log_rs, term_list = [], [], []
    for i in tqdm(range(0, n_samples, sample_batch), desc="sampling", disable=not progress):
        traj = sample_jit(ts.params, jax.random.fold_in(key, i), sample_batch)
        lr_, terms = v_reward(traj.final)
        finals.append(jax.device_get(traj.final))
        log_rs.append(np.asarray(lr_))
        term_list.append(jax.device_get(terms))
    cat = lambda xs: jax.tree.map(lambda *a: np.concatenate(a)[:n_samples], *xs)
    samples, log_r, terms = cat(finals), np.concatenate(log_rs)[:n_samples], cat(term_list)
    summary.update({"num_samples": n_samples, "log_reward_mean": float(np.mean(log_r)),
                    "log_z": float(ts.params["log_z"])})
    if host_stats:
        summary["host_stats"] = host_stats()
    if task.evaluate is not None:
        summary.update(task.evaluate(samples=samples, log_r=log_r, terms=terms, workdir=workdir, state=ts,
                                     sample_fn=sample_jit, config=config))
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    return {"state": ts, "summary": summary, "samples": samples, "log_r": log_r, "terms": terms}


def _json_default(x):
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
