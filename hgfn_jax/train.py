"""One training loop for every GFlowNet environment.

Two entry points over the same pure update:
- ``make_train(config, task)`` returns pure functions (purejaxrl style): ``init(rng) -> TrainState``,
  ``update(ts) -> (ts, metrics)`` and ``train(rng) -> (ts, metrics)`` (the whole run in one ``lax.scan``; vmap it
  over seeds and hyper-parameters, see ``experiments/sweep.py``).
- ``train_and_evaluate(config, workdir)`` runs ``update`` in jitted chunks with a progress bar, CSV and TensorBoard
  logs, orbax checkpoints and exact resume, then samples the trained model and hands the samples to the task's
  evaluation (plots, CIF/records).

Optimisation (paper 000 Table 6): Adam on the policy (lr 1e-4) and on log Z with its own learning rate (0.1).
Learning rates are injected hyper-parameters (``optax.inject_hyperparams``) so a sweep can vmap over them.
"""

from __future__ import annotations

import csv
import json
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
    # Host-side counters to log (e.g. energy-model failures from the host-callback bridge).
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
        params = {"policy": policy.init(k_init, example), "log_z": jnp.asarray(tc.get("init_log_z", 0.0), jnp.float32)}
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
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.params, k_roll)
        updates, opt_state = tx_static.update(grads, ts.opt_state, ts.params)
        params = optax.apply_updates(ts.params, updates)
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
    """CSV + TensorBoard writer that can be truncated back to a restored step (exact resume)."""

    def __init__(self, workdir: Path, resume_step: int):
        self.path = workdir / "metrics.csv"
        rows: list[dict] = []
        if self.path.exists() and resume_step > 0:
            with self.path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        self.rows = rows
        self.fieldnames: list[str] | None = list(rows[0].keys()) if rows else None
        self._rewrite()
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def _rewrite(self):
        if self.fieldnames is None:
            self.path.write_text("")
            return
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fieldnames)
            w.writeheader()
            w.writerows(self.rows)

    def add(self, step: int, metrics: dict):
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        if self.fieldnames is None:
            self.fieldnames = list(row.keys())
            self._rewrite()
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fieldnames, extrasaction="ignore").writerow(row)
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


def train_and_evaluate(config, workdir: str | Path, task: Task | None = None, stop_after: int | None = None,
                       progress: bool = True) -> dict:
    """Trains ``task`` (built from ``config`` when not given) in ``workdir``; resumes from its latest checkpoint.

    ``stop_after`` ends this call after that many iterations (used to test kill-and-resume); the run can be
    continued by calling again with the same workdir.
    """
    from tqdm.auto import tqdm

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if task is None:
        from experiments.registry import build_task

        task = build_task(config)
    tc = config.train
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) if hasattr(config, "to_json_best_effort")
                                          else json.dumps(config, indent=2, default=str))
    init, jit_chunk, sample_jit, v_reward = _compiled(config, task)
    chunk = int(tc.get("steps_per_call", 10))
    ckpt_every = int(tc.get("checkpoint_every", 100))
    if ckpt_every % chunk:
        raise ValueError(f"train.checkpoint_every={ckpt_every} must be a multiple of train.steps_per_call={chunk}")
    total = int(tc.num_iterations)

    ts = init(jax.random.PRNGKey(int(config.seed)))
    mngr = _checkpoint_manager(workdir)
    start = 0
    if mngr.latest_step() is not None:
        ts = restore_checkpoint(mngr, ts)
        start = int(ts.step)
        print(f"resumed {workdir} from step {start}")
    log = _MetricsLog(workdir, start)

    t0 = time.perf_counter()
    end = total if stop_after is None else min(total, start + stop_after)
    bar = tqdm(total=total, initial=start, desc=f"train {task.name}", disable=not progress, dynamic_ncols=True)
    step = start
    while step < end:
        n = min(chunk, end - step, ckpt_every - step % ckpt_every)
        ts, metrics = jit_chunk(ts, n)
        metrics = jax.device_get(metrics)
        host = task.host_stats() if task.host_stats else {}
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
    if task.host_stats:
        summary["host_stats"] = task.host_stats()
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
