"""Lattice-parameter subspace of Crystal-GFN (paper 001, sec. 4.3 and App. B): a continuous cube with
Beta-mixture increments, following the Mila gflownet ``ContinuousCube`` semantics.

Coordinates. Each of the 6 parameters ``[a, b, c, alpha, beta, gamma]`` has an active box ``[low, high]``
(Angstrom / degrees; default lengths 0.9-100, angles 50-150, or a restriction). The state stores ``u`` in
``[0, 1]`` per parameter, ``x = low + u (high - low)``. Only the FREE parameters of the group's lattice system
are sampled (Crystal-GFN uses rhombohedral axes for the trigonal-rhombohedral groups: a = b = c and
alpha = beta = gamma free); tied ones copy their source and fixed angles are 90 / 120 degrees
(``hgfn_jax.crystal.constraints``).

Transitions (``m`` = minimum increment, 0.1 = 10 % of each range in the paper):

- from the abstract source, one continuous action sets ``u_d = r_d`` for every free ``d`` (no minimum increment,
  so the whole box is reachable; EOS is not allowed at the source);
- from any other state: EOS with probability ``sigmoid(eos_logit)``, or an increment
  ``u_d <- u_d + m + r_d (1 - u_d - m)`` of every free dimension; increments are only allowed while every free
  ``u_d <= 1 - m`` (then EOS is forced). Hence at most ``ceil(1 / m)`` increments.
- ``r_d`` ~ mixture of ``n_comp`` Beta distributions per dimension; alpha, beta = ``beta_max * sigmoid(.) +
  beta_min`` (App. B: 5 components, coefficients in [0.1, 100.1]).

Backward (``P_B``): from ``y`` (not the source), back-to-source (BTS) is forced if some free ``y_d < m``, else it
has probability ``sigmoid(bts_logit)``; otherwise a backward increment ``y_d - x_d = m + r_d (y_d - m)`` with
``r_d`` from the backward Beta mixture. EOS has a deterministic backward step.

Reference measure of the log-densities: Lebesgue measure on the FREE coordinates ``u`` in ``[0, 1]``. Forward
increments carry the Jacobian ``-sum_d log(1 - u_d - m)``, backward increments ``-sum_d log(y_d - m)``; the
density in physical units (Angstrom, degrees) is the ``u`` density minus ``sum_free log(high_d - low_d)``,
a constant per lattice system that trajectory balance absorbs into Z.

Exploration: with probability epsilon a step is drawn from the random policy: EOS with probability 0.1 when
allowed, increments ``r_d ~ Uniform(0, 1)``. Temperature divides the EOS logit and the mixture-weight logits.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal import constraints as cons
from hgfn_jax.envs.crystal_gfn.types import LatticeState
from hgfn_jax.gflownet.distributions import beta_mixture_logpdf, sample_beta

N_PARAMS = 6
R_EPS = 1e-6  # relative increments are clipped to [R_EPS, 1 - R_EPS] (Mila epsilon)
RANDOM_EOS_PROB = 0.1


@dataclasses.dataclass(frozen=True)
class LatticeConfig:
    low: tuple[float, ...]  # [6] active box, Angstrom / degrees
    high: tuple[float, ...]  # [6]
    n_comp: int = 5
    min_incr: float = 0.1
    beta_min: float = 0.1
    beta_max: float = 100.0

    @property
    def n_out(self) -> int:
        """Policy outputs: 3 per (parameter, component) + one EOS (forward) / BTS (backward) logit."""
        return N_PARAMS * self.n_comp * 3 + 1

    @property
    def max_increments(self) -> int:
        return int(np.ceil(1.0 / self.min_incr)) + 1  # +1: float32 slack


@dataclasses.dataclass(frozen=True)
class LatticeTables:
    low: jnp.ndarray  # [6] float32
    high: jnp.ndarray  # [6] float32
    free: jnp.ndarray  # [7, 6] bool free parameters per lattice system (rhombohedral axes)
    tie: jnp.ndarray  # [7, 6] int32
    fixed: jnp.ndarray  # [7, 6] bool
    fixed_value: jnp.ndarray  # [7, 6] float32 degrees
    config: LatticeConfig


def build_tables(cfg: LatticeConfig) -> LatticeTables:
    return LatticeTables(
        low=jnp.asarray(cfg.low, jnp.float32),
        high=jnp.asarray(cfg.high, jnp.float32),
        free=jnp.asarray(cons.FREE_MASK),
        tie=jnp.asarray(cons.TIE_INDEX),
        fixed=jnp.asarray(cons.FIXED_MASK),
        fixed_value=jnp.asarray(cons.FIXED_VALUE),
        config=cfg,
    )


def init_state() -> LatticeState:
    return LatticeState(u=jnp.zeros(N_PARAMS, jnp.float32), at_source=jnp.ones((), bool))


def _split(out: jnp.ndarray, cfg: LatticeConfig):
    """Policy output -> (mixture logits [6, K], alpha [6, K], beta [6, K], extra logit [])."""
    p = out[: N_PARAMS * cfg.n_comp * 3].reshape(N_PARAMS, cfg.n_comp, 3)
    alpha = cfg.beta_max * jax.nn.sigmoid(p[..., 1]) + cfg.beta_min
    beta = cfg.beta_max * jax.nn.sigmoid(p[..., 2]) + cfg.beta_min
    return p[..., 0], alpha, beta, out[-1]


def mixture_logpdf(logits: jnp.ndarray, alpha: jnp.ndarray, beta: jnp.ndarray, r: jnp.ndarray) -> jnp.ndarray:
    """``[6]`` log density of ``r [6]`` under the per-dimension Beta mixtures (``[6, K]`` parameters), ``r``
    clipped to the Mila epsilon first."""
    return beta_mixture_logpdf(logits, alpha, beta, r, R_EPS)


N_UNIFORMS = 3 + 2 * N_PARAMS + 2 * N_PARAMS  # policy-mix, EOS(policy), EOS(random); components; r_rand; boosts


def free_mask(tab: LatticeTables, lattice_system: jnp.ndarray) -> jnp.ndarray:
    return tab.free[lattice_system]


def can_increment(tab: LatticeTables, s: LatticeState, free: jnp.ndarray) -> jnp.ndarray:
    """Continuous (non-EOS) action allowed: at the source, or every free ``u_d <= 1 - m``."""
    m = tab.config.min_incr
    return s.at_source | jnp.all(jnp.where(free, s.u <= 1.0 - m, True))


def sample(key, fwd: jnp.ndarray, s: LatticeState, free: jnp.ndarray, tab: LatticeTables, explore, u=None):
    """Returns (is_eos [] bool, r [6] float32). ``u``: optional ``[N_UNIFORMS]`` uniforms in ``[1e-12, 1)``
    (drawn from ``key`` when absent); ``key`` also seeds the Beta draws."""
    cfg = tab.config
    logits, alpha, beta, eos_logit = _split(fwd, cfg)
    if u is None:
        u = jax.random.uniform(key, (N_UNIFORMS,), minval=1e-12, maxval=1.0)
    cont = can_increment(tab, s, free)
    use_random = u[0] < explore.epsilon
    eos_pol = u[1] < jax.nn.sigmoid(eos_logit / explore.temperature)
    eos_rand = u[2] < RANDOM_EOS_PROB
    eos = jnp.where(use_random, eos_rand, eos_pol)
    eos = jnp.where(cont, eos & ~s.at_source, True)
    # mixture component by inverse CDF, then the Beta draw
    p = jax.nn.softmax(logits / explore.temperature, axis=-1)
    cdf = [p[:, 0]]
    for k in range(1, cfg.n_comp):  # running sum (a flat cumsum lowers to reduce_window on CPU)
        cdf.append(cdf[-1] + p[:, k])
    comp = jnp.minimum(jnp.sum(jnp.stack(cdf, axis=-1) < u[3 : 3 + N_PARAMS, None], axis=-1), cfg.n_comp - 1)
    a = jnp.take_along_axis(alpha, comp[:, None], axis=1)[:, 0]
    b = jnp.take_along_axis(beta, comp[:, None], axis=1)[:, 0]
    boost = u[3 + 2 * N_PARAMS :].reshape(2, N_PARAMS)
    r_pol = sample_beta(jax.random.fold_in(key, 1), a, b, boost)
    r_rand = u[3 + N_PARAMS : 3 + 2 * N_PARAMS]
    r = jnp.where(use_random, r_rand, r_pol)
    r = jnp.where(free, jnp.clip(r, R_EPS, 1.0 - R_EPS), 0.0)
    return eos, r.astype(jnp.float32)


def step_increment(tab: LatticeTables, s: LatticeState, r: jnp.ndarray, free: jnp.ndarray) -> LatticeState:
    m = tab.config.min_incr
    r = jnp.clip(r, R_EPS, 1.0 - R_EPS)
    u_new = jnp.where(s.at_source, r, s.u + m + r * (1.0 - s.u - m))
    u_new = jnp.where(free, jnp.clip(u_new, 0.0, 1.0), 0.0)
    return LatticeState(u=u_new.astype(jnp.float32), at_source=jnp.zeros((), bool))


def log_pf(fwd: jnp.ndarray, s: LatticeState, is_eos: jnp.ndarray, r: jnp.ndarray, free, tab) -> jnp.ndarray:
    """log P_F of an EOS or increment action (density w.r.t. Lebesgue on the free ``u``)."""
    cfg = tab.config
    m = cfg.min_incr
    logits, alpha, beta, eos_logit = _split(fwd, cfg)
    cont = can_increment(tab, s, free)
    lp_r = jnp.sum(jnp.where(free, mixture_logpdf(logits, alpha, beta, r), 0.0))
    log_jac = jnp.sum(jnp.where(free, jnp.log(jnp.maximum(1.0 - s.u - m, 1e-12)), 0.0))
    lp_inc = jnp.where(s.at_source, lp_r, jax.nn.log_sigmoid(-eos_logit) + lp_r - log_jac)
    lp_eos = jnp.where(cont, jax.nn.log_sigmoid(eos_logit), 0.0)
    return jnp.where(is_eos, lp_eos, lp_inc)


def log_pb_increment(bwd: jnp.ndarray, nxt: LatticeState, prev: LatticeState, free, tab) -> jnp.ndarray:
    """log P_B(prev | nxt) of an increment transition (``bwd`` = backward outputs, ``n_out`` entries)."""
    cfg = tab.config
    m = cfg.min_incr
    logits, alpha, beta, bts_logit = _split(bwd, cfg)
    y, x = nxt.u, prev.u
    forced_bts = jnp.any(jnp.where(free, y < m, False))
    lp_source = jnp.where(forced_bts, 0.0, jax.nn.log_sigmoid(bts_logit))
    denom = jnp.maximum(y - m, 1e-12)
    r_b = jnp.clip((y - x - m) / denom, R_EPS, 1.0 - R_EPS)
    lp_r = jnp.sum(jnp.where(free, mixture_logpdf(logits, alpha, beta, r_b) - jnp.log(denom), 0.0))
    lp_cont = jax.nn.log_sigmoid(-bts_logit) + lp_r
    return jnp.where(prev.at_source, lp_source, lp_cont)


def physical(tab: LatticeTables, s: LatticeState, lattice_system: jnp.ndarray) -> jnp.ndarray:
    """``[6]`` lattice parameters (Angstrom, degrees) with ties and fixed angles applied."""
    x = tab.low + s.u * (tab.high - tab.low)
    x = x[tab.tie[lattice_system]]
    return jnp.where(tab.fixed[lattice_system], tab.fixed_value[lattice_system], x).astype(jnp.float32)


def cell_volume_factor(params: jnp.ndarray) -> jnp.ndarray:
    """``1 - cos^2 a - cos^2 b - cos^2 g + 2 cos a cos b cos g`` (> 0 for a geometrically valid cell)."""
    ca, cb, cg = jnp.cos(jnp.deg2rad(params[3:6]))
    return 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg
