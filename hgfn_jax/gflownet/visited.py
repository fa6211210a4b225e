"""``RUN_DIR/visited.jsonl``: the terminal states the training loop visits, for modes vs states visited (paper 000
Fig. 3, :mod:`hgfn_jax.metrics.modes`).

One JSON object per training iteration, ``{"iteration": step, "keys": [...], "log_reward": [...]}``, one entry per
terminal state of the training batch in batch order; ``step`` is 1-based, the ``step`` column of ``metrics.csv``.

Keys, exact and cheap (``train.record_visited``):
- in the jitted update, ``Task.terminal_key(state) -> [K]`` (any dtypes; default: every leaf of the state) is
  bit-cast to ``K'`` uint32 words per state (:func:`state_words`): no hashing on the device, no float rounding, so two
  terminal states get the same words iff their keyed fields are bit-identical;
- on the host, per chunk, each row of words becomes the key (:func:`host_keys`): the integer itself for one word,
  the words' big-endian hex for up to 4 words (exact), a 128-bit BLAKE2b digest of the bytes beyond that (a
  collision among 10^12 states has probability ~1e-15; spelt out in the report, not silent).

Exact resume (:class:`VisitedLog`): on a resume the file is cut back to the restored step (after the last line whose
iteration is <= it; a torn last line from a kill is dropped too), so a killed-and-resumed run writes the same bytes
as an uninterrupted one, like ``metrics.csv``. A fresh run (step 0) starts an empty file; a run with recording off
removes a fresh run directory's stale file so the evaluation never reads another run's stream.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# metrics entries of the update that carry the stream (popped by the host loop before metrics.csv)
KEYS = "visited/keys"  # [B, K] uint32 per iteration
LOG_REWARD = "visited/log_reward"  # [B] float32 per iteration
FILENAME = "visited.jsonl"


def _words(x: jnp.ndarray) -> jnp.ndarray:
    """The bits of ``x`` as a flat uint32 vector (bools and 8/16-bit types widened, 64-bit types split)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint32)
    elif x.dtype.itemsize < 4:
        x = x.astype(jnp.int32)
    if x.dtype != jnp.uint32:
        x = jax.lax.bitcast_convert_type(x, jnp.uint32)
    return x.reshape(-1)


def state_words(terminal_key: Callable[[Any], Any] | None) -> Callable[[Any], jnp.ndarray]:
    """ONE state -> [K] uint32: the bits of ``terminal_key(state)`` (a PyTree of arrays), of the whole state when
    ``terminal_key`` is None."""
    fn = terminal_key if terminal_key is not None else (lambda s: s)

    def words(state):
        leaves = jax.tree.leaves(fn(jax.lax.stop_gradient(state)))
        return jnp.concatenate([_words(x) for x in leaves])

    return words


def host_keys(words: np.ndarray) -> list:
    """[B, K] uint32 -> B JSON-able keys (int for K = 1, exact hex for K <= 4, 128-bit BLAKE2b hex beyond)."""
    words = np.ascontiguousarray(words, dtype=">u4")
    if words.shape[1] == 1:
        return [int(w) for w in words[:, 0]]
    if words.shape[1] <= 4:
        return [row.tobytes().hex() for row in words]
    return [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in words]


def truncate_to_step(path: Path, step: int) -> None:
    """Cuts ``path`` after the last complete line whose ``iteration`` is <= ``step`` (lines are in order)."""
    keep = 0
    with path.open("rb") as f:
        pos = 0
        for line in f:
            pos += len(line)
            if not line.endswith(b"\n"):
                break  # a torn last line from a kill mid-write
            try:
                it = int(json.loads(line)["iteration"])
            except (ValueError, KeyError, TypeError):
                break
            if it > step:
                break
            keep = pos
    with path.open("r+b") as f:
        f.truncate(keep)


class VisitedLog:
    """Appends the training batches' terminal keys and log-rewards to ``RUN_DIR/visited.jsonl`` per chunk."""

    def __init__(self, workdir: Path, resume_step: int, enabled: bool = True):
        self.path = Path(workdir) / FILENAME
        self.enabled = enabled
        if self.path.exists():
            if resume_step > 0:
                truncate_to_step(self.path, resume_step)  # kept even when disabled: the earlier part stays valid
            else:
                self.path.unlink()  # a fresh run: never extend (or leave behind) another run's stream
        if enabled:
            self.path.touch()

    def add(self, first_step: int, metrics: dict) -> None:
        """Pops the stream out of a chunk's host ``metrics`` ([n, ...] each) and appends its n lines."""
        keys, log_r = metrics.pop(KEYS, None), metrics.pop(LOG_REWARD, None)
        if keys is None or not self.enabled:
            return
        keys, log_r = np.asarray(keys), np.asarray(log_r)
        lines = [json.dumps({"iteration": first_step + i, "keys": host_keys(keys[i]),
                             "log_reward": log_r[i].astype(float).tolist()}) + "\n" for i in range(len(keys))]
        with self.path.open("a") as f:
            f.writelines(lines)
