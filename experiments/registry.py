"""Builds the ``Task`` (environment, policy, reward, evaluation) an experiment config names in ``config.builder``."""

from __future__ import annotations

from collections.abc import Callable

from hgfn_jax.train import Task

_BUILDERS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        _BUILDERS[name] = fn
        return fn

    return deco


def build_task(config) -> Task:
    # Import for registration side effects (kept lazy: heavy modules load only when their task is used).
    from experiments import tasks  # noqa: F401

    if config.builder not in _BUILDERS:
        raise ValueError(f"unknown task builder {config.builder!r}; known: {sorted(_BUILDERS)}")
    return _BUILDERS[config.builder](config)
