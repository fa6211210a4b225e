"""The environment contract shared by every GFlowNet in hgfn_jax.

An environment is stateless: every method is a pure function of ONE unbatched state (a
``flax.struct.dataclass`` PyTree with fixed shapes). The rollout (``hgfn_jax.gflownet.rollout``) vmaps them over
the batch and scans them over ``max_steps``. Policies are separate: they map a batch of states to a flat forward
output ``[B, fwd_dim]`` and a flat backward output ``[B, bwd_dim]`` that the environment interprets (logits,
distribution parameters). Rewards are separate modules too (``log_reward(terminal_state) -> (log_r, terms)``), so
the same environment trains on a physical model, a proxy or a synthetic target.

Log-probabilities: ``log_pf`` / ``log_pb`` are log-densities of the transition actually taken with respect to a
reference measure the environment documents (counting measure for discrete choices, Lebesgue measure on the free
continuous parameters). Trajectory balance needs the SAME reference measure in P_F and P_B of a transition, which
is what makes the continuous parts cancel correctly.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from hgfn_jax.gflownet.distributions import sample_masked_icdf

NEG_INF = -1e30  # finite "minus infinity" for masked logits: keeps gradients free of NaN


@struct.dataclass
class Exploration:
    """Off-policy exploration used when SAMPLING actions. ``log_pf`` ignores it (off-policy TB is exact)."""

    epsilon: jnp.ndarray  # [] float32: probability of a uniformly random VALID action
    temperature: jnp.ndarray  # [] float32: policy logits divided by this when sampling

    @staticmethod
    def make(epsilon: float = 0.0, temperature: float = 1.0) -> Exploration:
        return Exploration(jnp.asarray(epsilon, jnp.float32), jnp.asarray(temperature, jnp.float32))


ON_POLICY = Exploration.make(0.0, 1.0)


class Environment(abc.ABC):
    """Abstract GFlowNet environment (pure functions over one unbatched state)."""

    max_steps: int  # static bound on the number of transitions before is_done
    fwd_dim: int  # size of the flat forward policy output the env interprets
    bwd_dim: int  # size of the flat backward policy output (0 if P_B is fixed)
    obs_dim: int  # size of encode(state)

    @abc.abstractmethod
    def init(self) -> Any:
        """The source state s0."""

    @abc.abstractmethod
    def encode(self, state) -> jnp.ndarray:
        """``[obs_dim] float32`` policy input for MLP policies."""

    @abc.abstractmethod
    def is_done(self, state) -> jnp.ndarray:
        """``[] bool``: the state is terminal."""

    @abc.abstractmethod
    def sample_action(self, key: jax.Array, fwd_out: jnp.ndarray, state, explore: Exploration):
        """Samples a valid action (never a masked one, also under exploration)."""

    @abc.abstractmethod
    def log_pf(self, fwd_out: jnp.ndarray, state, action) -> jnp.ndarray:
        """``[]`` log P_F(action | state) under the untempered policy."""

    @abc.abstractmethod
    def step(self, state, action):
        """The next state. Must return ``state`` unchanged when ``is_done(state)``."""

    @abc.abstractmethod
    def log_pb(self, bwd_out: jnp.ndarray, next_state, action, prev_state) -> jnp.ndarray:
        """``[]`` log P_B(prev_state | next_state) for the transition taken by ``action``."""

    # Optional, for modified detailed balance (gflownet.objectives.mdb) only: environments where EVERY non-terminal
    # state can stop, and where the last transition of every finished trajectory is that stop, define
    #     log_pf_stop(fwd_out, state) -> [] log P_F(stop | state) under the untempered policy.
    # Absent (the default): train.loss=mdb is refused by name.

    # Batched entry points used by the rollout: every argument has a leading batch axis (``explore`` excepted).
    # The defaults vmap the per-state methods above. An environment may override them to skip work that no state
    # of the batch needs (``lax.cond`` on a batch-level predicate); an override must return exactly what the
    # vmapped per-state method returns.

    def sample_action_batch(self, keys: jax.Array, fwd_out: jnp.ndarray, states, explore: Exploration):
        return jax.vmap(self.sample_action, in_axes=(0, 0, 0, None))(keys, fwd_out, states, explore)

    def log_pf_batch(self, fwd_out: jnp.ndarray, states, actions) -> jnp.ndarray:
        return jax.vmap(self.log_pf)(fwd_out, states, actions)

    def step_batch(self, states, actions):
        return jax.vmap(self.step)(states, actions)

    def log_pb_batch(self, bwd_out: jnp.ndarray, next_states, actions, prev_states) -> jnp.ndarray:
        return jax.vmap(self.log_pb)(bwd_out, next_states, actions, prev_states)


# ----------------------------------------------------------------------------------------------------------
# Masked categorical helpers shared by the environments' discrete choices.
# ----------------------------------------------------------------------------------------------------------


def masked_log_softmax(logits: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """``log_softmax`` over the valid entries; masked entries get ``NEG_INF``. All-False masks give ``NEG_INF``
    everywhere (the caller must guarantee at least one valid action; environments test this)."""
    logits = jnp.where(mask, logits, NEG_INF)
    out = jax.nn.log_softmax(logits, axis=-1)
    return jnp.where(mask, out, NEG_INF)


def sample_masked_categorical(
    key: jax.Array, logits: jnp.ndarray, mask: jnp.ndarray, explore: Exploration
) -> jnp.ndarray:
    """Index drawn from softmax(logits / T) over ``mask``, or with probability epsilon uniformly over ``mask``
    (``logits``, ``mask``: ``[n]``, one state; vmap for a batch).

    Inverse-CDF sampling from two uniforms of ``key`` (``gflownet.distributions.sample_masked_icdf``, rows of
    ``ceil(sqrt(n))`` entries; never returns a masked entry; tested against numpyro's categorical). Why not
    Gumbel-max (``jax.random.categorical``): it draws one uniform and two logarithms per ENTRY, once for the policy
    and once for the uniform branch; on the hierarchical env's 230 space groups at batch 256 that was about 60 %
    of the environment's rollout time on a 2-core CPU (``benchmarks/bench_hierarchical.py``, env alone: 61 -> 24
    ms per batch under load). Both samplers are exact up to float32 rounding (here: of the running sums, about
    n 2^-24 on the cumulative mass; Gumbel-max: of the logarithms of 24-bit uniforms)."""
    n = logits.shape[-1]
    width = max(1, int(math.ceil(math.sqrt(n))))
    return sample_masked_icdf(jax.random.uniform(key, (2,)), logits, mask, explore, width)


def tree_where(cond: jnp.ndarray, a, b):
    """Leaf-wise ``where(cond, a, b)`` for two PyTrees of the same structure (``cond`` is a scalar per item)."""
    return jax.tree.map(lambda x, y: jnp.where(jnp.reshape(cond, cond.shape + (1,) * (x.ndim - cond.ndim)), x, y),
                        a, b)
