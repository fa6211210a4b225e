"""GFlowNet training objectives over the shared :class:`~hgfn_jax.gflownet.rollout.Trajectory`, one module each
(torchgfn style): ``tb`` (trajectory balance), ``db`` (detailed balance), ``subtb`` (sub-trajectory balance,
lambda-weighted), ``fldb`` (forward-looking DB) and ``mdb`` (modified DB). ``common`` holds what the DB family
shares (states, potentials, masking), ``flow`` the state-flow head and the per-state log-flows each objective
balances (:func:`~hgfn_jax.gflownet.objectives.flow.state_log_flows`).

The training loop picks one by ``config.train.loss`` (``"tb"`` by default) through :func:`objective_from`, which
validates the config before anything is compiled; :func:`check_task_supports` refuses, by name and before any
tracing, an objective the task cannot supply: ``fldb`` needs the task's intermediate log-rewards
(``Task.state_log_reward``), ``mdb`` those and an environment where every state can stop (``log_pf_stop``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from hgfn_jax.gflownet.objectives.db import detailed_balance
from hgfn_jax.gflownet.objectives.mdb import modified_detailed_balance
from hgfn_jax.gflownet.objectives.subtb import subtrajectory_balance
from hgfn_jax.gflownet.objectives.tb import trajectory_balance

OBJECTIVES = ("tb", "db", "subtb", "fldb", "mdb")


@dataclass(frozen=True)
class Objective:
    """``loss(log_z, traj, log_r, log_flow)``; ``log_flow [B, T + 1]`` is None when ``needs_states`` is False.

    ``needs_flow``: a learned state-flow head (db, subtb, fldb); ``needs_state_reward``: the task's log-reward at
    every state (fldb, mdb); ``needs_stop``: ``env.log_pf_stop`` at every state (mdb)."""

    name: str
    needs_flow: bool
    loss: Callable
    needs_state_reward: bool = False
    needs_stop: bool = False

    @property
    def needs_states(self) -> bool:
        """The loss reads per-state values: roll out with ``return_states=True``."""
        return self.needs_flow or self.needs_state_reward


def check_task_supports(objective: Objective, env, state_log_reward) -> None:
    """ValueError naming what is missing when the task cannot supply what ``objective`` balances."""
    if objective.needs_state_reward and state_log_reward is None:
        what = "intermediate energies" if objective.name == "fldb" else "the reward of stopping at every state"
        raise ValueError(f"train.loss={objective.name!r} needs the task's log-reward at every state ({what}: "
                         "Task.state_log_reward), which this task does not supply; use tb, db or subtb")
    if objective.needs_stop and not callable(getattr(env, "log_pf_stop", None)):
        raise ValueError(f"train.loss={objective.name!r} needs an environment where every state can stop "
                         f"(Environment.log_pf_stop); {type(env).__name__} has none: use tb, db, subtb or fldb")


def objective_from(train_cfg) -> Objective:
    """The objective of ``config.train`` (``loss``, ``subtb_lambda``); ValueError on a bad config."""
    name = str(train_cfg.get("loss", "tb")).lower()
    if name not in OBJECTIVES:
        raise ValueError(f"unknown train.loss={name!r}; choose one of {', '.join(OBJECTIVES)}")
    if name == "tb":
        return Objective("tb", False, lambda log_z, traj, log_r, log_flow: trajectory_balance(log_z, traj, log_r))
    if name == "db":
        return Objective("db", True, detailed_balance)
    if name == "fldb":  # DB over the forward-looking flows (objectives.fldb, flow.state_log_flows)
        return Objective("fldb", True, detailed_balance, needs_state_reward=True)
    if name == "mdb":
        return Objective("mdb", False, modified_detailed_balance, needs_state_reward=True, needs_stop=True)
    lam = train_cfg.get("subtb_lambda", 0.9)
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"train.subtb_lambda must be a number > 0, got {lam!r}") from None
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"train.subtb_lambda must be a finite number > 0, got {lam}")
    return Objective("subtb", True, lambda log_z, traj, log_r, log_flow: subtrajectory_balance(
        log_z, traj, log_r, log_flow, lam))


__all__ = ["OBJECTIVES", "Objective", "check_task_supports", "detailed_balance", "modified_detailed_balance",
           "objective_from", "subtrajectory_balance", "trajectory_balance"]
