"""Hierarchical crystal env (CHGFlowNet / SHAFT) and flat baseline: densities, log-probabilities, structures.

References are independent of the code under test: scipy's truncated normal / von Mises / multivariate normal
densities, numerical quadrature, pymatgen's ``Structure.from_spacegroup``, ``SpaceGroup`` operations and
``SpacegroupAnalyzer``, and the lattice constraints of paper 000 Table 5 written out by crystal system.
"""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from pymatgen.symmetry.groups import PointGroup, SpaceGroup
from scipy import integrate, stats

from hgfn_jax.crystal.convert import to_structure
from hgfn_jax.crystal.orbit import DEFAULT_TOL
from hgfn_jax.envs.flat import FlatEnv
from hgfn_jax.envs.hierarchical import HierarchicalConfig, HierarchicalEnv
from hgfn_jax.envs.hierarchical import parameters as hp
from hgfn_jax.gflownet import distributions as gd
from hgfn_jax.gflownet.env import Exploration
from hgfn_jax.gflownet.rollout import rollout
from hgfn_jax.policies.hierarchical import make_hierarchical_policy
from hgfn_jax.policies.mlp import make_mlp_policy

ENVS = [HierarchicalEnv, FlatEnv]
IDS = ["hierarchical", "flat"]

# Paper 000 Table 5 with pymatgen's settings (monoclinic unique axis b, R groups in hexagonal axes):
# free parameters (a, b, c, alpha, beta, gamma) per crystal system.
FREE = {
    "triclinic": [1, 1, 1, 1, 1, 1],
    "monoclinic": [1, 1, 1, 0, 1, 0],
    "orthorhombic": [1, 1, 1, 0, 0, 0],
    "tetragonal": [1, 0, 1, 0, 0, 0],
    "trigonal": [1, 0, 1, 0, 0, 0],
    "hexagonal": [1, 0, 1, 0, 0, 0],
    "cubic": [1, 0, 0, 0, 0, 0],
}


def _free(g: int) -> np.ndarray:
    return np.asarray(FREE[SpaceGroup.from_int_number(int(g)).crystal_system], bool)


def _perturbed_policy(env, key, scale=0.5):
    policy = make_mlp_policy(env, hidden=(32,))
    params = jax.jit(policy.init)(key, jax.tree.map(lambda x: x[None], env.init()))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    leaves = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return policy, jax.tree.unflatten(tree, leaves)


# ---------------------------------------------------------------------------------------------------------
# continuous densities
# ---------------------------------------------------------------------------------------------------------

TN_PARAMS = [(0.5, 0.05), (0.1, 0.3), (0.0, 0.02), (0.97, 0.03), (0.3, 50.0), (1.0, 1.0)]
VM_PARAMS = [(0.0, 1e-3), (1.0, 0.05), (-2.5, 3.0), (3.0, 60.0), (0.2, 400.0)]


@pytest.mark.parametrize("m,s", TN_PARAMS)
def test_hier_truncnorm_density_matches_scipy_and_integrates_to_one(m, s):
    f = jax.jit(gd.truncnorm_log_prob)
    u = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    ref = stats.truncnorm(a=-m / s, b=(1 - m) / s, loc=m, scale=s).logpdf(u)
    np.testing.assert_allclose(np.asarray(f(u, m, s)), ref, rtol=2e-4, atol=2e-3)
    total, _ = integrate.quad(
        lambda x: float(np.exp(f(np.float32(x), m, s))), 0.0, 1.0, points=[min(max(m, 0), 1)], limit=200
    )
    assert total == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("mu,kappa", VM_PARAMS)
def test_hier_vonmises_density_matches_scipy_and_integrates_to_one(mu, kappa):
    f = jax.jit(gd.vonmises_u_log_prob)
    u = np.linspace(0.0, 1.0, 101, endpoint=False, dtype=np.float32)
    ref = stats.vonmises(kappa, loc=mu).logpdf(2 * np.pi * u - np.pi) + np.log(2 * np.pi)  # Jacobian 2 pi
    np.testing.assert_allclose(np.asarray(f(u, mu, kappa)), ref, rtol=1e-4, atol=2e-3)
    peak = ((mu + np.pi) / (2 * np.pi)) % 1.0
    total, _ = integrate.quad(
        lambda x: float(np.exp(f(np.float32(x), mu, kappa))), 0.0, 1.0, points=[peak], limit=400
    )
    assert total == pytest.approx(1.0, abs=2e-3)


def _wrapped_normal_reference(x, mu, cov, images=3):
    ks = np.array(list(itertools.product(range(-images, images + 1), repeat=3)), float)
    d = (x - np.mod(mu, 1.0))[:, None, :] + ks[None]  # [n, K, 3]; periodic density: mean taken mod 1
    return stats.multivariate_normal(np.zeros(3), cov).pdf(d.reshape(-1, 3)).reshape(d.shape[:2]).sum(1)


def test_hier_frac_density_matches_image_sum_and_integrates_to_one(rng):
    raws = [
        np.zeros(10, np.float32),
        np.asarray(jax.random.normal(rng(), (10,))),
        np.asarray(jnp.array([0.3, 0.9, 0.1, -1.5, -1.0, -2.0, 1.5, -0.8, 0.6, -6.0])),
    ]
    n_grid = 48
    g1 = (np.arange(n_grid) + 0.5) / n_grid
    grid = np.stack(np.meshgrid(g1, g1, g1, indexing="ij"), -1).reshape(-1, 3).astype(np.float32)
    v_lp = jax.jit(jax.vmap(hp.frac_log_prob, in_axes=(0, None)))
    v_wn = jax.jit(jax.vmap(gd.wrapped_normal_log_prob, in_axes=(0, None, None)))
    for raw in raws:
        raw = np.asarray(raw, np.float32)
        mu, chol, w = (np.asarray(a, np.float64) for a in hp.frac_params(jnp.asarray(raw)))
        cov = chol @ chol.T
        assert np.all(np.sqrt(np.diag(cov)) <= hp.FRAC_SCALE_MAX + 1e-6)
        x = np.asarray(jax.random.uniform(rng(), (200, 3)))
        ref = _wrapped_normal_reference(x.astype(float), mu, cov)
        np.testing.assert_allclose(np.exp(np.asarray(v_wn(x, mu, chol))), ref, rtol=2e-4, atol=1e-5)
        np.testing.assert_allclose(np.exp(np.asarray(v_lp(x, raw))), w + (1 - w) * ref, rtol=2e-4, atol=1e-5)
        if np.min(np.sqrt(np.diag(cov))) > 0.05:  # midpoint rule on the torus is exact to ~1e-6 here
            assert float(np.mean(np.exp(np.asarray(v_lp(grid, raw))))) == pytest.approx(1.0, abs=1e-3)
            assert float(np.mean(np.exp(np.asarray(v_wn(grid, mu, chol))))) == pytest.approx(1.0, abs=1e-3)
    assert hp.TRUNCATION_BOUND < 2e-6


@pytest.mark.parametrize("w_logit", [-30.0, 0.0, 14.0, 30.0])
def test_hier_frac_log_prob_gradient_finite_for_saturated_mixture_weight(w_logit):
    """Uniform weight w = sigmoid(raw[9] + 4) rounds to 1 in float32 for large logits: the log-density stays the
    float64 mixture formula and its gradient finite (log1p(-w) = -inf made it NaN and poisoned training)."""
    raw = np.asarray([0.3, 0.9, 0.1, -1.5, -1.0, -2.0, 1.5, -0.8, 0.6, 0.0], np.float32)
    raw[9] = w_logit - 4.0
    x = np.asarray([0.61, 0.14, 0.98], np.float32)
    mu, chol, _ = (np.asarray(a, np.float64) for a in hp.frac_params(jnp.asarray(raw)))
    wn = _wrapped_normal_reference(x[None].astype(float), mu, chol @ chol.T)[0]
    log_w, log_1mw = -np.logaddexp(0.0, -float(w_logit)), -np.logaddexp(0.0, float(w_logit))
    ref = np.logaddexp(log_w, log_1mw + np.log(wn))
    assert float(hp.frac_log_prob(jnp.asarray(x), jnp.asarray(raw))) == pytest.approx(ref, abs=1e-4)
    grad = np.asarray(jax.grad(hp.frac_log_prob, argnums=1)(jnp.asarray(x), jnp.asarray(raw)))
    assert np.all(np.isfinite(grad))


def test_hier_samplers_follow_their_densities(rng):
    n = 20_000
    for m, s in TN_PARAMS[:4]:
        u = np.asarray(
            jax.jit(jax.vmap(gd.truncnorm_sample, in_axes=(0, None, None)))(
                jax.random.split(rng(), n), m, s
            )
        )
        assert stats.kstest(u, stats.truncnorm(a=-m / s, b=(1 - m) / s, loc=m, scale=s).cdf).pvalue > 1e-3
    for mu, kappa in VM_PARAMS:
        u = np.asarray(
            jax.jit(jax.vmap(gd.vonmises_u_sample, in_axes=(0, None, None)))(
                jax.random.split(rng(), n), jnp.float32(mu), jnp.float32(kappa)
            )
        )
        assert np.all((u >= 0) & (u < 1))
        centred = np.mod(2 * np.pi * u - np.pi - mu + np.pi, 2 * np.pi) - np.pi  # scipy's cdf is on loc +- pi
        assert stats.kstest(centred, stats.vonmises(kappa).cdf).pvalue > 1e-3, (mu, kappa)
    # coordinates: E cos 2 pi (x_i - mu_i) = (1 - w) exp(-2 pi^2 Sigma_ii) for the wrapped-normal mixture
    raw = jnp.array([0.2, 0.7, 0.95, -1.0, 0.0, -2.0, 1.2, 0.0, 0.0, -4.5])
    x = np.asarray(jax.jit(jax.vmap(hp.frac_sample, in_axes=(0, None)))(jax.random.split(rng(), n), raw))
    assert np.all((x >= 0) & (x < 1))
    mu, chol, w = (np.asarray(a, np.float64) for a in hp.frac_params(raw))
    cov = chol @ chol.T
    emp = np.mean(np.cos(2 * np.pi * (x - mu)), axis=0)
    np.testing.assert_allclose(emp, (1 - w) * np.exp(-2 * np.pi**2 * np.diag(cov)), atol=0.02)
    var01 = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    emp01 = np.mean(np.cos(2 * np.pi * ((x[:, 0] - mu[0]) - (x[:, 1] - mu[1]))))
    assert emp01 == pytest.approx((1 - w) * np.exp(-2 * np.pi**2 * var01), abs=0.02)


# ---------------------------------------------------------------------------------------------------------
# transitions: log-probabilities against an independent reference
# ---------------------------------------------------------------------------------------------------------

SMALL = HierarchicalConfig(
    num_steps=3,
    spacegroups=(1, 5, 47, 99, 166, 191, 221),
    elements=("Li", "Na", "O", "S"),
    required_elements=("Li", "Na"),
    max_required_kinds=1,
    max_distinct_elements=2,
    n_max=48,
)


def _valid_next(prefix, e, cfg, elements):
    """Independent composition rule: can ``prefix + [e]`` still be completed to a valid list of length T?"""
    seq = list(prefix) + [e]
    rest = cfg.num_steps - len(seq)
    for tail in itertools.product(range(len(elements)), repeat=rest):
        full = seq + list(tail)
        kinds = {elements[i] for i in full}
        req = kinds & set(cfg.required_elements)
        if (
            len(kinds) <= cfg.max_distinct_elements
            and len(req) <= cfg.max_required_kinds
            and (req or not cfg.required_elements)
        ):
            return True
    return False


def _reference_atom_lattice_logp(fwd, group, action, prefix, cfg, n_groups):
    """log P_F of one atom-lattice choice from scipy densities, Table 5 free parameters, composition rule."""
    lat = np.asarray(fwd[n_groups : n_groups + 12]).reshape(6, 2)
    m, s = (np.asarray(a, float) for a in hp.length_params(jnp.asarray(lat)))
    mu, kappa = (np.asarray(a, float) for a in hp.angle_params(jnp.asarray(lat)))
    u = np.asarray(action["lattice_u"], float)
    lp = 0.0
    for i in np.nonzero(_free(group))[0]:
        if i < 3:
            lp += stats.truncnorm(a=-m[i] / s[i], b=(1 - m[i]) / s[i], loc=m[i], scale=s[i]).logpdf(u[i])
        else:
            lp += stats.vonmises(kappa[i], loc=mu[i]).logpdf(2 * np.pi * u[i] - np.pi) + np.log(2 * np.pi)
    fr, fc, w = (
        np.asarray(a, np.float64) for a in hp.frac_params(jnp.asarray(fwd[n_groups + 12 : n_groups + 22]))
    )
    dens = _wrapped_normal_reference(np.asarray(action["frac"], float)[None], fr, fc @ fc.T)[0]
    lp += np.log(w + (1 - w) * dens)
    el_logits = np.asarray(fwd[n_groups + 22 :], float)
    valid = np.array([_valid_next(prefix, e, cfg, cfg.elements) for e in range(len(cfg.elements))])
    logits = np.where(valid, el_logits, -np.inf)
    lp += logits[action["element_index"]] - np.logaddexp.reduce(logits[valid])
    return lp


@pytest.mark.parametrize("env_cls", ENVS, ids=IDS)
def test_hier_log_pf_and_log_pb_match_independent_reference(env_cls, rng):
    env = env_cls(SMALL)
    policy, params = _perturbed_policy(env, rng())
    traj = jax.jit(
        lambda k: rollout(k, env, policy.apply, params, 24, Exploration.make(0.3, 1.0), return_states=True)
    )(rng())
    assert bool(jnp.all(traj.done)) and bool(jnp.all(traj.step_mask))
    groups = np.asarray(SMALL.spacegroups)
    n_g = len(groups)
    n_b, n_t = 12, env.max_steps
    states = jax.device_get(jax.tree.map(lambda x: x[:n_b], traj.states))
    flat = jax.tree.map(lambda x: x.reshape((n_b * n_t,) + x.shape[2:]), states)
    fwd_all = np.asarray(jax.jit(policy.apply)(params, flat)[0], np.float64).reshape(n_b, n_t, -1)
    actions = {k: np.asarray(v) for k, v in vars(traj.actions).items()}
    for b in range(n_b):
        for t in range(n_t):
            st = jax.tree.map(lambda x, b=b, t=t: x[b, t], states)
            fwd = fwd_all[b, t]
            act = {k: v[b, t] for k, v in actions.items()}
            g_logp = fwd[:n_g] - np.logaddexp.reduce(fwd[:n_g])
            prefix = [int(e) for e in np.asarray(st.ref_element)[: int(st.num_atoms)]]
            hier_group_step = env_cls is HierarchicalEnv and int(st.phase) == 0
            if hier_group_step:
                ref_pf, ref_pb = g_logp[act["group_index"]], 0.0
            else:
                gi = int(act["group_index"])
                if env_cls is HierarchicalEnv:
                    assert gi == int(st.group_index)  # phase 1: the group chosen by the previous transition
                ref_pf = _reference_atom_lattice_logp(fwd, groups[gi], act, prefix, SMALL, n_g)
                if env_cls is FlatEnv:
                    ref_pf += g_logp[gi]
                ref_pb = 0.0 if len(prefix) == 0 else -np.log(n_g)  # removed atom, previous group uniform
            assert float(traj.log_pf[b, t]) == pytest.approx(ref_pf, abs=2e-3, rel=1e-4), (b, t)
            assert float(traj.log_pb[b, t]) == pytest.approx(ref_pb, abs=1e-5), (b, t)


@pytest.mark.parametrize("env_cls", ENVS, ids=IDS)
def test_hier_s0_and_composition_mask_has_no_dead_end(env_cls, rng):
    env = env_cls(SMALL)
    s0 = env.init()
    assert int(s0.spacegroup) == 1 and int(s0.num_atoms) == 0 and not bool(jnp.any(s0.crystal.mask))
    np.testing.assert_allclose(np.asarray(s0.lattice), [4, 4, 4, 90, 90, 90])
    assert env.max_steps == (2 * 3 if env_cls is HierarchicalEnv else 3)
    policy = make_mlp_policy(env, hidden=(8,))
    params = jax.jit(policy.init)(rng(), jax.tree.map(lambda x: x[None], s0))
    traj = jax.jit(lambda k: rollout(k, env, policy.apply, params, 3000, Exploration.make(1.0, 1.0)))(rng())
    assert bool(jnp.all(traj.done)) and bool(jnp.all(jnp.isfinite(traj.log_pf)))
    assert float(jnp.min(traj.log_pf)) > -60  # no masked element / group was ever taken
    seen = {tuple(int(e) for e in row) for row in np.asarray(traj.final.ref_element)}
    elements = SMALL.elements
    valid = set()
    for seq in itertools.product(range(len(elements)), repeat=3):
        kinds = {elements[i] for i in seq}
        if len(kinds) <= 2 and len(kinds & {"Li", "Na"}) == 1:
            valid.add(seq)
    assert seen == valid  # every valid ordered list is reachable, nothing else is
    np.testing.assert_array_equal(
        np.asarray(traj.final.ref_species), np.array([3, 11, 8, 16])[np.asarray(traj.final.ref_element)]
    )


# ---------------------------------------------------------------------------------------------------------
# emitted structures: constraints, pymatgen round trip, symmetry, overflow
# ---------------------------------------------------------------------------------------------------------


def _point_group_order(g: int) -> int:
    return len(PointGroup(SpaceGroup.from_int_number(int(g)).point_group).symmetry_ops)


def _check_symmetric(structure: Structure, group: int, tol=2.5e-3):
    """Every operation of the group (pymatgen's own list) maps the sites onto sites of the same species. The
    tolerance covers the orbit merge (images of one atom closer than 1e-3, periodic L1, are one site, so a
    point that near a special position is up to ~2e-3 off its image); a generic violation is O(0.1)."""
    frac = structure.frac_coords
    species = np.array([s.specie.Z for s in structure])
    for op in SpaceGroup.from_int_number(group).symmetry_ops:
        img = op.operate_multi(frac)
        d = img[:, None, :] - frac[None, :, :]
        d = np.abs(d - np.round(d)).max(-1)  # [n, n]
        match = (d < tol) & (species[:, None] == species[None, :])
        assert match.any(axis=1).all(), f"structure not invariant under {op} of group {group}"


@pytest.mark.parametrize("env_cls", ENVS, ids=IDS)
def test_hier_emitted_structures_roundtrip_and_keep_the_group_symmetry(env_cls, rng):
    cfg = HierarchicalConfig(num_steps=3, n_max=64)  # all 230 groups, battery elements, paper s0
    env = env_cls(cfg)
    policy = make_mlp_policy(env, hidden=(8,))
    params = jax.jit(policy.init)(rng(), jax.tree.map(lambda x: x[None], env.init()))
    traj = jax.jit(lambda k: rollout(k, env, policy.apply, params, 40, Exploration.make(0.5, 1.0)))(rng())
    fin = jax.device_get(traj.final)
    n_checked = n_overflow = n_detected = 0
    for b in range(40):
        g = int(fin.spacegroup[b])
        lat = np.asarray(fin.lattice[b], float)
        free = _free(g)
        lo = np.array([2, 2, 2, 60, 60, 60.0])
        assert np.all(
            (lat[free] >= lo[free] - 1e-4)
            & (lat[free] <= lo[free] + np.array([8, 8, 8, 60, 60, 60])[free] + 1e-4)
        )
        species = [int(z) for z in fin.ref_species[b]]
        kinds = set(species)
        assert len(kinds) <= 4 and len(kinds & {3, 11, 19}) == 1
        # pymatgen rejects a lattice incompatible with the group's crystal system (constraints applied right).
        # tol = the env's orbit merge tolerance (pymatgen's default, 1e-5; crystal.orbit.DEFAULT_TOL)
        ref = Structure.from_spacegroup(
            g, Lattice.from_parameters(*lat), species, np.asarray(fin.ref_frac[b], float), tol=DEFAULT_TOL
        )
        ours = jax.tree.map(lambda x, b=b: x[b], fin.crystal)
        assert int(ours.spacegroup) == g
        if len(ref) > cfg.n_max:
            assert bool(ours.overflow), "cell larger than n_max not flagged"
            n_overflow += 1
            continue
        assert not bool(ours.overflow) and int(ours.num_sites) == len(ref), (g, len(ref), int(ours.num_sites))
        s = to_structure(ours)
        assert s.composition.reduced_formula == ref.composition.reduced_formula
        np.testing.assert_allclose(s.lattice.abc, ref.lattice.abc, rtol=1e-5)
        np.testing.assert_allclose(s.lattice.angles, ref.lattice.angles, atol=1e-3)
        _check_symmetric(s, g)
        n_checked += 1
        dmat = s.distance_matrix + np.eye(len(s)) * 1e9
        if len(s) > 1 and dmat.min() < 0.5:
            continue  # near-overlapping sites (random cells): spglib gives up
        detected = SpacegroupAnalyzer(s, symprec=0.1).get_space_group_number()
        assert _point_group_order(detected) >= _point_group_order(g), (
            g,
            detected,
        )  # a supergroup (necessary)
        n_detected += 1
    assert n_checked >= 15 and n_overflow >= 1 and n_detected >= 5, (n_checked, n_overflow, n_detected)


# ---------------------------------------------------------------------------------------------------------
# jit hygiene
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_cls", ENVS, ids=IDS)
def test_hier_rollout_with_hierarchical_policy_no_retrace_no_nan(env_cls, rng, debug_nans):
    chex.clear_trace_counter()
    env = env_cls(HierarchicalConfig(num_steps=3, n_max=24, learn_backward_group=True))
    policy = make_hierarchical_policy(env, encoder="deepsets", hidden=16, head_hidden=(16,))
    params = jax.jit(policy.init)(rng(), jax.tree.map(lambda x: x[None], env.init()))
    leaves, tree = jax.tree.flatten(params)
    params = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(rng(), x.shape) for x in leaves])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(key, p):
        traj = rollout(key, env, policy.apply, p, 16, Exploration.make(0.2, 1.0))
        return traj, jnp.sum(traj.sum_log_pf - traj.sum_log_pb)

    for _ in range(2):
        traj, total = run(rng(), params)
        assert bool(jnp.all(traj.done)) and bool(jnp.isfinite(total))
        assert bool(jnp.all(jnp.isfinite(traj.log_pf))) and bool(jnp.all(jnp.isfinite(traj.log_pb)))

    # the gradient of the trajectory-balance terms is finite too
    def tb_terms(p, key):
        traj = rollout(key, env, policy.apply, p, 8, Exploration.make(0.2, 1.0))
        return jnp.sum(traj.sum_log_pf - traj.sum_log_pb)

    grads = jax.jit(jax.grad(tb_terms))(params, rng())
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grads))


def test_hier_step_batch_equals_vmapped_step(rng):
    """The batched step (which skips the orbit expansion on group transitions) and the batched sampler (which
    draws only the group or only the atom-lattice part) are bitwise the vmapped per-state methods, on lockstep
    batches of every step (each branch), on mixed batches and on terminal states."""
    env = HierarchicalEnv(HierarchicalConfig(num_steps=3, n_max=48))
    policy = make_hierarchical_policy(env, encoder="deepsets", hidden=16, head_hidden=(16,))
    params = jax.jit(policy.init)(rng(), jax.tree.map(lambda x: x[None], env.init()))
    traj = jax.jit(
        lambda k: rollout(k, env, policy.apply, params, 32, Exploration.make(0.2, 1.0), return_states=True)
    )(rng())
    at = lambda tree, t: jax.tree.map(lambda x: x[:, t], tree)  # noqa: E731
    batches = [(at(traj.states, t), at(traj.actions, t)) for t in range(env.max_steps)]
    batches.append(tuple(jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), (traj.states, traj.actions))))
    batches.append((traj.final, at(traj.actions, 0)))
    batched, vmapped = jax.jit(env.step_batch), jax.jit(jax.vmap(env.step))
    sample_b = jax.jit(env.sample_action_batch)
    sample_v = jax.jit(jax.vmap(env.sample_action, in_axes=(0, 0, 0, None)))
    explore = Exploration.make(0.3, 1.5)
    phases = set()
    for states, actions in batches:
        got, want = jax.tree.leaves(batched(states, actions)), jax.tree.leaves(vmapped(states, actions))
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        keys = jax.random.split(rng(), states.phase.shape[0])
        fwd = jax.random.normal(rng(), (states.phase.shape[0], env.fwd_dim))  # any policy output
        got, want = sample_b(keys, fwd, states, explore), sample_v(keys, fwd, states, explore)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        phases.add(tuple(np.unique(np.asarray(states.phase))))
        # a drawn group on group transitions, the state's own group on placements
        g = np.asarray(got.group_index)
        ph1 = np.asarray(states.phase) == 1
        np.testing.assert_array_equal(g[ph1], np.maximum(np.asarray(states.group_index), 0)[ph1])
    assert {(0,), (1,), (0, 1)} <= phases  # every branch of sample_action_batch was compared
    # site_ref: provenance of every site of the expanded cell (-1 = padding)
    sr, mask = np.asarray(traj.final.site_ref), np.asarray(traj.final.crystal.mask)
    assert np.all((sr >= 0) == mask) and np.all(sr < env.T)
    ref_z = np.take_along_axis(np.asarray(traj.final.ref_species), np.maximum(sr, 0), axis=1)
    np.testing.assert_array_equal(np.where(mask, ref_z, 0), np.asarray(traj.final.crystal.species))
