"""Lattice subspace of Crystal-GFN: Beta-mixture densities vs scipy, exact Beta sampling, forward/backward
transition densities that integrate to one (Jacobians), and the ContinuousCube length bound."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from hgfn_jax.envs.crystal_gfn import lattice_subspace as lat
from hgfn_jax.envs.crystal_gfn.types import LatticeState
from hgfn_jax.gflownet import distributions as gd
from hgfn_jax.gflownet.env import Exploration

CFG = lat.LatticeConfig(low=(0.9,) * 3 + (50.0,) * 3, high=(100.0,) * 3 + (150.0,) * 3, n_comp=3)
TAB = lat.build_tables(CFG)


def _random_out(key) -> jnp.ndarray:
    return jax.random.normal(key, (CFG.n_out,)) * 1.5


def test_mixture_logpdf_matches_scipy(rng):
    out = _random_out(rng())
    logits, alpha, beta, _ = lat._split(out, CFG)
    r = jnp.asarray([0.01, 0.2, 0.5, 0.7, 0.93, 0.999])
    ours = np.asarray(lat.mixture_logpdf(logits, alpha, beta, r))
    w = np.asarray(jax.nn.softmax(logits, -1))
    a, b = np.asarray(alpha, np.float64), np.asarray(beta, np.float64)
    ref = [np.log(np.sum(w[d] * stats.beta.pdf(float(r[d]), a[d], b[d]))) for d in range(6)]
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-4)
    assert np.all(np.asarray(alpha) >= CFG.beta_min) and np.all(np.asarray(alpha) <= CFG.beta_min + CFG.beta_max)


@pytest.mark.parametrize("a,b", [(0.1, 0.1), (0.5, 3.0), (2.0, 2.0), (80.0, 20.0)])
def test_beta_sampler_is_exact(rng, a, b):
    n = 4000
    u = jax.random.uniform(rng(), (2, n), minval=1e-12, maxval=1.0)
    logit = jax.jit(lambda k, u: gd.sample_beta_logit(k, jnp.full(n, a), jnp.full(n, b), u))(rng(), u)
    logit = np.asarray(logit, np.float64)
    assert np.all(np.isfinite(logit))

    def cdf(t):  # P(logit X <= t), precise in both tails (1 - X ~ Beta(b, a))
        t = np.asarray(t, np.float64)
        return np.where(t < 0, stats.beta(a, b).cdf(1 / (1 + np.exp(-t))), stats.beta(b, a).sf(1 / (1 + np.exp(t))))

    assert stats.kstest(logit, cdf).pvalue > 1e-3


def _state(u, at_source=False):
    return LatticeState(u=jnp.asarray(u, jnp.float32), at_source=jnp.asarray(at_source))


def test_forward_density_integrates_to_one(rng):
    """Cubic (one free parameter): the from-source density integrates to 1 over u, the increment density
    integrates to 1 - P(EOS) over the reachable next positions (Jacobian included)."""
    out = _random_out(rng())
    free = jnp.asarray([True, False, False, False, False, False])
    grid = np.linspace(0.0, 1.0, 20001)[1:-1]
    r = jnp.zeros((grid.size, 6)).at[:, 0].set(grid)
    lp_src = jax.vmap(lambda rr: lat.log_pf(out, _state(np.zeros(6), True), False, rr, free, TAB))(r)
    np.testing.assert_allclose(np.trapezoid(np.exp(np.asarray(lp_src, np.float64)), grid), 1.0, atol=3e-3)
    x = 0.3
    s = _state([x, 0, 0, 0, 0, 0])
    lp = jax.vmap(lambda rr: lat.log_pf(out, s, False, rr, free, TAB))(r)
    nxt = x + CFG.min_incr + grid * (1.0 - x - CFG.min_incr)  # next position of each relative increment
    p_eos = float(jax.nn.sigmoid(out[-1]))
    integral = np.trapezoid(np.exp(np.asarray(lp, np.float64)), nxt)
    np.testing.assert_allclose(integral, 1.0 - p_eos, atol=3e-3)
    lp_eos = float(lat.log_pf(out, s, True, jnp.zeros(6), free, TAB))
    np.testing.assert_allclose(np.exp(lp_eos), p_eos, rtol=1e-5)


def test_backward_density_integrates_to_one(rng):
    """P_B over the parents of y: back-to-source plus the continuous parents x in [0, y - m] integrate to 1."""
    bwd = _random_out(rng())
    free = jnp.asarray([True, False, False, False, False, False])
    y = 0.8
    nxt = _state([y, 0, 0, 0, 0, 0])
    xs = np.linspace(0.0, y - CFG.min_incr, 20001)[1:-1]
    lp = jax.vmap(lambda x: lat.log_pb_increment(bwd, nxt, _state(jnp.zeros(6).at[0].set(x)), free, TAB))(
        jnp.asarray(xs, jnp.float32)
    )
    lp_src = float(lat.log_pb_increment(bwd, nxt, _state(np.zeros(6), True), free, TAB))
    total = np.trapezoid(np.exp(np.asarray(lp, np.float64)), xs) + np.exp(lp_src)
    np.testing.assert_allclose(total, 1.0, atol=3e-3)
    # below the minimum increment, back-to-source is forced
    small = _state([0.05, 0, 0, 0, 0, 0])
    assert float(lat.log_pb_increment(bwd, small, _state(np.zeros(6), True), free, TAB)) == 0.0


def test_cube_trajectories_are_bounded_and_inside_box(rng):
    """Random-policy walks (any number of free dims) stop within max_increments and stay in [0, 1]."""
    free_rows = jnp.asarray(np.asarray(TAB.free))  # all 7 lattice systems

    def walk(key, ls):
        free = free_rows[ls]

        def body(carry, k):
            s, done, n = carry
            eos, r = lat.sample(k, jnp.zeros(CFG.n_out), s, free, TAB, Exploration.make(0.5, 1.0))
            nxt = lat.step_increment(TAB, s, r, free)
            s = jax.tree.map(lambda a, b: jnp.where(done | eos, a, b), s, nxt)
            return (s, done | eos, n + (~done).astype(jnp.int32)), None

        init = (lat.init_state(), jnp.zeros((), bool), jnp.zeros((), jnp.int32))
        (s, done, n), _ = jax.lax.scan(body, init, jax.random.split(key, CFG.max_increments + 2))
        return s.u, done, n

    ls = jnp.tile(jnp.arange(7), 64)
    u, done, n = jax.jit(jax.vmap(walk))(jax.random.split(rng(), ls.shape[0]), ls)
    assert bool(jnp.all(done))
    assert int(jnp.max(n)) <= CFG.max_increments + 1
    assert bool(jnp.all((u >= 0) & (u <= 1)))
    phys = jax.vmap(lambda uu, l: lat.physical(TAB, _state(uu), l))(u, ls)
    assert bool(jnp.all((phys[:, :3] >= 0.9) & (phys[:, :3] <= 100.0)))
    assert bool(jnp.all((phys[:, 3:] >= 50.0) & (phys[:, 3:] <= 150.0)))
