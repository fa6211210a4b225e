"""The one sampling loop: ``n`` terminal states drawn in batches (the batch is a compiled shape), batch ``j``
from the key ``fold_in(key, j * batch)``, moved to the host and cut to ``n``; optionally the reward of each
batch on the device before it leaves (so a large evaluation never holds all ``n`` states on the device)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np


class Samples(NamedTuple):
    final: Any  # terminal states, PyTree of numpy arrays with leading [n]
    log_r: np.ndarray | None  # [n] when a reward was given
    terms: dict | None  # reward terms, each [n], when a reward was given


def _concat(xs: list, n: int):
    return jax.tree.map(lambda *a: np.concatenate(a)[:n], *xs)


def sample_batches(draw: Callable[[jax.Array], Any], key: jax.Array, n: int, batch: int,
                   log_reward: Callable[[Any], tuple[Any, dict]] | None = None, progress: bool = False,
                   desc: str = "sampling") -> Samples:
    """``draw(key) -> terminal states [batch, ...]`` (jit it; e.g. ``lambda k: sample(params, k, batch).final``)
    called ``ceil(n / batch)`` times; ``log_reward(states) -> (log_r [batch], terms)`` (batched, jitted)
    evaluated per batch when given."""
    from tqdm.auto import tqdm

    finals, log_rs, term_list = [], [], []
    for i in tqdm(range(0, n, batch), desc=desc, disable=not progress):
        final = draw(jax.random.fold_in(key, i))
        if log_reward is not None:
            lr_, terms = log_reward(final)
            log_rs.append(np.asarray(lr_))
            term_list.append(jax.device_get(terms))
        finals.append(jax.device_get(final))
    if log_reward is None:
        return Samples(_concat(finals, n), None, None)
    return Samples(_concat(finals, n), np.concatenate(log_rs)[:n], _concat(term_list, n))
