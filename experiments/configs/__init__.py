"""Configs live here, one module per experiment, each with ``get_config(preset)`` for the presets
``default`` (small, minutes on a CPU), ``paper`` (the published settings) and ``test`` (seconds, for the suite)."""

from __future__ import annotations

import importlib
import pkgutil

import ml_collections

from hgfn_jax.gflownet.offpolicy import LOCAL_SEARCH_DEFAULTS, REPLAY_DEFAULTS

PRESETS = ("default", "paper", "test")
# The training objective of every GFlowNet experiment: --set train.loss=db | subtb (train.subtb_lambda) | fldb | mdb
# (the last two where the task supplies a reward at every state: hgfn_jax.gflownet.objectives), with the
# state-flow network's width and learning rate (None: the policy's lr). A run directory recorded before these
# fields existed resumes as if it held these values (hgfn_jax.rundir.checkpoint.RESUME_DEFAULTS).
OBJECTIVE_DEFAULTS = {"loss": "tb", "subtb_lambda": 0.9, "flow_hidden": (64, 64), "lr_flow": None}
# Replay buffer and local search (hgfn_jax.gflownet.offpolicy, off by default: --set train.replay.capacity=N,
# train.local_search.enabled=True); resumable from run directories recorded before them (RESUME_DEFAULTS).
# Training diagnostics (hgfn_jax.gflownet.diagnostics; off by default: --set train.diagnostics_every=N logs the exact
# TV of enumerable tasks and the log Z bounds into metrics.csv every N iterations). Host-side only: may change on
# a resume (RESUME_MAY_CHANGE).
DIAGNOSTICS_DEFAULTS = {"diagnostics_every": 0, "diagnostics_samples": 1024}
OFFPOLICY_DEFAULTS = {"replay": dict(REPLAY_DEFAULTS), "local_search": dict(LOCAL_SEARCH_DEFAULTS)}


def available() -> list[str]:
    import experiments.configs as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def get_config(exp: str, preset: str = "default"):
    if exp not in available():
        raise ValueError(f"unknown experiment {exp!r}; available: {', '.join(available())}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)}")
    cfg = importlib.import_module(f"experiments.configs.{exp}").get_config(preset)
    if "lr_z" in cfg.get("train", {}):  # a GFlowNet run: the objective is one --set away (hgfn_jax.gflownet.objectives)
        for key, value in OBJECTIVE_DEFAULTS.items():
            if key not in cfg.train:
                setattr(cfg.train, key, value)
        for key, value in DIAGNOSTICS_DEFAULTS.items():
            if key not in cfg.train:
                setattr(cfg.train, key, value)
        for key, value in OFFPOLICY_DEFAULTS.items():
            if key not in cfg.train:
                setattr(cfg.train, key, ml_collections.ConfigDict(value))
    cfg.exp = exp
    cfg.preset = preset
    return cfg
