"""What an experiment plugs into the one training loop (:class:`Task`) and the loop's state and compiled
functions (:class:`TrainState`, :class:`Compiled`): the types of ``gflownet.train``, apart from its logic, so that
a task module can be read (and written) without the loop. ``gflownet.train`` re-exports every name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hgfn_jax.gflownet.env import Environment
from hgfn_jax.gflownet.objectives.flow import StateFlow
from hgfn_jax.gflownet.policy import Policy
from hgfn_jax.gflownet.rollout import Trajectory

# log_reward(terminal_state) -> (log_r [], terms: dict[str, []]) on ONE state; the train step vmaps it.
LogReward = Callable[[Any], tuple[jnp.ndarray, dict[str, jnp.ndarray]]]
# sample(params, key, n) -> Trajectory of n on-policy trajectories (jitted, n static)
SampleFn = Callable[[Any, jax.Array, int], Trajectory]


@dataclass(frozen=True)
class EvalContext:
    """What the loop hands the task's evaluation after training."""

    samples: Any  # terminal states of the trained sampler, PyTree of numpy arrays [n, ...]
    log_r: np.ndarray  # [n] their log-rewards
    terms: dict[str, np.ndarray]  # [n] each: the reward's terms
    workdir: Path  # the run directory (write records, CIFs, plots here)
    state: TrainState  # the trained state (params["policy"], params["log_z"])
    sample_fn: SampleFn  # the jitted sampler (e.g. for an untrained reference with fresh parameters)
    config: Any  # the run's config (ml_collections.ConfigDict)


class Compiled(NamedTuple):
    """A task's jitted functions for one compiled-relevant training config."""

    init: Callable  # init(rng) -> TrainState (not jitted: jits the policy init inside); replicated on the mesh
    run_chunk: Callable  # jit(run_chunk, static n): (ts, n) -> (ts, metrics [n])
    sample: SampleFn  # jit(sample, static n)
    log_reward: Callable  # jit(vmap(task.log_reward)): states [B] -> (log_r [B], terms)


@dataclass
class CompileCache:
    """The jitted functions of a task, per compiled-relevant training config (:func:`compiled`)."""

    entries: dict[str, Compiled] = field(default_factory=dict)
    diagnostics: dict[int, Callable] = field(default_factory=dict)  # trajectories per estimate -> jitted diagnostics


@dataclass(frozen=True)
class Task:
    """Everything an experiment plugs into the shared loop."""

    name: str
    env: Environment
    policy: Policy
    log_reward: LogReward
    # Host-side evaluation of the trained sampler: evaluate(EvalContext) -> summary dict (merged into summary.json).
    evaluate: Callable[[EvalContext], dict] | None = None
    # Host-side COUNTERS to log (e.g. energy-model failures from the host-callback bridge): additive counts that
    # only grow; the loop logs them per run (minus their value at the call's start, plus the restored step's row
    # on a resume), so they must not be rates or other non-additive values.
    host_stats: Callable[[], dict] | None = None
    # Task-specific handles for callers and tests (e.g. the energy bridge); the loop never reads them.
    extras: dict = field(default_factory=dict)
    # The state-flow head log F(s) of the DB-family objectives (train.loss = db | subtb | fldb); None: an MLP over
    # env.encode with train.flow_hidden (gflownet.objectives.flow). Unused by TB.
    flow: StateFlow | None = None
    # state_log_reward(ONE state, terminal or not) -> [] float32: the log-reward the task gives any state, equal to
    # log_reward(x)[0] at a terminal x: FL-DB's intermediate energies -E(s), MDB's reward of stopping at s
    # (gflownet.objectives.fldb / mdb). None: those objectives are refused.
    state_log_reward: Callable[[Any], jnp.ndarray] | None = None
    # terminal_key(ONE terminal state) -> PyTree of arrays identifying it, for RUN_DIR/visited.jsonl
    # (train.record_visited; gflownet.visited): the fields that make two terminal states the same object. None: the
    # whole state. Bit-cast to uint32 words in the jitted update, keyed on the host per chunk.
    terminal_key: Callable[[Any], Any] | None = None
    # Environments whose terminal states can be listed: a gflownet.diagnostics.EnumerableTarget (the exact terminal
    # distribution of P_F and R / Z). Only the diagnostics read it (train.diagnostics_every: exact TV, EUBO).
    enumerable: Any = None
    # The loop's jit cache, owned by this task object (not copied by dataclasses.replace: a task with another
    # reward compiles its own functions).
    cache: CompileCache = field(default_factory=CompileCache, init=False, repr=False, compare=False)


@struct.dataclass
class TrainState:
    params: Any  # {"policy": policy params, "log_z": [] float32} (+ "flow": state-flow params for db / subtb)
    opt_state: Any  # optax state (holds the injected learning rates)
    key: jax.Array  # [2] uint32 PRNG key
    step: jnp.ndarray  # [] int32: completed iterations


@struct.dataclass
class ReplayTrainState(TrainState):
    """The state of a run with a replay buffer (``train.replay.capacity > 0``): the buffer is part of the state, so
    the run directory's checkpoints hold it and a resume continues with it. A separate class (not an optional field
    of :class:`TrainState`) so that every other run's checkpoint keeps its former structure and stays restorable."""

    replay: Any  # gflownet.replay.ReplayBuffer
