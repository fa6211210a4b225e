"""The JAX MEGNet Eform equals the fixed host-side matgl model; it never reports a number for a graph it got wrong.

Reference: ``hgfn_jax.rewards.energy_models`` (matgl 4.1.2 + ``matgl_fix``), evaluated on the pymatgen structures
parsed from the CIFs, while the JAX model reads the padded arrays of the data-set cache (lattice parameters in
the project's orientation): the comparison also covers rotation and padding. One batched compile for all cases.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from hgfn_jax.crystal.convert import from_structure, stack
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.data import mp
from hgfn_jax.models import convert, megnet
from hgfn_jax.models.graph import radius_graph
from hgfn_jax.rewards.energy_models import get_property_model

N_MAX = 20
N_RANDOM = 48
HIGH_SYMMETRY = (225, 229, 221, 227, 194, 191, 166, 139)  # Fm-3m, Im-3m, Pm-3m, Fd-3m, P6_3/mmc, P6/mmm, R-3m, I4/mmm
SKEW = np.array([[1, 2, 0], [0, 1, 0], [1, 0, 1]])  # unimodular: the same crystal in a strongly skewed cell
TOL = 1e-4  # eV/atom


def _cases():
    """(structures for the host, crystals for JAX, labels, expected validity)."""
    meta = mp.read_meta()
    small = meta.nsites.values <= N_MAX
    rng = np.random.default_rng(0)
    rows = list(rng.choice(np.flatnonzero(small), N_RANDOM, replace=False))
    sg = meta["spacegroup_symprec0.1"].values
    for group in HIGH_SYMMETRY:
        cand = np.flatnonzero(small & (sg == group))
        rows.append(int(rng.choice(cand)))
    ds = mp.load_mp(n_max=N_MAX, rows=np.asarray(rows), parse_all=False)
    structures = [ds.get_structure(i) for i in range(len(rows))]
    crystals = [
        Crystal(
            lattice=ds.lattice[i],
            frac=ds.frac[i],
            species=ds.species[i],
            mask=ds.mask[i],
            spacegroup=ds.spacegroup[i],
            overflow=np.asarray(False),
        )
        for i in range(len(rows))
    ]
    labels = [f"{ds.material_id[i]} (sg {ds.spacegroup[i]})" for i in range(len(rows))]
    expect = [True] * len(rows)
    for i in range(4):  # skewed, non-reduced cells of data-set crystals
        s = structures[i].copy()
        s.make_supercell(SKEW)
        structures.append(s)
        crystals.append(from_structure(s, N_MAX))
        labels.append(f"{labels[i]} skewed")
        expect.append(True)
    # Refusals (host value irrelevant): 20 atoms in a 4.5 A cube (> 48 neighbours within 4 A), a 1.3 A cubic cell
    # (image window too small and over capacity), an element outside the model's 89 (Am), an overflowed crystal.
    dense = Structure(Lattice.cubic(4.5), ["Si"] * 20, np.random.default_rng(1).random((20, 3)))
    thin = Structure(Lattice.cubic(1.3), ["Li"], [[0, 0, 0]])
    am = Structure(Lattice.cubic(3.5), ["Am", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    for s, label in ((dense, "dense"), (thin, "thin"), (am, "Am")):
        structures.append(s)
        crystals.append(from_structure(s, N_MAX))
        labels.append(label)
        expect.append(False)
    over = from_structure(structures[0], N_MAX).replace(overflow=np.asarray(True))
    structures.append(structures[0])
    crystals.append(over)
    labels.append("overflow flag")
    expect.append(False)
    return structures, crystals, labels, np.asarray(expect)


@pytest.fixture(scope="module")
def results(model_dir):
    structures, crystals, labels, expect = _cases()
    params = megnet.load_params()
    batch = jax.tree_util.tree_map(jnp.asarray, stack(crystals))

    def one(p, c):  # the graph's overflow flag from the same compile (XLA shares the neighbour search)
        return (*megnet.energy(p, c), radius_graph(c, megnet.CUTOFF, megnet.DEFAULT_K).overflow)

    e, valid, overflow = jax.jit(jax.vmap(one, in_axes=(None, 0)))(params, batch)
    host, host_ok = get_property_model(megnet.NAME).predict(structures[: int(expect.sum())])
    return {
        "e": np.asarray(e, np.float64),
        "valid": np.asarray(valid),
        "host": host,
        "host_ok": host_ok,
        "labels": labels,
        "expect": expect,
        "overflow": np.asarray(overflow),
    }


def test_megnet_jax_equals_fixed_matgl(results):
    n = int(results["expect"].sum())
    e, valid, host = results["e"][:n], results["valid"][:n], results["host"]
    ok = results["host_ok"]
    assert ok.sum() >= n - 2  # the host refuses cells without any bond within 4 A (no_bonds), as JAX must
    np.testing.assert_array_equal(valid, ok, err_msg=str(results["labels"]))
    err = np.abs(e - host)[ok]
    print(f"MEGNet JAX vs matgl: {ok.sum()} cells, max |diff| {err.max():.2e} eV/atom")
    worst = np.asarray(results["labels"][:n])[ok][int(np.argmax(err))]
    assert err.max() < TOL, f"max |JAX - matgl| = {err.max():.2e} eV/atom at {worst}"
    # the skewed cells are the same crystals: same energy as the originals
    np.testing.assert_allclose(e[n - 4 :], e[:4], atol=TOL)


def test_megnet_jax_refuses_graphs_it_cannot_build(results):
    n = int(results["expect"].sum())
    valid, e = results["valid"][n:], results["e"][n:]
    assert not valid.any(), dict(zip(results["labels"][n:], valid, strict=True))
    assert np.isnan(e).all()
    overflow = results["overflow"]
    assert overflow[n] and overflow[n + 1]  # dense: capacity; thin: window and capacity
    assert not overflow[:n].any()


def test_megnet_jax_weights_cache_is_guarded(tmp_path, monkeypatch, model_dir):
    """A cached conversion whose fingerprint is not the validated one is refused like the host checkpoint."""
    from hgfn_jax.rewards.matgl_fix import MatglCompatibilityError

    arrays = convert.checkpoint_arrays(megnet.NAME)
    monkeypatch.setenv("HGFN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("HGFN_MATGL_SKIP_CHECKS", raising=False)
    path = convert.cache_file(megnet.NAME, model_dir / megnet.NAME)
    path.parent.mkdir(parents=True)
    tampered = dict(arrays)
    tampered["_meta.weights_fingerprint"] = np.asarray("0" * 64)
    np.savez(path, **tampered)
    convert._load.cache_clear()
    try:
        with pytest.raises(MatglCompatibilityError, match="fingerprint"):
            convert.checkpoint_arrays(megnet.NAME)
    finally:
        convert._load.cache_clear()
    assert str(arrays["_meta.weights_fingerprint"]) == (
        "afc355829645d51a785c3df739d74fcdd4970a1fd1037df775ff7c0da4860891"
    )
