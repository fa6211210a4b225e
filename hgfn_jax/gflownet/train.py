"""One training loop for every GFlowNet environment.

Two entry points over the same pure update:
- ``make_train(config, task)`` returns pure functions (purejaxrl style) as a :class:`TrainFns`:
  ``init(rng) -> TrainState``, ``update(ts) -> (ts, metrics)``, ``run_chunk(ts, n)``, ``train(rng) -> (ts,
  metrics)`` (the whole run in one ``lax.scan``; vmap it over seeds and hyper-parameters, see
  ``experiments/sweep.py``) and ``sample(params, key, n) -> Trajectory``.
- ``train_and_evaluate(config, task, workdir)`` runs ``update`` in jitted chunks with a progress bar, CSV and
  TensorBoard logs (``rundir.metrics_log``), orbax checkpoints and exact resume (``rundir.checkpoint``), then
  samples the trained model (``gflownet.sampling``) and hands the samples to the task's evaluation
  (:class:`EvalContext`). It takes a built :class:`Task`; building one from a config is the application's job
  (``experiments.tasks``): the library never imports its experiments.

Reliability: an unreadable checkpoint is moved to ``corrupt_checkpoints/`` with a warning and the previous one
is used; a resume whose config differs from the recorded ``config.json`` (outside ``RESUME_MAY_CHANGE``) is refused
with the fields named (:class:`ConfigMismatchError`); ``metrics.csv`` after a kill and resume equals the
uninterrupted run's byte for byte, host counters included; an update with a non-finite loss or gradient is
skipped (parameters and optimiser state kept) and flagged in the ``nonfinite_skipped`` metric.

Optimisation (paper 000 Table 6): Adam on the policy (lr 1e-4) and on log Z with its own learning rate (0.1).
Learning rates are injected hyper-parameters (``optax.inject_hyperparams``) so a sweep can vmap over them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hgfn_jax.gflownet.env import Exploration
from hgfn_jax.gflownet.objectives import check_task_supports, objective_from
from hgfn_jax.gflownet.objectives.flow import make_mlp_flow, state_log_flows
from hgfn_jax.gflownet.offpolicy import make_batch_source, replayed_count
from hgfn_jax.gflownet.offpolicy import settings as offpolicy_settings
from hgfn_jax.gflownet.rollout import Trajectory, init_states, rollout
from hgfn_jax.gflownet.sampling import sample_batches
from hgfn_jax.gflownet.sharding import check_divisible, data_mesh, replicate, shard_batch
from hgfn_jax.gflownet.task import (  # noqa: F401 - re-exported: the loop's types
    CompileCache,
    Compiled,
    EvalContext,
    LogReward,
    ReplayTrainState,
    SampleFn,
    Task,
    TrainState,
)
from hgfn_jax.gflownet.visited import KEYS as VISITED_KEYS
from hgfn_jax.gflownet.visited import LOG_REWARD as VISITED_LOG_REWARD
from hgfn_jax.gflownet.visited import VisitedLog, state_words
from hgfn_jax.rundir.checkpoint import (  # noqa: F401 - re-exported: the loop's run-directory API
    RESUME_MAY_CHANGE,
    ConfigMismatchError,
    check_resume_config,
    config_differences,
    config_json,
    restore_latest_good,
    save_checkpoint,
)
from hgfn_jax.rundir.metrics_log import MetricsLog, RunHostStats


def make_optimizer(lr: float | jnp.ndarray, lr_z: float | jnp.ndarray, grad_clip: float = 0.0,
                   lr_flow: float | jnp.ndarray | None = None):
    """Adam per parameter group. ``lr_flow`` (not None) adds the state-flow group ``"flow"`` (DB-family)."""
    def adam(learning_rate):
        tx = optax.adam(learning_rate)
        return optax.chain(optax.clip_by_global_norm(grad_clip), tx) if grad_clip > 0 else tx

    groups = {
        "policy": optax.inject_hyperparams(adam)(learning_rate=lr),
        "log_z": optax.inject_hyperparams(adam)(learning_rate=lr_z),
    }
    if lr_flow is not None:
        groups["flow"] = optax.inject_hyperparams(adam)(learning_rate=lr_flow)
    return optax.multi_transform(groups, {k: k for k in groups})


def exploration_from(cfg) -> Exploration:
    return Exploration.make(float(cfg.epsilon), float(cfg.get("temperature", 1.0)))


class TrainFns(NamedTuple):
    """The pure functions of a run (:func:`make_train`)."""

    init: Callable  # init(rng, lr=None, lr_z=None) -> TrainState
    update: Callable  # update(ts) -> (ts, metrics)
    run_chunk: Callable  # run_chunk(ts, n) -> (ts, metrics [n]); n static
    train: Callable  # train(rng, lr=None, lr_z=None) -> (ts, metrics [num_iterations])
    sample: Callable  # sample(params, key, n, explore=None) -> Trajectory; n static


def check_train_config(config, task: Task) -> None:
    """ValueError, one line naming the field, for a ``config.train`` this task cannot train with: the objective
    (name, lambda, what fldb / mdb need from the task) and the replay / local-search settings. Cheap: no tracing."""
    tc = config.train
    check_task_supports(objective_from(tc), task.env, task.state_log_reward)
    offpolicy_settings(tc, task.env)


def make_train(config, task: Task, record_visited: bool | None = None) -> TrainFns:
    """Pure functions of the run. ``config.train`` holds batch_size, lr, lr_z, num_iterations, epsilon, ...,
    ``loss`` (``tb`` | ``db`` | ``subtb`` | ``fldb`` | ``mdb``, default ``tb``; ``gflownet.objectives``),
    ``subtb_lambda`` (0.9),
    and for the state-flow objectives ``lr_flow`` (default ``lr``) and ``flow_hidden`` (default (64, 64)).
    ``record_visited`` (default ``train.record_visited``, False when absent): the update's metrics also carry the
    batch's terminal-state keys and log-rewards (``gflownet.visited``; [B, ...] per iteration, not scalars).
    ``devices`` (default 1): split each batch over that many devices (``gflownet.sharding``; same results).
    ``replay`` / ``local_search`` (``gflownet.offpolicy``; both off by default) switch the batch to fresh + searched
    + replayed trajectories; with a buffer the state is a :class:`ReplayTrainState`."""
    tc = config.train
    objective = objective_from(tc)  # a bad loss name / lambda fails here, before anything is traced
    env, policy = task.env, task.policy
    check_task_supports(objective, env, task.state_log_reward)
    batch = int(tc.batch_size)
    # train.devices > 1: the batch is split over a device mesh, parameters replicated (gflownet.sharding)
    mesh = data_mesh(tc.get("devices", 1))
    check_divisible(batch, mesh)
    explore = exploration_from(tc)
    v_reward = jax.vmap(task.log_reward)
    if record_visited is None:
        record_visited = bool(tc.get("record_visited", False))
    v_words = jax.vmap(state_words(task.terminal_key))
    flow = None
    if objective.needs_flow:
        flow = task.flow if task.flow is not None else make_mlp_flow(env, tuple(tc.get("flow_hidden", (64, 64))))
    # replay buffer / local search (gflownet.offpolicy): None when both are off, the plain on-policy batch
    offpolicy = make_batch_source(tc, env, policy, v_reward, explore, mesh)

    def _lr_flow(lr):
        # the flow network follows the policy's (possibly swept) learning rate unless train.lr_flow is set
        if flow is None:
            return None
        own = tc.get("lr_flow", None)  # None (the configs' default): follow lr
        return lr if own is None else own

    def init(rng, lr=None, lr_z=None):
        k_init, k_run = jax.random.split(rng)
        example = init_states(env, 2)
        # jitted: eager Flax init of a graph policy dispatches (and compiles) hundreds of small ops, ~1 min
        params = {"policy": jax.jit(policy.init)(k_init, example),
                  "log_z": jnp.asarray(tc.get("init_log_z", 0.0), jnp.float32)}
        if flow is not None:  # its own key derived from k_init: a TB run's keys and parameters are unchanged
            params["flow"] = jax.jit(flow.init)(jax.random.fold_in(k_init, 1), example)
        lr = tc.lr if lr is None else lr
        tx = make_optimizer(lr, tc.lr_z if lr_z is None else lr_z, tc.get("grad_clip", 0.0), _lr_flow(lr))
        ts = TrainState(params=params, opt_state=tx.init(params), key=k_run, step=jnp.asarray(0, jnp.int32))
        buffer = offpolicy[0]() if offpolicy else None
        return ts if buffer is None else ReplayTrainState(**vars(ts), replay=buffer)

    # transform structure; lrs live in state
    tx_static = make_optimizer(tc.lr, tc.lr_z, tc.get("grad_clip", 0.0), _lr_flow(tc.lr))

    def loss_fn(params, key, buffer=None):
        extra = {}
        n_visited = batch  # terminal states reached by this update (replayed ones were visited before)
        if offpolicy is None:
            start = None if mesh is None else shard_batch(init_states(env, batch), mesh)
            traj: Trajectory = rollout(key, env, policy.apply, params["policy"], batch, explore, start=start,
                                       return_states=objective.needs_states)
            log_r, terms = v_reward(jax.lax.stop_gradient(traj.final))
            log_r = jax.lax.stop_gradient(log_r)
        else:
            traj, log_r, terms, buffer, extra = offpolicy[1](params, key, buffer)
            n_visited = log_r.shape[0] - replayed_count(tc)  # fresh and searched come first, replayed last
        log_flow = state_log_flows(objective, traj, params, flow, env, policy.apply, task.state_log_reward)
        loss = objective.loss(params["log_z"], traj, log_r, log_flow)
        metrics = {
            "loss": loss,
            "log_z": params["log_z"],
            "log_reward_mean": jnp.mean(log_r),
            "log_reward_max": jnp.max(log_r),
            "traj_len_mean": jnp.mean(traj.length.astype(jnp.float32)),
            "not_done_frac": jnp.mean((~traj.done).astype(jnp.float32)),
        }
        metrics.update({f"reward/{k}": jnp.mean(v.astype(jnp.float32)) for k, v in terms.items()})
        if record_visited:  # per-state arrays, popped by the host loop into visited.jsonl (not metrics.csv)
            metrics[VISITED_KEYS] = v_words(jax.tree.map(lambda x: x[:n_visited], traj.final))
            metrics[VISITED_LOG_REWARD] = log_r[:n_visited]
        metrics.update(extra)
        return loss, (metrics, buffer)

    def update(ts: TrainState):
        key, k_roll = jax.random.split(ts.key)
        buffer = getattr(ts, "replay", None)
        (loss, (metrics, buffer)), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.params, k_roll, buffer)
        updates, opt_state = tx_static.update(grads, ts.opt_state, ts.params)
        params = optax.apply_updates(ts.params, updates)
        # Non-finite guard: a NaN/inf loss or gradient (one pathological batch) must not poison the weights or
        # Adam's moments for good. Such an update is skipped (params and optimiser state unchanged; the key and
        # the step still advance, so the next batch is a different one) and flagged in ``nonfinite_skipped``.
        finite = jnp.all(jnp.stack([jnp.isfinite(loss)] + [jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        params = jax.tree.map(lambda new, old: jnp.where(finite, new, old), params, ts.params)
        opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), opt_state, ts.opt_state)
        metrics["nonfinite_skipped"] = (~finite).astype(jnp.float32)
        new = {"replay": buffer} if buffer is not None else {}
        return ts.replace(params=params, opt_state=opt_state, key=key, step=ts.step + 1, **new), metrics

    def run_chunk(ts: TrainState, n: int):
        return jax.lax.scan(lambda s, _: update(s), ts, None, length=n)

    def train(rng, lr=None, lr_z=None):
        ts = init(rng, lr, lr_z)
        return run_chunk(ts, int(tc.num_iterations))

    def sample(params, key, n: int, explore_sample: Exploration | None = None) -> Trajectory:
        ex = Exploration.make(0.0, 1.0) if explore_sample is None else explore_sample
        start = None if mesh is None or n % mesh.size else shard_batch(init_states(env, n), mesh)
        return rollout(key, env, policy.apply, params["policy"], n, ex, start=start)

    return TrainFns(init, update, run_chunk, train, sample)


# Config fields that only steer the host loop (not the compiled update): changing them reuses the compilation.
_HOST_ONLY_TRAIN_FIELDS = ("num_iterations", "steps_per_call", "checkpoint_every", "diagnostics_every",
                           "diagnostics_samples")


def compiled(config, task: Task) -> Compiled:
    """The jitted functions of ``task``, kept in ``task.cache`` per compiled-relevant training config, so a
    resumed run (or a second run of the same task in one process) does not recompile: XLA does not persist
    executables with host callbacks (the energy-model bridge)."""
    train_cfg = {k: v for k, v in config.train.to_dict().items() if k not in _HOST_ONLY_TRAIN_FIELDS}
    key = json.dumps(train_cfg, sort_keys=True, default=str)
    entries = task.cache.entries
    if key not in entries:
        fns = make_train(config, task)
        mesh = data_mesh(config.train.get("devices", 1))  # train.devices > 1: the state lives on every device
        init = fns.init if mesh is None else (lambda rng, _i=fns.init, _m=mesh: replicate(_i(rng), _m))
        entries[key] = Compiled(init, jax.jit(fns.run_chunk, static_argnums=1),
                                jax.jit(fns.sample, static_argnums=2), jax.jit(jax.vmap(task.log_reward)))
    return entries[key]


def train_and_evaluate(config, task: Task, workdir: str | Path, stop_after: int | None = None,
                       progress: bool = True) -> dict:
    """Trains ``task`` in ``workdir``; resumes from its latest checkpoint.

    ``stop_after`` ends this call after that many iterations (used to test kill-and-resume); the run can be
    continued by calling again with the same workdir.
    """
    from tqdm.auto import tqdm

    workdir = Path(workdir)
    tc = config.train
    check_train_config(config, task)  # before the run directory is touched
    chunk = int(tc.get("steps_per_call", 10))
    ckpt_every = int(tc.get("checkpoint_every", 100))
    if chunk < 1 or ckpt_every < 1 or ckpt_every % chunk:
        raise ValueError(f"train.checkpoint_every={ckpt_every} must be a positive multiple of "
                         f"train.steps_per_call={chunk}")
    total = int(tc.num_iterations)
    # Before anything slow: a run directory trained with another config is refused, never silently resumed.
    check_resume_config(config, workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    init, jit_chunk, sample_jit, v_reward = compiled(config, task)

    ts = init_ts = init(jax.random.PRNGKey(int(config.seed)))
    mngr, ts, start = restore_latest_good(workdir, ts)
    ts = jax.tree.map(lambda r, x: jax.device_put(r, x.sharding), ts, init_ts)  # restored arrays placed like init's
    if start:
        print(f"resumed {workdir} from step {start}")
    # Written after the restore: a resume may only have changed RESUME_MAY_CHANGE fields, recorded here.
    (workdir / "config.json").write_text(config_json(config))
    log = MetricsLog(workdir, start)
    visited = VisitedLog(workdir, start, enabled=bool(tc.get("record_visited", False)))
    host_stats = RunHostStats(task.host_stats, log.row_at(start)) if task.host_stats else None
    # train.diagnostics_every > 0: gflownet.diagnostics (exact TV, log Z bounds) on the state after every such
    # iteration, as diag/* columns of that iteration's row (empty elsewhere). Its key depends on the seed and the
    # step only (never the training key), so a resumed run logs the same values.
    diag_every = int(tc.get("diagnostics_every", 0))
    if diag_every:
        from hgfn_jax.gflownet.diagnostics import make_diagnostics

        n_diag = int(tc.get("diagnostics_samples", 1024))
        if n_diag not in task.cache.diagnostics:  # built once per task and sample count (jitted inside)
            task.cache.diagnostics[n_diag] = make_diagnostics(task, n_diag)
        diag_fn = task.cache.diagnostics[n_diag]
        diag_key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 20_000_003)

    t0 = time.perf_counter()
    end = total if stop_after is None else min(total, start + stop_after)
    bar = tqdm(total=total, initial=start, desc=f"train {task.name}", disable=not progress, dynamic_ncols=True)
    step = start
    while step < end:
        n = min(chunk, end - step, ckpt_every - step % ckpt_every)
        if diag_every:
            n = min(n, diag_every - step % diag_every)
        ts, metrics = jit_chunk(ts, n)
        metrics = jax.device_get(metrics)
        visited.add(step + 1, metrics)  # pops the per-state arrays
        host = host_stats() if host_stats else {}
        diag = {}
        if diag_every and (step + n) % diag_every == 0:
            diag = jax.device_get(diag_fn(ts.params, jax.random.fold_in(diag_key, step + n)))
        for i in range(n):
            row = {k: v[i] for k, v in metrics.items()}
            row.update({f"host/{k}": v for k, v in host.items()})
            if i == n - 1:
                row.update({f"diag/{k}": diag[k] for k in sorted(diag)})
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
    # cost figures (SHAFT Table 6; metrics.cost): this call's wall seconds over this call's iterations, so a resumed
    # run's rate is right too; the parameter count includes log Z
    summary: dict[str, Any] = {"task": task.name, "iterations": step, "train_seconds_this_call": train_s,
                               "iterations_this_call": step - start,
                               "param_count": int(sum(np.size(x) for x in jax.tree.leaves(ts.params)))}
    if step < total:
        summary["finished"] = False
        return {"state": ts, "summary": summary}

    # ---- sampling and evaluation ----------------------------------------------------------------------------
    ev = config.get("eval", None)
    n_samples = int(ev.num_samples) if ev is not None else 1000
    sample_batch = int(ev.get("batch_size", 1000)) if ev is not None else 1000
    key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 10_000_019)
    samples, log_r, terms = sample_batches(lambda k: sample_jit(ts.params, k, sample_batch).final, key, n_samples,
                                           sample_batch, log_reward=v_reward, progress=progress)
    # sampling cost: one more batch, timed warm (the draws above compiled it), the reward not included
    t = time.perf_counter()
    jax.block_until_ready(sample_jit(ts.params, jax.random.fold_in(key, 2**31 - 1), sample_batch).final)
    summary.update({"num_samples": n_samples, "log_reward_mean": float(np.mean(log_r)),
                    "log_z": float(ts.params["log_z"]),
                    "sample_seconds_per_sample": (time.perf_counter() - t) / sample_batch})
    if host_stats:
        summary["host_stats"] = host_stats()
    if task.evaluate is not None:
        # written before the task's evaluation too, so evaluation code reading the run directory (the suite's cost
        # figures) sees this run's iterations and timing, never a previous call's; rewritten below with its results
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
        summary.update(task.evaluate(EvalContext(samples=samples, log_r=log_r, terms=terms, workdir=workdir,
                                                 state=ts, sample_fn=sample_jit, config=config)))
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    return {"state": ts, "summary": summary, "samples": samples, "log_r": log_r, "terms": terms}


def _json_default(x):
    if isinstance(x, (np.generic,)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
