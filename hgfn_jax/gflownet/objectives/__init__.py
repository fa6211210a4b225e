"""GFlowNet training objectives over the shared :class:`~hgfn_jax.gflownet.rollout.Trajectory`, one module each
(torchgfn style): ``tb`` (trajectory balance), ``db`` (detailed balance), ``subtb`` (sub-trajectory balance,
lambda-weighted). ``common`` holds what DB and SubTB share (states, potentials, masking), ``flow`` the state-flow
head they need.

The training loop picks one by ``config.train.loss`` (``"tb"`` by default) through :func:`objective_from`, which
validates the config before anything is compiled. Not implemented (refused with the reason): ``"mdb"`` (modified
DB, Deleu et al. 2022: needs every state terminable and a reward at every state, which the environment contract
does not declare) and ``"fldb"`` (forward-looking DB, Pan et al. 2023: needs per-state intermediate energies that
no task supplies).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from hgfn_jax.gflownet.objectives.db import detailed_balance
from hgfn_jax.gflownet.objectives.subtb import subtrajectory_balance
from hgfn_jax.gflownet.objectives.tb import trajectory_balance

OBJECTIVES = ("tb", "db", "subtb")
_NOT_IMPLEMENTED = {
    "mdb": "modified DB needs every state terminable and R(s) at every state; the environment contract does not "
           "declare either",
    "fldb": "forward-looking DB needs per-state intermediate energies, which no task supplies",
}


@dataclass(frozen=True)
class Objective:
    """``loss(log_z, traj, log_r, log_flow)``; ``log_flow [B, T + 1]`` is None when ``needs_flow`` is False."""

    name: str
    needs_flow: bool
    loss: Callable


def objective_from(train_cfg) -> Objective:
    """The objective of ``config.train`` (``loss``, ``subtb_lambda``); ValueError on a bad config."""
    name = str(train_cfg.get("loss", "tb")).lower()
    if name in _NOT_IMPLEMENTED:
        raise ValueError(f"train.loss={name!r} is not implemented: {_NOT_IMPLEMENTED[name]} "
                         f"(available: {', '.join(OBJECTIVES)})")
    if name not in OBJECTIVES:
        raise ValueError(f"unknown train.loss={name!r}; choose one of {', '.join(OBJECTIVES)}")
    if name == "tb":
        return Objective("tb", False, lambda log_z, traj, log_r, log_flow: trajectory_balance(log_z, traj, log_r))
    if name == "db":
        return Objective("db", True, detailed_balance)
    lam = train_cfg.get("subtb_lambda", 0.9)
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"train.subtb_lambda must be a number > 0, got {lam!r}") from None
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"train.subtb_lambda must be a finite number > 0, got {lam}")
    return Objective("subtb", True, lambda log_z, traj, log_r, log_flow: subtrajectory_balance(
        log_z, traj, log_r, log_flow, lam))


__all__ = ["OBJECTIVES", "Objective", "detailed_balance", "objective_from", "subtrajectory_balance",
           "trajectory_balance"]
