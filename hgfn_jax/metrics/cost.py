"""Cost metrics (SHAFT Table 6): parameter count and seconds per sample, read from a run directory.

What a run directory holds (``experiments.train``): ``config.json`` (``train.batch_size``), ``summary.json``
(``iterations``, ``iterations_this_call``, ``train_seconds_this_call``, ``param_count``,
``sample_seconds_per_sample``, ``num_samples``) and orbax ``checkpoints/<step>/default``. From these:

- ``param_count``: ``summary.json["param_count"]`` (policy + log Z), else the sizes of the ``params`` leaves in the
  newest checkpoint's metadata (shapes only, nothing restored), ``param_count_policy`` without log Z;
- ``train_seconds_per_trajectory``: ``train_seconds_this_call / (iterations_this_call * batch_size)``: the last
  call's rate, right for a resumed run too (its first chunk's compilation included). Run directories written
  before ``iterations_this_call`` existed: ``iterations`` in its place, right only when not resumed;
- ``sample_seconds_per_sample``: one warm sampling batch after training, timed apart from the reward (or the
  older ``sample_seconds`` over ``num_samples``).

``MISSING`` names the fields a run directory lacks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

#: summary.json fields the cost figures read (older run directories lack some).
MISSING = {
    "param_count": "int: total trainable parameters (policy + log Z), counted once after training",
    "sample_seconds_per_sample": "float: wall seconds per sample of one warm sampling batch, reward excluded",
    "iterations_this_call": "int: iterations trained by the call that wrote summary.json (a resumed run's rest)",
}


def checkpoint_param_counts(run_dir: str | Path) -> dict[str, int] | None:
    """{"param_count", "param_count_policy"} from the newest checkpoint's metadata, or None."""
    ckpts = Path(run_dir) / "checkpoints"
    steps = sorted((int(p.name) for p in ckpts.iterdir() if p.name.isdigit()), reverse=True) if ckpts.is_dir() else []
    for step in steps:
        try:
            import jax
            import orbax.checkpoint as ocp

            meta = ocp.StandardCheckpointer().metadata(ckpts / str(step) / "default")
            tree = getattr(meta, "item_metadata", meta)
            leaves = jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))
        except Exception:  # noqa: BLE001 - an unreadable checkpoint: try the previous one
            continue
        total = policy = 0
        for path, leaf in leaves:
            key = jax.tree_util.keystr(path)
            if key.startswith("['params']") and hasattr(leaf, "shape"):
                size = int(np.prod(leaf.shape))
                total += size
                policy += size if "log_z" not in key else 0
        if total:
            return {"param_count": total, "param_count_policy": policy, "checkpoint_step": step}
    return None


def cost_metrics(run_dir: str | Path) -> dict:
    """Cost figures of a run directory, each None where the run does not record it; ``missing`` lists the
    summary.json fields (``MISSING``) the training loop did not write."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    out: dict = {"param_count": summary.get("param_count"), "param_count_source": "summary.json"}
    if out["param_count"] is None:
        counts = checkpoint_param_counts(run_dir)
        out.update(counts or {})
        out["param_count_source"] = f"checkpoint {counts['checkpoint_step']} metadata" if counts else None
    iters = summary.get("iterations_this_call", summary.get("iterations"))
    secs = summary.get("train_seconds_this_call")
    batch = config.get("train", {}).get("batch_size")
    out["train_seconds"] = secs
    out["train_iterations_timed"] = iters
    out["train_seconds_per_trajectory"] = (float(secs) / (int(iters) * int(batch))
                                           if secs and iters and batch else None)
    per = summary.get("sample_seconds_per_sample")
    if per is None and summary.get("sample_seconds") is not None:
        n = summary.get("num_samples") or config.get("eval", {}).get("num_samples")
        per = float(summary["sample_seconds"]) / int(n) if n else None
    out["sample_seconds_per_sample"] = float(per) if per is not None else None
    out["samples_per_second"] = 1.0 / per if per and not math.isclose(float(per), 0.0) else None
    out["missing"] = [k for k in MISSING if k not in summary]
    return out
