"""A fixed-shape replay buffer of whole trajectories, held on the device inside the training state.

What is stored: the trajectory itself, not its log-probabilities. Per slot the visited states ``s_0 .. s_{T-1}``
(``Trajectory.states``), the actions, the step mask, the terminal state, ``done`` and ``log R(x)``. That is enough
to re-score the trajectory under the CURRENT parameters (:func:`rescore`: the policy is evaluated once on all
``T + 1`` states and ``env.log_pf`` / ``env.log_pb`` of the recorded actions are taken, with gradients), which is
what off-policy TB / DB / SubTB need: their losses are functions of ``log P_F``, ``log P_B`` (and the state flow
at the stored states) of a given trajectory, and all three have the target distribution as their fixed point
under any training distribution of full support. The stored ``log R`` avoids a second reward call (the reward
is a fixed function of the terminal state).

Layout: a ring buffer (FIFO: the oldest slot is overwritten first) of ``capacity`` slots, every leaf with a
leading ``[capacity]`` axis, plus ``size`` (filled slots) and ``ptr`` (next slot written). It is a PyTree of
arrays with fixed shapes, so it lives in ``TrainState.replay``: jitted, vmapped over sweeps, and saved and
restored by the run directory's orbax checkpoints with the rest of the state (a resumed run continues with the
same buffer, bit for bit).

Sampling (with replacement, over the filled slots): uniform, or reward-prioritised PROPORTIONALLY,

    P(slot i) = R_i^beta / sum_j R_j^beta = softmax(beta * log R)_i,

(``train.replay.prioritized``, ``beta``). Proportional rather than rank-based because the hypergrid-style rewards
have large ties (rank-based sampling would need a tie rule) and because ``beta`` then has a plain meaning:
``beta = 1`` replays terminal states in proportion to their reward, the GFlowNet target itself; ``beta = 0`` is
uniform. Insertion is unconditional (duplicates are kept: a state drawn often is stored often).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from hgfn_jax.gflownet.env import Environment
from hgfn_jax.gflownet.policy import PolicyApply
from hgfn_jax.gflownet.rollout import Trajectory, replay_log_probs


@struct.dataclass
class Stored:
    """Trajectories in the form the buffer keeps (leading ``[N]``; ``T = env.max_steps``)."""

    states: Any  # PyTree [N, T, ...]: the state before each step
    final: Any  # PyTree [N, ...]: the terminal state
    actions: Any  # PyTree [N, T, ...]
    step_mask: jnp.ndarray  # [N, T] bool
    done: jnp.ndarray  # [N] bool
    log_r: jnp.ndarray  # [N] float32

    @property
    def n(self) -> int:
        return int(self.step_mask.shape[0])


@struct.dataclass
class ReplayBuffer:
    data: Stored  # every leaf [capacity, ...]
    size: jnp.ndarray  # [] int32: filled slots (<= capacity)
    ptr: jnp.ndarray  # [] int32: the next slot written

    @property
    def capacity(self) -> int:
        return int(self.data.step_mask.shape[0])


def stored_from(traj: Trajectory, log_r: jnp.ndarray) -> Stored:
    """The storable part of a rollout made with ``return_states=True``."""
    if traj.states is None:
        raise ValueError("the replay buffer stores the visited states: roll out with return_states=True")
    sg = jax.lax.stop_gradient
    return Stored(states=sg(traj.states), final=sg(traj.final), actions=traj.actions, step_mask=traj.step_mask,
                  done=traj.done, log_r=sg(log_r).astype(jnp.float32))


def empty(example: Stored, capacity: int) -> ReplayBuffer:
    """An empty buffer with ``capacity`` slots shaped like one item of ``example`` (arrays or ShapeDtypeStructs)."""
    if capacity < 1:
        raise ValueError(f"replay capacity must be >= 1, got {capacity}")
    zeros = jax.tree.map(lambda x: jnp.zeros((capacity,) + tuple(x.shape[1:]), x.dtype), example)
    return ReplayBuffer(data=zeros, size=jnp.asarray(0, jnp.int32), ptr=jnp.asarray(0, jnp.int32))


def insert(buf: ReplayBuffer, items: Stored) -> ReplayBuffer:
    """Writes ``items`` (``N <= capacity``) at ``ptr, ptr + 1, ...`` (mod capacity): FIFO overwrite."""
    cap, n = buf.capacity, items.n
    if n > cap:
        raise ValueError(f"inserting {n} trajectories at once into a replay buffer of capacity {cap}: raise "
                         f"train.replay.capacity to at least the number of trajectories a step adds")
    idx = (buf.ptr + jnp.arange(n, dtype=jnp.int32)) % cap
    data = jax.tree.map(lambda b, x: b.at[idx].set(x.astype(b.dtype)), buf.data, items)
    return ReplayBuffer(data=data, size=jnp.minimum(buf.size + n, cap).astype(jnp.int32),
                        ptr=((buf.ptr + n) % cap).astype(jnp.int32))


def sampling_logits(buf: ReplayBuffer, prioritized: bool, beta: float) -> jnp.ndarray:
    """``[capacity]`` unnormalised log-probabilities of each slot (``-inf`` for empty slots): ``beta * log R``
    when prioritised, else 0."""
    filled = jnp.arange(buf.capacity) < buf.size
    logits = beta * buf.data.log_r if prioritized else jnp.zeros((buf.capacity,), jnp.float32)
    return jnp.where(filled, logits, -jnp.inf)


def sample(key: jax.Array, buf: ReplayBuffer, n: int, prioritized: bool = False, beta: float = 1.0) -> Stored:
    """``n`` trajectories drawn with replacement (see the module docstring). The buffer must hold at least one
    (the training step inserts its fresh batch before it samples)."""
    idx = jax.random.categorical(key, sampling_logits(buf, prioritized, beta), shape=(n,))
    return jax.tree.map(lambda x: x[idx], buf.data)


def rescore(env: Environment, policy_apply: PolicyApply, params, items: Stored) -> Trajectory:
    """A :class:`Trajectory` of stored trajectories with ``log_pf`` / ``log_pb`` of the recorded transitions under
    ``params`` (differentiable in ``params``): the policy evaluated once on every stored state."""
    swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    trail = jax.tree.map(swap, items.states)
    actions = jax.tree.map(swap, items.actions)
    live = swap(items.step_mask)
    lpf, lpb = replay_log_probs(env, policy_apply, params, (trail, items.final, actions, live))
    return Trajectory(final=items.final, log_pf=swap(lpf), log_pb=swap(lpb), step_mask=items.step_mask,
                      done=items.done, actions=items.actions, states=items.states)


def concat(parts: list[Stored]) -> Stored:
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *parts)


def concat_trajectories(parts: list[Trajectory]) -> Trajectory:
    return concat(parts)  # the same batch-axis concatenation, on the Trajectory container
