"""Modes vs states visited (paper 000 Fig. 3): distinct high-reward terminal states found as training proceeds.

Input: the stream of terminal states the training loop visits, per iteration, as ``keys`` (one hashable
identity per state: an int64 hash of the canonical state, or a string such as the reduced formula + space group
+ rounded lattice) and ``rewards`` (or log-rewards with ``threshold`` on the same scale). A mode is a DISTINCT key
whose reward reached ``threshold`` at some visit (a key counts once, at its first high-reward visit).

Record format the training loop writes with ``train.record_visited`` (:mod:`hgfn_jax.gflownet.visited`, keys from
``Task.terminal_key``): ``RUN_DIR/visited.jsonl``, one JSON object per iteration,
``{"iteration": int, "keys": [str | int, ...], "log_reward": [float, ...]}`` with one entry per terminal state
of the training batch (all of them, in batch order; the same length). :func:`read_visited` reads it;
:func:`modes_curve` turns the stream into the figure's two axes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


def modes_curve(stream: Iterable[tuple[Sequence, Sequence[float]]], threshold: float) -> dict[str, np.ndarray]:
    """Per iteration: ``states_visited`` (cumulative terminal states, repeats included), ``distinct_states``
    (cumulative distinct keys) and ``modes`` (cumulative distinct keys with reward >= threshold)."""
    seen: set = set()
    modes: set = set()
    visited, distinct, n_modes = [], [], []
    total = 0
    for keys, rewards in stream:
        keys, rewards = list(keys), np.asarray(rewards, float)
        if len(keys) != len(rewards):
            raise ValueError(f"{len(keys)} keys but {len(rewards)} rewards in one iteration")
        total += len(keys)
        for k, r in zip(keys, rewards, strict=True):
            k = k.item() if isinstance(k, np.generic) else k
            seen.add(k)
            if r >= threshold:  # NaN never counts
                modes.add(k)
        visited.append(total)
        distinct.append(len(seen))
        n_modes.append(len(modes))
    return {"states_visited": np.asarray(visited, np.int64), "distinct_states": np.asarray(distinct, np.int64),
            "modes": np.asarray(n_modes, np.int64)}


def read_visited(path: str | Path) -> list[tuple[list, np.ndarray]]:
    """The ``visited.jsonl`` stream as (keys, log_reward) per iteration, in iteration order."""
    rows = []
    with Path(path).open() as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                rows.append((int(rec.get("iteration", len(rows))), rec["keys"], np.asarray(rec["log_reward"], float)))
    rows.sort(key=lambda r: r[0])
    return [(k, r) for _, k, r in rows]


def modes_at(curve: dict[str, np.ndarray], states: Sequence[int]) -> np.ndarray:
    """Modes found by the time ``states`` terminal states had been visited (step interpolation of the curve)."""
    idx = np.searchsorted(curve["states_visited"], np.asarray(states), side="right") - 1
    return np.where(idx >= 0, curve["modes"][np.clip(idx, 0, None)], 0)
