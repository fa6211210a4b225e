"""Configs live here, one module per experiment, each with ``get_config(preset)`` for the presets
``default`` (small, minutes on a CPU), ``paper`` (the published settings) and ``test`` (seconds, for the suite)."""

from __future__ import annotations

import importlib
import pkgutil

PRESETS = ("default", "paper", "test")


def available() -> list[str]:
    import experiments.configs as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def get_config(exp: str, preset: str = "default"):
    if exp not in available():
        raise ValueError(f"unknown experiment {exp!r}; available: {', '.join(available())}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    cfg = importlib.import_module(f"experiments.configs.{exp}").get_config(preset)
    cfg.exp = exp
    cfg.preset = preset
    return cfg
