"""Independent references for the hypergrid tests of the replay buffer and local search: the exact-arithmetic reward
and the EXACT terminal distribution of a trained forward policy (dynamic programming over the grid in numpy, with
its own masked softmax; no library rollout, sampler or log-probability code)."""

from __future__ import annotations

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.envs.toy.hypergrid import GridState, HyperGrid


def reference_reward(pos, side, r0=1e-2, r1=0.5, r2=2.0):
    """Exact-arithmetic hypergrid reward (Bengio et al. 2021)."""
    ax = [abs(Fraction(int(p), side - 1) - Fraction(1, 2)) for p in pos]
    band1 = all(Fraction(1, 4) < a <= Fraction(1, 2) for a in ax)
    band2 = all(Fraction(3, 10) < a < Fraction(2, 5) for a in ax)
    return r0 + r1 * band1 + r2 * band2


def target_distribution(env: HyperGrid) -> np.ndarray:
    """``[H**D]`` R / Z in the order of ``env.all_terminal_positions()``."""
    r = np.array([float(reference_reward(p, env.side)) for p in env.all_terminal_positions()])
    return r / r.sum()


def exact_terminal_distribution(env: HyperGrid, policy_apply, params) -> np.ndarray:
    """``[H**D]`` the probability that P_F (on-policy) terminates at each grid point: reach probabilities propagated
    through the grid in order of the coordinate sum, times P_F(STOP)."""
    pos = env.all_terminal_positions()
    states = GridState(pos=jnp.asarray(pos, jnp.int32), done=jnp.zeros(len(pos), bool))
    logits = np.asarray(jax.jit(policy_apply)(params, states)[0], np.float64)  # [N, D + 1]
    n_dim, side = env.ndim, env.side
    valid = np.concatenate([pos < side - 1, np.ones((len(pos), 1), bool)], axis=1)
    z = np.where(valid, logits, -np.inf)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    index = {tuple(q): i for i, q in enumerate(pos)}
    reach = np.zeros(len(pos))
    reach[index[(0,) * n_dim]] = 1.0
    for i in np.argsort(pos.sum(axis=1), kind="stable"):
        for d in range(n_dim):
            if pos[i, d] < side - 1:
                child = list(pos[i])
                child[d] += 1
                reach[index[tuple(child)]] += reach[i] * p[i, d]
    return reach * p[:, n_dim]
