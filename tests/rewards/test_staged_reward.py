"""The composite rewards' batched path (properties over the batch, the other terms in site buckets: what ``vmap``
runs) against their per-crystal path on the full padding: every term equal, on data-set cells of 1 to 64 sites
scattered over the padding, skewed and high-symmetry cells, and broken ones (overlap, NaN lattice, no site,
overflow), for both rewards (CHGFlowNet with the graded bond penalties, SHAFT with the band-gap extension: the
staging is the same code for every setting of their terms), in any batch order."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.crystal.convert import from_structure, stack
from hgfn_jax.data import mp
from hgfn_jax.rewards import composite

N = 64
SIZES = (8, 32)  # both at most N / 2, so both are used, plus N


def _scatter(c, seed: int):
    """The same crystal with its real sites spread over the padding (in order)."""
    n = int(np.sum(c.mask))
    pos = np.sort(np.random.default_rng(seed).choice(N, n, replace=False))
    frac, species, mask = np.zeros((N, 3), np.float32), np.zeros(N, np.int32), np.zeros(N, bool)
    frac[pos], species[pos], mask[pos] = np.asarray(c.frac)[:n], np.asarray(c.species)[:n], True
    return c.replace(frac=frac, species=species, mask=mask)


@pytest.fixture(scope="module")
def batch(data_dir):
    meta = mp.read_meta()
    rng = np.random.default_rng(0)
    rows = []
    for lo, hi in ((1, 4), (5, 8), (9, 16), (17, 32), (33, 64)):
        rows += list(rng.choice(np.flatnonzero((meta.nsites.values >= lo) & (meta.nsites.values <= hi)), 5,
                                replace=False))
    sg = meta["spacegroup_symprec0.1"].values
    for group in (225, 229, 194, 166):  # high symmetry
        rows.append(int(rng.choice(np.flatnonzero((sg == group) & (meta.nsites.values <= 16)))))
    ds = mp.load_mp(n_max=N, rows=np.asarray(rows), parse_all=False)
    structures = [ds.get_structure(i) for i in range(len(rows))]
    crystals = [_scatter(from_structure(s, N), i) for i, s in enumerate(structures)]
    skewed = structures[7].copy()
    skewed.make_supercell([[1, 2, 0], [0, 1, 0], [1, 0, 1]])  # the same crystal in a strongly skewed cell
    crystals.append(from_structure(skewed, N))
    c = crystals[12]
    frac = np.array(c.frac)
    first = int(np.flatnonzero(c.mask)[0])
    second = int(np.flatnonzero(c.mask)[1])
    frac[second] = (frac[first] + 0.005) % 1.0  # two atoms ~0.05 A apart
    crystals.append(c.replace(frac=frac))
    crystals.append(c.replace(lattice=np.full(6, np.nan, np.float32)))
    crystals.append(c.replace(mask=np.zeros(N, bool)))
    crystals.append(c.replace(overflow=np.asarray(True)))
    order = np.random.default_rng(1).permutation(len(crystals))  # sizes and broken cells mixed in the batch
    return jax.tree.map(jnp.asarray, stack([crystals[i] for i in order]))


def _energy(crystal):
    """A stand-in property that depends on the real sites only, with a counter (as the in-graph model's)."""
    n = jnp.sum(crystal.mask)
    e = -0.05 * jnp.sum(jnp.where(crystal.mask, crystal.species, 0)) / jnp.maximum(n, 1)
    return e, n % 3 != 0, {"energy_refused_demo": n % 3 == 0}


def _gap(crystal):
    return 0.02 * jnp.sum(crystal.mask).astype(jnp.float32), jnp.asarray(True)


CONFIGS = {
    "chgflownet": lambda: composite.make_chgflownet_reward(
        composite.CHGFlowNetRewardConfig(site_buckets=SIZES, graded_bond=True), _energy),
    "shaft": lambda: composite.make_shaft_reward(
        composite.ShaftRewardConfig(site_buckets=SIZES, w_bandgap=0.1), _energy, _gap),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_batched_reward_equals_the_per_crystal_reward(batch, name):
    reward = CONFIGS[name]()
    batched = jax.jit(jax.vmap(reward))
    log_r, terms = batched(batch)
    ref_log_r, ref_terms = jax.jit(jax.vmap(reward.per_crystal))(batch)
    assert sorted(terms) == sorted(ref_terms)
    np.testing.assert_allclose(np.asarray(log_r), np.asarray(ref_log_r), atol=1e-5, rtol=0)
    for k in ref_terms:
        np.testing.assert_allclose(np.asarray(terms[k]), np.asarray(ref_terms[k]), atol=1e-5, rtol=1e-5, err_msg=k)
    valid = np.asarray(terms["structure_valid"]) > 0
    assert valid.sum() == len(valid) - 3 and np.isfinite(np.asarray(log_r)).all()  # NaN lattice, empty, overflow
    n = np.asarray(batch.mask).sum(1)  # the stand-in's counter reaches the terms, on valid structures only
    np.testing.assert_array_equal(np.asarray(terms["energy_refused_demo"]) > 0, valid & (n % 3 == 0))
    # a crystal's reward does not depend on its batch mates: another order puts it in other chunks
    perm = np.random.default_rng(2).permutation(len(n))
    shuffled = np.asarray(batched(jax.tree.map(lambda x: x[perm], batch))[0])
    np.testing.assert_allclose(shuffled, np.asarray(log_r)[perm], atol=1e-6, rtol=0)


def test_reward_is_a_constant_under_grad(batch):
    reward = CONFIGS["shaft"]()
    g = jax.jit(jax.grad(lambda lat: jnp.sum(jax.vmap(reward)(batch.replace(lattice=lat))[0])))(batch.lattice)
    assert np.all(np.asarray(g) == 0.0)


def test_bad_site_buckets_are_refused_when_the_reward_is_built():
    with pytest.raises(ValueError, match="site bucket sizes"):
        composite.make_chgflownet_reward(composite.CHGFlowNetRewardConfig(site_buckets=(32, 0)), _energy)
    plain = composite.make_chgflownet_reward(composite.CHGFlowNetRewardConfig(site_buckets=()), _energy)
    assert not hasattr(plain, "batch")  # () = the plain per-crystal reward under vmap
