"""Every hand-written sampler and log-density of ``hgfn_jax.gflownet.distributions`` against numpyro's
distributions (the independent oracle): log-densities equal on grids, samplers pass Kolmogorov-Smirnov tests
against numpyro's CDF (or its own sampler where numpyro has no CDF), with fixed keys."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest
from scipy import stats

from hgfn_jax.gflownet import distributions as gd
from hgfn_jax.gflownet.env import Exploration

N = 4000  # draws per KS test; fixed keys, so a test passes or fails deterministically
P_MIN = 1e-3  # a correct sampler passes with probability 0.999 per key; these keys pass


def _key(i: int) -> jax.Array:
    return jax.random.PRNGKey(1000 + i)


def _ks(samples, cdf) -> float:
    return stats.kstest(np.asarray(samples, np.float64), lambda x: np.asarray(cdf(jnp.asarray(x, jnp.float32)),
                                                                              np.float64)).pvalue


# ---- masked categorical by inverse CDF ------------------------------------------------------------------


@pytest.mark.parametrize("width", [1, 4, 7, 32])
@pytest.mark.parametrize("eps,temp", [(0.0, 1.0), (0.0, 2.5), (0.3, 0.7)])
def test_masked_icdf_matches_the_numpyro_categorical(width, eps, temp):
    """A stratified grid of uniforms (``u2[1] = (k + 1/2) / M``) hits each index with frequency p_i +- 1/M,
    p = (1 - eps) Categorical(logits / T) + eps Uniform over the mask (numpyro's probabilities)."""
    n = 23
    logits = jax.random.normal(_key(1), (n,)) * 2.0
    mask = jnp.asarray(np.random.default_rng(0).random(n) < 0.6).at[3].set(True)
    m = 20_000
    u_pick = (jnp.arange(m) + 0.5) / m
    probs = np.asarray(nd.Categorical(logits=jnp.where(mask, logits / temp, -1e30)).probs)
    uniform = np.asarray(mask, float) / float(mask.sum())
    ex = Exploration.make(eps, temp)
    f = jax.jit(jax.vmap(lambda a, b: gd.sample_masked_icdf(jnp.stack([a, b]), logits, mask, ex, width)))
    freq = {}
    for branch, u0 in (("policy", 0.999), ("uniform", 0.0)):
        if branch == "uniform" and eps == 0.0:
            continue
        idx = np.asarray(f(jnp.full(m, u0), u_pick))
        assert np.all(np.asarray(mask)[idx]), "a masked index was returned"
        freq[branch] = np.bincount(idx, minlength=n) / m
    np.testing.assert_allclose(freq["policy"], probs, atol=2.0 / m)
    if "uniform" in freq:
        np.testing.assert_allclose(freq["uniform"], uniform, atol=2.0 / m)


# ---- truncated normal on [0, 1] -------------------------------------------------------------------------

TN = [(0.5, 0.05), (0.1, 0.3), (0.0, 0.02), (0.97, 0.03), (0.3, 50.0), (1.0, 1.0)]


@pytest.mark.parametrize("m,s", TN)
def test_truncnorm_log_prob_equals_numpyro(m, s):
    u = jnp.linspace(0.0, 1.0, 101)
    ref = nd.TruncatedNormal(loc=m, scale=s, low=0.0, high=1.0).log_prob(u)
    np.testing.assert_allclose(np.asarray(gd.truncnorm_log_prob(u, m, s)), np.asarray(ref), rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("i,ms", list(enumerate(TN)))
def test_truncnorm_sample_follows_numpyro_cdf(i, ms):
    m, s = ms
    x = jax.vmap(lambda k: gd.truncnorm_sample(k, jnp.float32(m), jnp.float32(s)))(jax.random.split(_key(10 + i), N))
    assert np.all((np.asarray(x) >= 0) & (np.asarray(x) <= 1))
    assert _ks(x, nd.TruncatedNormal(loc=m, scale=s, low=0.0, high=1.0).cdf) > P_MIN


# ---- von Mises ------------------------------------------------------------------------------------------

VM = [(0.0, 1e-3), (1.0, 0.05), (-2.5, 3.0), (3.0, 60.0), (0.2, 400.0)]


@pytest.mark.parametrize("mu,kappa", VM)
def test_vonmises_u_log_prob_equals_numpyro(mu, kappa):
    """Density of u = (phi + pi) / (2 pi), phi ~ VM(mu, kappa): numpyro's log-density of phi + log(2 pi)."""
    u = jnp.linspace(0.0, 1.0, 101, endpoint=False)
    ref = nd.VonMises(mu, kappa).log_prob(2.0 * jnp.pi * u - jnp.pi) + jnp.log(2.0 * jnp.pi)
    np.testing.assert_allclose(np.asarray(gd.vonmises_u_log_prob(u, mu, kappa)), np.asarray(ref),
                               rtol=1e-4, atol=2e-3)


@pytest.mark.parametrize("i,kappa", list(enumerate([1e-3, 0.05, 1.0, 3.0, 60.0, 400.0])))
def test_vonmises_sample_matches_numpyro_sampler(i, kappa):
    """Two-sample KS against numpyro's own VonMises sampler (numpyro has no von Mises CDF)."""
    ours = np.asarray(gd.vonmises_sample(_key(20 + i), jnp.full((N,), kappa, jnp.float32)))
    ref = np.asarray(nd.VonMises(0.0, kappa).sample(_key(40 + i), (N,)))
    assert np.all(np.abs(ours) <= np.pi + 1e-6)
    assert stats.ks_2samp(ours, ref).pvalue > P_MIN


@pytest.mark.parametrize("i,mk", list(enumerate(VM)))
def test_vonmises_u_sample_matches_numpyro_sampler(i, mk):
    mu, kappa = mk
    ours = np.asarray(jax.vmap(lambda k: gd.vonmises_u_sample(k, jnp.float32(mu), jnp.float32(kappa)))(
        jax.random.split(_key(60 + i), N)))
    phi = np.asarray(nd.VonMises(mu, kappa).sample(_key(80 + i), (N,)))
    ref = (phi + np.pi) / (2.0 * np.pi)
    assert np.all((ours >= 0) & (ours < 1))
    # compare on the circle: rotate both so the mode sits at 1/2 (a KS test on [0, 1) would split a mode at 0)
    shift = lambda x: np.mod(x - (mu + np.pi) / (2 * np.pi) + 0.5, 1.0)  # noqa: E731
    assert stats.ks_2samp(shift(ours), shift(ref)).pvalue > P_MIN


# ---- wrapped normal / uniform mixture on the torus ------------------------------------------------------


def _chol(seed: int, sd) -> jnp.ndarray:
    a = np.random.default_rng(seed).normal(size=(3, 3))
    c = a @ a.T + 0.5 * np.eye(3)
    corr = c / np.sqrt(np.outer(np.diag(c), np.diag(c)))  # a random correlation matrix
    cov = np.outer(sd, sd) * corr
    return jnp.asarray(np.linalg.cholesky(cov), jnp.float32)


CASES = [(0, (0.05, 0.1, 0.2)), (1, (0.3, 0.3, 0.3)), (2, (0.01, 0.25, 0.08))]


def _wrapped_ref(x, mu, chol, images: int = 2) -> np.ndarray:
    """log sum_k N(x - mu + k; 0, chol chol^T) over k in {-images..images}^3 by numpyro's MultivariateNormal."""
    mvn = nd.MultivariateNormal(jnp.zeros(3), scale_tril=chol)
    ks = jnp.asarray(list(itertools.product(range(-images, images + 1), repeat=3)), jnp.float32)
    d = x - mu
    d = d - jnp.round(d)
    return np.asarray(jax.scipy.special.logsumexp(mvn.log_prob(d[:, None, :] + ks[None]), axis=1))


@pytest.mark.parametrize("seed,sd", CASES)
def test_wrapped_normal_log_prob_equals_numpyro_image_sum(seed, sd):
    chol = _chol(seed, sd)
    mu = jnp.asarray([0.9, 0.05, 0.5], jnp.float32)
    x = jax.random.uniform(_key(100 + seed), (300, 3))
    ours = jax.vmap(gd.wrapped_normal_log_prob, in_axes=(0, None, None))(x, mu, chol)
    # with sd <= 0.3 the images beyond {-1, 0, 1}^3 carry < 2e-6 of the mass
    np.testing.assert_allclose(np.exp(np.asarray(ours)), np.exp(_wrapped_ref(x, mu, chol)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("w_logit", [-30.0, -2.0, 0.0, 3.0, 30.0])
def test_uniform_wrapped_normal_log_prob_equals_the_mixture(w_logit):
    chol = _chol(0, (0.05, 0.1, 0.2))
    mu = jnp.asarray([0.2, 0.7, 0.4], jnp.float32)
    x = jax.random.uniform(_key(110), (300, 3))
    ours = jax.vmap(gd.uniform_wrapped_normal_log_prob, in_axes=(0, None, None, None))(x, mu, chol, w_logit)
    w = float(jax.nn.sigmoid(jnp.float64(w_logit) if jax.config.jax_enable_x64 else w_logit))
    ref = np.logaddexp(np.log(w) if w > 0 else -np.inf, np.log1p(-w) + _wrapped_ref(x, mu, chol)) if w < 1 else \
        np.zeros(len(x))
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed,sd", CASES)
@pytest.mark.parametrize("w", [0.0, 0.4])
def test_uniform_wrapped_normal_sample_marginals_follow_numpyro_cdf(seed, sd, w):
    """Each coordinate's marginal is w Uniform + (1 - w) wrapped N(mu_j, sd_j^2): CDF from numpyro's Normal."""
    chol = _chol(seed, sd)
    mu = jnp.asarray([0.9, 0.05, 0.5], jnp.float32)
    x = np.asarray(jax.vmap(gd.uniform_wrapped_normal_sample, in_axes=(0, None, None, None))(
        jax.random.split(_key(120 + seed + int(10 * w)), N), mu, chol, jnp.float32(w)))
    assert np.all((x >= 0) & (x < 1))
    sd_j = np.sqrt(np.diag(np.asarray(chol) @ np.asarray(chol).T))
    for j in range(3):
        normal = nd.Normal(float(mu[j]), float(sd_j[j]))

        def cdf(t, normal=normal):
            wn = sum(normal.cdf(t + k) - normal.cdf(jnp.float32(k)) for k in range(-3, 4))
            return w * t + (1.0 - w) * wn

        assert _ks(x[:, j], cdf) > P_MIN


# ---- Beta mixtures, Gamma and Beta draws ----------------------------------------------------------------


def test_beta_mixture_logpdf_equals_numpyro_mixture():
    k = 5
    logits = jax.random.normal(_key(130), (6, k))
    alpha = 0.1 + 100.0 * jax.nn.sigmoid(jax.random.normal(_key(131), (6, k)))
    beta = 0.1 + 100.0 * jax.nn.sigmoid(jax.random.normal(_key(132), (6, k)))
    eps = 1e-6
    for r in jnp.linspace(0.01, 0.99, 33):
        rv = jnp.full((6,), r)
        mix = nd.MixtureSameFamily(nd.Categorical(logits=logits), nd.Beta(alpha, beta))
        np.testing.assert_allclose(np.asarray(gd.beta_mixture_logpdf(logits, alpha, beta, rv, eps)),
                                   np.asarray(mix.log_prob(rv)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("i,a", list(enumerate([0.1, 0.5, 1.0, 3.0, 50.0])))
def test_log_gamma_plus1_follows_numpyro_gamma_cdf(i, a):
    g = np.exp(np.asarray(gd.log_gamma_plus1(_key(140 + i), jnp.full((N,), a, jnp.float32))))
    assert _ks(g, nd.Gamma(a + 1.0, 1.0).cdf) > P_MIN


@pytest.mark.parametrize("i,ab", list(enumerate([(0.1, 0.1), (0.5, 2.0), (1.0, 1.0), (5.0, 3.0), (80.0, 20.0)])))
def test_sample_beta_follows_numpyro_beta_cdf(i, ab):
    """KS of the logit draws against numpyro's Beta CDF through the logistic map (at full float32 resolution
    near both bounds: P(logit X <= t) = F_ab(sigmoid(t)) = 1 - F_ba(sigmoid(-t))); the draws on [0, 1] are
    their sigmoid and, away from a float32 pile-up at the bounds (a, b >= 0.5), follow F_ab directly."""
    a, b = ab
    boost = jax.random.uniform(_key(160 + i), (2, N), minval=1e-12, maxval=1.0)
    av, bv = jnp.full((N,), a, jnp.float32), jnp.full((N,), b, jnp.float32)
    logit = np.asarray(gd.sample_beta_logit(_key(180 + i), av, bv, boost))
    f_ab, f_ba = nd.Beta(a, b).cdf, nd.Beta(b, a).cdf

    def cdf_logit(t):
        return jnp.where(t < 0, f_ab(jax.nn.sigmoid(t)), 1.0 - f_ba(jax.nn.sigmoid(-t)))

    assert _ks(logit, cdf_logit) > P_MIN
    x = np.asarray(gd.sample_beta(_key(180 + i), av, bv, boost))
    assert np.all((x >= 0) & (x <= 1))
    np.testing.assert_allclose(1.0 / (1.0 + np.exp(-logit.astype(np.float64))), x, atol=1e-6)
    if min(a, b) >= 0.5:
        assert _ks(x, f_ab) > P_MIN


def test_sample_masked_categorical_frequencies_match_the_tempered_mixture():
    """The key-based sampler the environments call (``gflownet.env.sample_masked_categorical``: two uniforms per
    draw, inverse CDF on rows of ceil(sqrt(n))) draws from (1 - eps) softmax(logits / T) + eps uniform over the
    mask, on 230 entries (the hierarchical env's groups), and never a masked entry."""
    from hgfn_jax.gflownet.env import sample_masked_categorical

    n, m, eps, temp = 230, 200_000, 0.3, 1.7
    logits = jax.random.normal(_key(5), (n,)) * 2.0
    mask = jnp.asarray(np.random.default_rng(1).random(n) < 0.5).at[0].set(False)
    p = np.asarray(nd.Categorical(logits=jnp.where(mask, logits / temp, -1e30)).probs)
    want = (1 - eps) * p + eps * np.asarray(mask, float) / float(mask.sum())
    draws = np.asarray(jax.jit(jax.vmap(lambda k: sample_masked_categorical(k, logits, mask, Exploration.make(
        eps, temp))))(jax.random.split(_key(6), m)))
    assert np.all(np.asarray(mask)[draws])
    freq = np.bincount(draws, minlength=n) / m
    assert 0.5 * np.abs(freq - want).sum() < 0.02  # total variation; sampling noise ~0.01 at 200,000 draws
    np.testing.assert_allclose(freq, want, atol=5 * np.sqrt(want.max() / m))
