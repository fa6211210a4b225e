"""The in-graph property function's batched path (site buckets + packed model, what ``vmap`` runs) against its
per-crystal padded path: same values and refusals on a batch with hard cases, in chunks that run different
bucket sizes; the crystals beyond the largest bucket refused (never truncated) and counted, leaving their batch
mates' values unchanged."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.crystal import site_buckets
from hgfn_jax.crystal.convert import from_structure, stack
from hgfn_jax.models import m3gnet, megnet
from hgfn_jax.models.in_graph import make_jax_property_fn

N = 40  # padded sites: the data-set cells (<= 20) scattered in 40 slots, supercells of up to 40 sites
CLAMP = (-10.0, 10.0)


def _scatter(c, seed: int):
    """The same crystal with its real sites spread over the padding (in order): compaction must undo it."""
    n = int(np.sum(c.mask))
    pos = np.sort(np.random.default_rng(seed).choice(N, n, replace=False))
    frac = np.zeros((N, 3), np.float32)
    species = np.zeros(N, np.int32)
    mask = np.zeros(N, bool)
    frac[pos], species[pos], mask[pos] = np.asarray(c.frac)[:n], np.asarray(c.species)[:n], True
    return c.replace(frac=frac, species=species, mask=mask)


@pytest.fixture(scope="module")
def cases(energy_cases):
    structures, crystals, labels, expect = energy_cases
    nsites = np.array([len(s) for s in structures])
    small = [i for i in range(len(structures)) if expect[i] and nsites[i] <= 8][:10]
    mid = [i for i in range(len(structures)) if expect[i] and 9 <= nsites[i] <= 12][:3]
    big = [i for i in range(len(structures)) if expect[i] and 13 <= nsites[i] <= 20][:3]
    out, names = [], []
    for i in small + mid:
        out.append(_scatter(from_structure(structures[i], N), i))
        names.append(labels[i])
    for i in big:  # 26 to 40 sites: beyond the 24-site bucket
        s = structures[i].copy()
        s.make_supercell([2, 1, 1])
        out.append(from_structure(s, N))
        names.append(f"{labels[i]} x2")
    g = from_structure(structures[small[0]], N)
    frac = np.array(g.frac)
    frac[1] = (frac[0] + np.array([0.01, 0.0, 0.0])) % 1.0
    hard = {"overlap": g.replace(frac=frac), "overflow flag": g.replace(overflow=np.asarray(True))}
    for label in ("dense", "thin", "Am"):
        c = crystals[labels.index(label)]
        hard[label] = c.replace(frac=np.pad(np.asarray(c.frac), ((0, N - 20), (0, 0))),
                                species=np.pad(np.asarray(c.species), (0, N - 20)),
                                mask=np.pad(np.asarray(c.mask), (0, N - 20)))
    # hard cases in the middle of the batch, between valid ones
    mixed = out[:5] + list(hard.values()) + out[5:]
    names = names[:5] + list(hard) + names[5:]
    return jax.tree.map(jnp.asarray, stack(mixed)), names, (8, 12, 24, 40), big, structures


def test_batched_path_equals_the_per_crystal_path(cases, model=m3gnet.NAME):
    """M3GNet (the battery default) only: what is tested here (bucket choice, compaction, refusals, batch-mate
    independence) is the same code for both models; MEGNet's packed ``energy_batch`` equals its per-crystal model in
    tests/models/test_megnet_jax.py, and its batched path runs in the whole in-graph battery run
    (tests/experiments/test_battery_energy_backend.py). The MEGNet case cost ~46 s of the suite."""
    batch, names, sizes, big, structures = cases
    v_ref, ok_ref = (np.asarray(x) for x in
                     jax.jit(jax.vmap(make_jax_property_fn(model, clamp=CLAMP).per_crystal))(batch)[:2])
    sites = np.asarray(batch.mask).sum(1)
    # 21 crystals in seven chunks of 3 at different sizes (the 24-site bucket below: three chunks of 8, one padded)
    fn = make_jax_property_fn(model, clamp=CLAMP, buckets=sizes, chunk=3)
    v, ok, counters = jax.jit(jax.vmap(fn))(batch)  # vmap runs the batched path
    v, ok = np.asarray(v), np.asarray(ok)
    assert not np.asarray(counters["energy_over_capacity"]).any()  # the padded size is the largest bucket
    np.testing.assert_array_equal(ok, ok_ref, err_msg=str(names))
    for label in ("overlap", "overflow flag", "dense", "thin", "Am"):
        assert not ok[names.index(label)], label
    assert ok.sum() >= 16 and ok[sites > 24].sum() == 3  # the supercells evaluated at 40 sites
    np.testing.assert_allclose(v[ok], v_ref[ok], atol=1e-5, rtol=0)
    assert (v[~ok] == CLAMP[1]).all()

    # largest bucket 24 sites: the three supercells refused and counted, never truncated; the others unchanged
    fn = make_jax_property_fn(model, clamp=CLAMP, buckets=(12, 24))
    v, ok, counters = jax.jit(jax.vmap(fn))(batch)
    v, ok, over = np.asarray(v), np.asarray(ok), np.asarray(counters["energy_over_capacity"])
    np.testing.assert_array_equal(np.flatnonzero(over), np.flatnonzero(sites > 24))
    assert not ok[sites > 24].any() and (v[sites > 24] == CLAMP[1]).all()
    others = sites <= 24
    np.testing.assert_array_equal(ok[others], ok_ref[others])
    np.testing.assert_allclose(v[others & ok], v_ref[others & ok], atol=1e-5, rtol=0)

    # the valid crystals alone (no refused batch mates, other chunks): the same values
    keep = np.flatnonzero(ok)
    alone = jax.tree.map(lambda x: x[keep], batch)
    v_alone, ok_alone, _ = jax.jit(fn.batch)(alone)
    assert np.asarray(ok_alone).all()
    np.testing.assert_allclose(np.asarray(v_alone), v[keep], atol=1e-5, rtol=0)


def test_the_energy_is_never_differentiated(cases):
    """Under grad (the training loss), the batched path's input is stop_gradient: zero gradient, no NaN."""
    batch = cases[0]
    fn = make_jax_property_fn(megnet.NAME, clamp=CLAMP, buckets=cases[2])
    loss = lambda lat: jnp.sum(jax.vmap(fn)(batch.replace(lattice=lat))[0])
    g = jax.jit(jax.grad(loss))(batch.lattice)
    assert np.all(np.asarray(g) == 0.0)


def test_bad_buckets_are_refused():
    with pytest.raises(ValueError, match="sizes"):
        site_buckets.sizes_for((), 40)
    with pytest.raises(ValueError, match="sizes"):
        site_buckets.sizes_for((16, 0), 40)
    assert site_buckets.sizes_for((64, 8, 16, 16), 40) == (8, 16, 40)
    with pytest.raises(ValueError, match="share"):  # the former (sites, share) format, named in the error
        make_jax_property_fn(megnet.NAME, clamp=CLAMP, buckets=((16, None), (40, 0.5)))


@pytest.mark.parametrize("module", [m3gnet, megnet])
def test_crowded_proves_the_graph_overflow(energy_cases, module):
    """``geometry.crowded`` (the batched path's early capacity refusal) is never True where the model's full
    neighbour search holds every neighbour; it catches the 20-atom 4.5 A cube."""
    from hgfn_jax.crystal.geometry import crowded
    from hgfn_jax.models.graph import radius_graph

    _, crystals, labels, _ = energy_cases
    batch = jax.tree.map(jnp.asarray, stack(crystals))
    flags = jax.jit(jax.vmap(lambda c: (crowded(c, module.DEFAULT_K, module.CUTOFF),
                                        radius_graph(c, module.CUTOFF, module.DEFAULT_K).overflow)))(batch)
    proof, overflow = (np.asarray(f) for f in flags)
    assert not (proof & ~overflow).any(), np.asarray(labels)[proof & ~overflow]
    assert proof[labels.index("dense")]
