"""References for the hypergrid tests of the replay buffer and local search: the exact-arithmetic reward (independent
of the library's) and the EXACT terminal distribution of a trained forward policy (the library's
``envs.toy.hypergrid.hypergrid_terminal_distribution``, tested on its own against independent references in
``test_diagnostics.py``)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from hgfn_jax.envs.toy.hypergrid import HyperGrid, hypergrid_terminal_distribution


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
    """``[H**D]`` the probability that P_F (on-policy) terminates at each grid point: the library's dynamic
    programming (``envs.toy.hypergrid.hypergrid_terminal_distribution``), itself checked against a closed form,
    brute-force path enumeration and Monte Carlo in ``test_diagnostics.py``."""
    return np.asarray(hypergrid_terminal_distribution(env, policy_apply, params), np.float64)
