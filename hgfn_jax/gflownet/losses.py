"""GFlowNet objectives (kept for existing imports): the objectives live in ``gflownet.objectives``, one module
each; trajectory balance is ``gflownet.objectives.tb``."""

from __future__ import annotations

from hgfn_jax.gflownet.objectives.db import detailed_balance  # noqa: F401
from hgfn_jax.gflownet.objectives.subtb import subtrajectory_balance  # noqa: F401
from hgfn_jax.gflownet.objectives.tb import trajectory_balance, trajectory_balance_residual  # noqa: F401
