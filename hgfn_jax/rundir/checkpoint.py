"""Run-directory state of a training loop: orbax checkpoints (with the skip-and-move-aside rule for unreadable
ones) and the resume check against the recorded ``config.json``.

Used by the GFlowNet loop (``gflownet.train``) and the PGCGM loop (``gan.train``). Reliability rules:

- an unreadable checkpoint is moved to ``corrupt_checkpoints/`` with a warning and the previous one is used;
- a resume whose config differs from the recorded ``config.json`` (outside ``RESUME_MAY_CHANGE``) is refused with
  the fields named (:class:`ConfigMismatchError`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _checkpoint_manager(workdir: Path, max_to_keep: int = 2):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        (workdir / "checkpoints").resolve(),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False),
    )


def save_checkpoint(mngr, ts) -> None:
    """Saves the state PyTree ``ts`` (it must have an integer ``step``) at its step, synchronously."""
    import orbax.checkpoint as ocp

    mngr.save(int(ts.step), args=ocp.args.StandardSave(ts), force=True)
    mngr.wait_until_finished()


def restore_checkpoint(mngr, template, step: int | None = None):
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


def short_error(exc: BaseException, n: int = 160) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:n]}{'...' if len(text) > n else ''}"


def restore_latest_good(workdir: Path, template):
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
            print(f"warning: checkpoint step {step} in {workdir} cannot be restored ({short_error(exc)}); moved it "
                  f"to {dest} and trying the previous checkpoint", file=sys.stderr, flush=True)
            mngr.close()
            mngr = _checkpoint_manager(workdir)  # a fresh manager: orbax may cache the bad step's metadata
    return mngr, template, 0


class ConfigMismatchError(ValueError):
    """A run directory holds a run trained with another config."""


# Fields a resume may change (everything else must equal the recorded config): the run length and the host
# loop's chunking / checkpoint cadence, whether visited.jsonl is recorded (a logging switch: a run recorded
# without it resumes with it, its stream starting at the restored step), the device count (same program, same
# results: gflownet.sharding), and the evaluation that follows training.
RESUME_MAY_CHANGE = tuple(f"train.{k}" for k in ("num_iterations", "steps_per_call", "checkpoint_every",
                                                  "record_visited", "devices", "diagnostics_every",
                                                  "diagnostics_samples")) + ("eval",)


# Fields added to the configs after runs were recorded with them absent: an absent field in a recorded config.json
# compares as this value (the behaviour those runs had), so adding a field does not orphan older run directories.
RESUME_DEFAULTS = {"train.loss": "tb", "train.subtb_lambda": 0.9, "train.flow_hidden": [64, 64],
                   "train.lr_flow": None}
# replay buffer and local search (gflownet.offpolicy), off
RESUME_DEFAULTS.update({"train.replay.capacity": 0, "train.replay.fraction": 0.5, "train.replay.prioritized": False,
                        "train.replay.beta": 1.0, "train.local_search.enabled": False, "train.local_search.k": 2,
                        "train.local_search.n_iters": 1, "train.local_search.accept": "greedy"})


def config_json(config) -> str:
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
    # A GFlowNet training config (one with train.lr_z) that predates the objective fields holds their defaults;
    # filled on both sides, so a current config built without them (a test's or a task's own) compares equal too.
    if "train.lr_z" in a:
        a = {**RESUME_DEFAULTS, **a}
    if "train.lr_z" in b:
        b = {**RESUME_DEFAULTS, **b}
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
        raise ConfigMismatchError(f"cannot resume {workdir}: its config.json is unreadable ({short_error(exc, 80)}); "
                                  "start over with --fresh or use another --workdir") from None
    diffs = config_differences(saved, json.loads(config_json(config)))
    if diffs:
        fmt = lambda v: "(absent)" if not isinstance(v, (str, int, float, bool, list, type(None))) else repr(v)  # noqa: E731
        what = ", ".join(f"{k} ({fmt(a)[:40]} -> {fmt(b)[:40]})" for k, a, b in diffs)
        raise ConfigMismatchError(f"cannot resume {workdir}: it was trained with another config; differing "
                                  f"fields: {what}. Start over with --fresh or use another --workdir")
    return True
