"""The hypergrid (Bengio et al. 2021): a D-dimensional grid of side H, walked from the origin by +1 moves.

Every grid point is terminal once the agent takes STOP there, so the terminal distribution is enumerable
(H**D points) and a trained sampler can be compared with R(x)/Z exactly. P_B is uniform over the parents.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hgfn_jax.gflownet.diagnostics import EnumerableTarget
from hgfn_jax.gflownet.env import Environment, Exploration, masked_log_softmax, sample_masked_categorical
from hgfn_jax.gflownet.policy import PolicyApply


@struct.dataclass
class GridState:
    pos: jnp.ndarray  # [D] int32: coordinates in 0..H-1
    done: jnp.ndarray  # [] bool: STOP was taken


class HyperGrid(Environment):
    def __init__(self, ndim: int = 2, side: int = 8):
        if ndim < 1 or side < 2:
            raise ValueError(f"hypergrid needs ndim >= 1 and side >= 2, got ndim={ndim}, side={side}")
        self.ndim, self.side = ndim, side
        self.max_steps = ndim * (side - 1) + 1
        self.fwd_dim = ndim + 1  # +1 on each dimension, then STOP
        self.bwd_dim = 0  # uniform over parents
        self.obs_dim = ndim * side

    def init(self) -> GridState:
        return GridState(pos=jnp.zeros(self.ndim, jnp.int32), done=jnp.asarray(False))

    def encode(self, state: GridState) -> jnp.ndarray:
        return jax.nn.one_hot(state.pos, self.side).reshape(-1)

    def is_done(self, state: GridState) -> jnp.ndarray:
        return state.done

    def forward_mask(self, state: GridState) -> jnp.ndarray:  # [D + 1] bool
        return jnp.concatenate([state.pos < self.side - 1, jnp.ones(1, bool)])

    def sample_action(self, key, fwd_out, state, explore: Exploration):
        return sample_masked_categorical(key, fwd_out, self.forward_mask(state), explore)

    def log_pf(self, fwd_out, state, action):
        return masked_log_softmax(fwd_out, self.forward_mask(state))[action]

    def log_pf_stop(self, fwd_out, state):
        """log P_F(STOP | state): every point can stop (modified DB, ``gflownet.objectives.mdb``)."""
        return masked_log_softmax(fwd_out, self.forward_mask(state))[self.ndim]

    def step(self, state: GridState, action) -> GridState:
        stop = action == self.ndim
        inc = jax.nn.one_hot(action, self.ndim, dtype=jnp.int32) * (~stop)
        new = GridState(pos=state.pos + inc, done=stop)
        return jax.tree.map(lambda a, b: jnp.where(state.done, a, b), state, new)

    def log_pb(self, bwd_out, next_state, action, prev_state):
        # Terminal states have one parent (the same point before STOP); otherwise uniform over dims with pos > 0.
        n_parents = jnp.sum(next_state.pos > 0)
        return jnp.where(next_state.done, 0.0, -jnp.log(jnp.maximum(n_parents, 1).astype(jnp.float32)))

    # -- backward steps (local search, gflownet.local_search) --------------------------------------------------
    def is_initial(self, state: GridState) -> jnp.ndarray:
        return (~state.done) & jnp.all(state.pos == 0)

    def sample_backward(self, key, bwd_out, state: GridState):
        """A parent drawn from P_B (the one of ``log_pb``): a terminal state's only parent is the same point before
        STOP; otherwise uniform over the dimensions with ``pos > 0``, decremented. Returns ``(parent, action)``."""
        del bwd_out  # P_B is fixed
        dims = jax.random.categorical(key, jnp.where(state.pos > 0, 0.0, -jnp.inf))
        action = jnp.where(state.done, self.ndim, dims).astype(jnp.int32)
        dec = jax.nn.one_hot(dims, self.ndim, dtype=jnp.int32) * (~state.done)
        return GridState(pos=state.pos - dec, done=jnp.asarray(False)), action

    # -- enumeration helpers for tests -------------------------------------------------------------------------
    def all_terminal_positions(self) -> np.ndarray:  # [H**D, D]
        grids = np.meshgrid(*[np.arange(self.side)] * self.ndim, indexing="ij")
        return np.stack([g.reshape(-1) for g in grids], axis=1)

    def index(self, pos: jnp.ndarray) -> jnp.ndarray:
        weights = self.side ** jnp.arange(self.ndim - 1, -1, -1)
        return jnp.sum(pos * weights, axis=-1)


def hypergrid_log_reward(pos: jnp.ndarray, side: int, r0: float = 1e-2, r1: float = 0.5, r2: float = 2.0):
    """The standard multi-modal hypergrid reward (Bengio et al. 2021), as a log.

    With ``ax = |pos / (H - 1) - 0.5|``: ``R = r0 + r1 * prod(0.25 < ax <= 0.5) + r2 * prod(0.3 < ax < 0.4)``.
    Evaluated in exact integer arithmetic (``ax = |2 pos - (H - 1)| / (2 (H - 1))``): under ``jit`` XLA rewrites
    ``pos / 7`` as ``pos * (1 / 7)``, which makes ``ax`` at the border 0.5000001 and silently drops the corner
    modes, so float comparisons would give jitted and eager code different targets.
    """
    num = jnp.abs(2 * jnp.asarray(pos, jnp.int32) - (side - 1))  # ax = num / den
    den = 2 * (side - 1)
    band1 = (4 * num > den) & (2 * num <= den)
    band2 = (10 * num > 3 * den) & (10 * num < 4 * den)
    r = r0 + r1 * jnp.prod(band1) + r2 * jnp.prod(band2)
    return jnp.log(r)


# -- exact terminal distribution (gflownet.diagnostics) ----------------------------------------------------------


def hypergrid_terminal_distribution(env, policy_apply: PolicyApply, params) -> jnp.ndarray:
    """``[H**D]`` the exact probability that the on-policy P_F of ``env`` (a ``HyperGrid``) stops at each grid
    point, in the order of ``env.all_terminal_positions()`` (= ``env.index``).

    The policy is evaluated once on all ``H**D`` points. The probability ``reach(s)`` of visiting ``s`` satisfies
    ``reach = e_0 + sum_d shift_d(reach * P_F(+e_d | .))``; iterating this ``D (H - 1)`` times (the depth of the
    DAG) is exact, since after ``k`` iterations every point at coordinate sum ``<= k`` holds its final value. The
    terminal probability is ``reach * P_F(STOP | .)``."""
    n_dim, side = env.ndim, env.side
    grids = jnp.meshgrid(*[jnp.arange(side, dtype=jnp.int32)] * n_dim, indexing="ij")
    pos = jnp.stack([g.reshape(-1) for g in grids], axis=1)  # [N, D], row-major = env.index order
    states = GridState(pos=pos, done=jnp.zeros(pos.shape[0], bool))
    fwd, _ = policy_apply(params, states)
    mask = jax.vmap(env.forward_mask)(states)
    prob = jnp.where(mask, jnp.exp(masked_log_softmax(fwd, mask)), 0.0)  # [N, D + 1], exactly 0 where masked
    shape = (side,) * n_dim
    move = prob[:, :n_dim].reshape(shape + (n_dim,))
    origin = jnp.zeros(shape, prob.dtype).at[(0,) * n_dim].set(1.0)

    def shift(a, d):  # a[.., i, ..] -> position i + 1 along axis d (the last slice carries P_F = 0: rolls in 0)
        return jnp.roll(a, 1, axis=d)

    def body(_, reach):
        return origin + sum(shift(reach * move[..., d], d) for d in range(n_dim))

    reach = jax.lax.fori_loop(0, n_dim * (side - 1), body, origin)
    return reach.reshape(-1) * prob[:, n_dim]


def hypergrid_enumerable(env, policy_apply: PolicyApply, log_reward: Callable) -> EnumerableTarget:
    """The :class:`EnumerableTarget` of a hypergrid with ``log_reward(one terminal state) -> (log_r, terms)``."""
    pos = jnp.asarray(env.all_terminal_positions(), jnp.int32)
    states = GridState(pos=pos, done=jnp.ones(pos.shape[0], bool))
    log_r = jax.vmap(lambda s: log_reward(s)[0])(states)
    return EnumerableTarget(states, log_r,
                            lambda params: hypergrid_terminal_distribution(env, policy_apply, params))
