"""Cost metrics (SHAFT Table 6): parameter count and seconds per sample, read from a run directory.

What a run directory holds today (``experiments.train``): ``config.json`` (``train.batch_size``,
``train.num_iterations``, ``eval.num_samples``), ``metrics.csv`` (per logged step: losses and reward terms, no
wall time), ``summary.json`` (``iterations``, ``train_seconds_this_call``, ``num_samples``) and orbax
``checkpoints/<step>/default``. From these:

- ``param_count``: the sizes of the ``params`` leaves in the newest checkpoint's metadata (shapes only, nothing
  restored), ``param_count_policy`` without log Z; ``summary.json["param_count"]`` wins when the loop records it;
- ``train_seconds_per_trajectory``: ``train_seconds_this_call / (iterations * batch_size)`` - only right for a run
  that was not resumed (the field is per call);
- ``sample_seconds_per_sample``: needs ``summary.json["sample_seconds"]`` (see ``MISSING``); absent today.

``MISSING`` says exactly what the training loop should add to ``summary.json`` for the rest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

#: summary.json fields the training loop should record (absent in today's runs).
MISSING = {
    "param_count": "int: total trainable parameters (policy + log Z), counted once after init",
    "sample_seconds": "float: wall seconds of the final sampling of eval.num_samples terminal states (after the "
                      "first, compiling call; reward evaluation excluded), with sample_compile_seconds apart",
    "sample_compile_seconds": "float: seconds of the first (tracing + compiling) sampling call",
    "train_seconds_total": "float: training wall seconds summed over every resumed call (train_seconds_this_call "
                           "covers one call only)",
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
    iters, secs = summary.get("iterations"), summary.get("train_seconds_total", summary.get("train_seconds_this_call"))
    batch = config.get("train", {}).get("batch_size")
    out["train_seconds"] = secs
    out["train_seconds_per_trajectory"] = (float(secs) / (int(iters) * int(batch))
                                           if secs and iters and batch else None)
    n = summary.get("num_samples") or config.get("eval", {}).get("num_samples")
    ss = summary.get("sample_seconds")
    out["sample_seconds_per_sample"] = float(ss) / int(n) if ss is not None and n else None
    out["samples_per_second"] = (int(n) / float(ss) if ss and n and not math.isclose(float(ss), 0.0) else None)
    out["missing"] = [k for k in MISSING if k not in summary]
    return out
