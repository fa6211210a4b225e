"""PGCGM losses and representation against independent references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.crystal.lattice import params_to_matrix
from hgfn_jax.data import pgcgm
from hgfn_jax.gan import losses as L
from hgfn_jax.gan import representation as R

PHI = (0.5, 1.6, 0.0, 6.0)  # inter lower/upper, intra lower/upper (x radius sums) for these tests


def test_gradient_penalty_equals_finite_differences():
    """Toy critic f(x) = sum_i a_i sin(w_i . x) + 0.3 |x|^2 (per sample); GP against central differences in
    float64 at the same interpolates."""
    rng = np.random.default_rng(0)
    wts, amp = rng.normal(size=(5, 12)), rng.normal(size=5)
    real, fake, eps = rng.normal(size=(4, 3, 4)), rng.normal(size=(4, 3, 4)), rng.uniform(size=4)

    def critic_np(x):  # one sample [3, 4]
        v = x.reshape(-1)
        return float(np.sum(amp * np.sin(wts @ v)) + 0.3 * v @ v)

    with jax.enable_x64(True):
        def critic(x):
            v = x.reshape(x.shape[0], -1)
            return jnp.sum(jnp.asarray(amp) * jnp.sin(v @ jnp.asarray(wts).T), axis=1) + 0.3 * jnp.sum(v * v, 1)

        gp = float(L.gradient_penalty(critic, jnp.asarray(real), jnp.asarray(fake), jnp.asarray(eps)))
    h, ref = 1e-6, []
    for b in range(4):
        x = eps[b] * real[b] + (1 - eps[b]) * fake[b]
        g = np.zeros(x.size)
        for i in range(x.size):
            e = np.zeros(x.size)
            e[i] = h
            g[i] = (critic_np(x + e.reshape(x.shape)) - critic_np(x - e.reshape(x.shape))) / (2 * h)
        ref.append((np.linalg.norm(g) - 1.0) ** 2)
    assert gp == pytest.approx(float(np.mean(ref)), rel=1e-6)
    assert gp > 0.1  # a non-trivial value


def test_band_loss_zero_inside_positive_outside():
    h = jnp.asarray([0.5, 1.0, 2.0, 3.0, 3.5])
    out = np.asarray(L.band_loss(h, jnp.asarray(1.0), jnp.asarray(3.0)))
    assert np.allclose(out, [0.25, 0.0, 0.0, 0.0, 0.25])


@pytest.fixture(scope="module")
def real_crystals():
    from hgfn_jax.data.mp import load_mp

    ds = load_mp(n_max=200, n_elements=3, spacegroups=(225, 221, 194, 139, 62), limit=10)
    recs = []
    for i in range(len(ds)):
        m = ds.mask[i]
        status, rec = pgcgm._process((int(ds.row[i]), ds.lattice[i].astype(float), ds.frac[i][m].astype(float),
                                      ds.species[i][m], 0, 4))
        if status == "ok":
            recs.append(rec)
    assert len(recs) >= 5
    return recs


def _physics(rec, k, length_factor=1.0):
    sets = jnp.asarray(rec["aug"][k])
    lengths = jnp.asarray(rec["lengths"]) * length_factor
    mat = params_to_matrix(jnp.concatenate([lengths, jnp.asarray(pgcgm.fixed_angles(rec["spacegroup"]))]))
    hi, ha = R.distance_matrices(sets, mat)
    si, sa = R.radius_sums(jnp.asarray(pgcgm.atomic_radii()[rec["elements"]]))
    return L.distance_losses(hi[None], ha[None], si[None], sa[None], PHI), hi, ha, si, sa


def test_distance_losses_vanish_on_dataset_crystals_and_grow_outside(real_crystals):
    zero = 0
    for rec in real_crystals:
        for k in range(4):
            (li, la), hi, ha, si, sa = _physics(rec, k)
            inside = bool(jnp.all((hi >= PHI[0] * si) & (hi <= PHI[1] * si)) & jnp.all(ha <= PHI[3] * sa[:, None]))
            if inside:
                assert float(li) == 0.0 and float(la) == 0.0
                zero += 1
                (li2, _), *_ = _physics(rec, k, 0.2)  # squeezed cell: atoms closer than the lower bound
                (li3, la3), *_ = _physics(rec, k, 6.0)  # stretched: beyond the upper bounds
                assert float(li2) > 0.0 and float(li3) > 0.0 and float(la3) >= 0.0
            else:
                assert float(li) + float(la) > 0.0
    assert zero >= 10  # most data-set triples lie inside these bounds
    # Intra distances of 0 occur in real crystals (two sets chose the same atom): the lower bound must allow 0.
    assert any(float(jnp.min(_physics(rec, k)[2])) < 1e-3 for rec in real_crystals for k in range(4))


def test_masked_full_average_is_orbit_mean_and_equal_across_sets(real_crystals):
    for rec in real_crystals:
        gi = pgcgm.PGCGM_SPACEGROUPS.index(rec["spacegroup"])
        o, mask = pgcgm.affine_tables()
        f = np.asarray(R.full_average(jnp.asarray(rec["aug"][0]), jnp.asarray(o[gi]), jnp.asarray(mask[gi])))
        for e in range(3):
            orbit = pgcgm.unique_images(o[gi], mask[gi], rec["base"][e])
            assert np.allclose(f[:, e], orbit.mean(axis=0), atol=1e-4)  # F^0 = F^1 = F^2 = orbit mean
        unmasked = np.asarray(R.full_average(jnp.asarray(rec["aug"][0]), jnp.asarray(o[gi]), jnp.ones(192, bool)))
        if mask[gi].sum() < 192 and np.abs(f).max() > 1e-3:
            assert not np.allclose(unmasked, f, atol=1e-3)  # zero padding would skew the average
    # The coordinate losses: real sets agree in F (L_full ~ 0), and L_base is a non-negative cosine penalty.
    o, mask = pgcgm.affine_tables()
    sets = jnp.asarray(np.stack([r["aug"][k] for r in real_crystals for k in range(4)]))
    gi = np.asarray([pgcgm.PGCGM_SPACEGROUPS.index(r["spacegroup"]) for r in real_crystals for _ in range(4)])
    f = jax.vmap(R.full_average)(sets, jnp.asarray(o[gi]), jnp.asarray(mask[gi]))
    assert float(L.full_coordinate_loss(f)) < 1e-4
    assert float(L.base_coordinate_loss(sets)) >= 0.0
    shuffled = f[:, jnp.asarray([0, 1, 2])].at[:, 1].set(f[::-1, 1])
    assert float(L.full_coordinate_loss(shuffled)) > 0.01


def test_crystal_matrix_layout():
    o, mask = pgcgm.affine_tables((225,))
    sets = jnp.full((3, 3, 3), 0.25)
    x = R.crystal_matrix(sets, jnp.asarray([5.0, 5.0, 5.0]), jnp.asarray([90.0, 90.0, 90.0]),
                         jnp.zeros((3, 23)), jnp.asarray(o[0]), jnp.asarray(mask[0]), 10.0)
    assert x.shape == (8, 8, 3) and bool(jnp.all(jnp.isfinite(x)))
    m = np.asarray(x.transpose(2, 0, 1).reshape(3, 64))
    assert np.allclose(m[:, :9], 0.25) and np.allclose(m[:, 50], 0.5)  # B columns; P* = a / scale
    assert np.allclose(m[:, 61:], 0.0)
