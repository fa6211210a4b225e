"""The JAX M3GNet PES potential and batched FIRE against independent references.

References: the fixed host matgl potential (``hgfn_jax.models.matgl.load_model``, matgl ``Potential``: energy,
forces, stress in GPa), ASE's FIRE defaults, the host relaxer (``hgfn_jax.metrics.relax.Relaxer``: ASE FIRE +
FrechetCellFilter) and pymatgen's StructureMatcher. Cases: data-set cells (random, triclinic, cubic, hexagonal),
the same crystal in a skewed cell, an atom 0.003 A off its special position, rattled and strained cells.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from hgfn_jax.crystal.convert import from_structure, stack, to_structure
from hgfn_jax.crystal.lattice import params_to_matrix
from hgfn_jax.data import mp
from hgfn_jax.models import fire, m3gnet_pes, m3gnet_pes_packed

N_MAX = 12
SKEW = np.array([[1, 2, 0], [0, 1, 0], [1, 0, 1]])  # unimodular: the same crystal in a strongly skewed cell
TOL_E = 1e-4  # eV/atom
TOL_F = 1e-3  # eV/A
TOL_S = 0.01  # GPa


def _rattle(s: Structure, rng, sigma: float, strain: float) -> Structure:
    deform = np.eye(3) + rng.uniform(-strain, strain, (3, 3))
    lat = Lattice(s.lattice.matrix @ deform)
    cart = s.frac_coords @ lat.matrix + rng.normal(0.0, sigma, (len(s), 3))
    return Structure(lat, s.species, cart, coords_are_cartesian=True)


@pytest.fixture(scope="module")
def cases(data_dir, model_dir):
    meta = mp.read_meta()
    small = meta.nsites.values <= N_MAX
    sg = meta["spacegroup_symprec0.1"].values
    rng = np.random.default_rng(3)
    rows = list(rng.choice(np.flatnonzero(small & (meta.nsites.values >= 2)), 4, replace=False))
    labels = [f"random {i}" for i in range(4)]
    for name, groups in (("triclinic", (1, 2)), ("cubic", (225, 221, 229)), ("hexagonal", (194,))):
        cand = np.flatnonzero(small & np.isin(sg, groups) & (meta.nsites.values >= 3))
        rows.append(int(rng.choice(cand)))
        labels.append(name)
    ds = mp.load_mp(n_max=N_MAX, rows=np.asarray(rows), parse_all=False)
    structures = [ds.get_structure(i) for i in range(len(rows))]
    skewed = structures[0].copy()
    skewed.make_supercell(SKEW)
    near = structures[5].copy()  # cubic: atom 0 sits on a special position; move it 0.003 A along (1, 1, 1)
    near.translate_sites([0], np.full(3, 0.003 / np.sqrt(3)), frac_coords=False)
    structures += [skewed, near] + [_rattle(structures[i], rng, 0.15, 0.05) for i in (1, 2, 6)]
    labels += ["skewed", "near special position", "rattled 1", "rattled 2", "rattled triclinic"]
    # JAX works in the orientation of the Crystal's lattice parameters; the host gets the same cell.
    crystals = [from_structure(s, N_MAX) for s in structures]
    structures = [to_structure(c) for c in crystals]
    # Refusals (JAX only, same compile): > 80 bonds within 5 A, an element outside the model's 89, an overflow flag.
    dense = Structure(Lattice.cubic(3.6), ["Si"] * 12, np.random.default_rng(1).random((12, 3)))
    am = Structure(Lattice.cubic(3.5), ["Am", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    refused = [from_structure(dense, N_MAX), from_structure(am, N_MAX), crystals[0].replace(overflow=np.asarray(True))]
    return structures, crystals + refused, labels


@pytest.fixture(scope="module")
def results(cases):
    from matgl.ext.pymatgen import Structure2Graph

    from hgfn_jax.models.matgl import load_model

    structures, crystals, labels = cases
    params = m3gnet_pes.load_params()
    batch = jax.tree_util.tree_map(jnp.asarray, stack(crystals))

    def one(p, c):
        return (*m3gnet_pes.energy_forces_stress(p, c), m3gnet_pes.energy(p, c)[0])

    e, f, s, valid, e_only = jax.jit(jax.vmap(one, in_axes=(None, 0)))(params, batch)
    model = load_model(m3gnet_pes.NAME)
    conv = Structure2Graph(element_types=tuple(model.model.element_types), cutoff=m3gnet_pes.CUTOFF)
    host, bonds = [], []
    for st in structures:
        g, lat, _ = conv.get_graph(st)
        he, hf, hs, _ = model(g, lat, None)
        host.append((float(he.detach()), hf.detach().numpy().astype(np.float64), hs.detach().numpy()))
        bonds.append(int(g.num_edges))  # matgl's directed bonds within 5 A
    # packed bonds (one batch sharing a pool of B x capacity slots): the default, and a pool that ends inside
    # the middle crystal (by matgl's bond counts)
    cell = jax.vmap(params_to_matrix)(batch.lattice)
    pos = jnp.einsum("bni,bij->bnj", batch.frac, cell) * batch.mask[..., None]
    cap = int(np.cumsum(bonds)[len(bonds) // 2]) // len(crystals)

    def packed(capacity):
        fn = jax.jit(lambda p, c, x, z, m, o: m3gnet_pes_packed.energy_forces_stress_batch(p, c, x, z, m, capacity,
                                                                                            overflow=o))
        return [np.asarray(a, np.float64) for a in fn(params, cell, pos, batch.species, batch.mask, batch.overflow)]

    return {"e": np.asarray(e, np.float64), "f": np.asarray(f, np.float64), "s": np.asarray(s, np.float64),
            "valid": np.asarray(valid), "e_only": np.asarray(e_only, np.float64), "host": host,
            "labels": labels, "n": [len(st) for st in structures], "bonds": bonds, "packed": packed(None),
            "pool": cap * len(crystals), "packed_short": packed(cap)}


def test_pes_energy_forces_stress_equal_fixed_matgl(results):
    assert results["valid"][: len(results["host"])].all(), results["labels"]
    worst = {"e": 0.0, "f": 0.0, "s": 0.0}
    for i, (he, hf, hs) in enumerate(results["host"]):
        n, label = results["n"][i], results["labels"][i]
        de = abs(results["e"][i] - he) / n
        df = np.abs(results["f"][i, :n] - hf).max()
        ds = np.abs(results["s"][i] - hs).max()
        assert de < TOL_E, (label, de)
        assert df < TOL_F, (label, df)
        assert ds < TOL_S, (label, ds)
        assert np.abs(results["f"][i, n:]).max(initial=0.0) == 0.0  # padding sites
        worst = {k: max(worst[k], v) for k, v in (("e", de), ("f", df), ("s", ds))}
    print(f"M3GNet PES JAX vs matgl: max |dE| {worst['e']:.1e} eV/atom, |dF| {worst['f']:.1e} eV/A, "
          f"|dS| {worst['s']:.1e} GPa")
    # the derivative-free energy is the same function; the skewed cell is the same crystal as the first
    m = len(results["host"])
    np.testing.assert_allclose(results["e_only"][:m], results["e"][:m], atol=1e-4 * max(results["n"]), rtol=0)
    i = results["labels"].index("skewed")
    assert abs(results["e"][i] / results["n"][i] - results["e"][0] / results["n"][0]) < TOL_E
    # the rattled cells are far from equilibrium: the comparison covers large forces and stresses
    assert max(np.abs(h[1]).max() for h in results["host"][-3:]) > 1.0
    assert max(np.abs(h[2]).max() for h in results["host"][-3:]) > 1.0


def test_pes_refuses_what_it_cannot_compute(results):
    n = len(results["host"])
    assert not results["valid"][n:].any()
    assert np.isnan(results["e"][n:]).all() and np.isnan(results["f"][n:]).all() and np.isnan(results["s"][n:]).all()
    assert np.isnan(results["e_only"][n:]).all()
    e, f, s, valid = results["packed"]
    assert not valid[n:].any() and np.isnan(e[n:]).all() and np.isnan(f[n:]).all() and np.isnan(s[n:]).all()


def test_packed_pes_equals_fixed_matgl_and_refuses_overflow(results):
    """The packed-bond batch (real bonds only, one shared pool) against the host potential on the same hard cases;
    with a pool that ends inside the middle crystal, exactly the crystals whose bonds (counted by matgl, in batch
    order) do not all fit are refused, the others keep the same numbers: no truncated graph."""
    m = len(results["host"])
    fit_short = np.cumsum(results["bonds"]) <= results["pool"]
    assert fit_short.any() and not fit_short.all()
    for (e, f, s, valid), fits in ((results["packed"], np.ones(m, bool)), (results["packed_short"], fit_short)):
        np.testing.assert_array_equal(valid[:m], fits, err_msg=str(results["labels"]))
        for i, (he, hf, hs) in enumerate(results["host"]):
            n, label = results["n"][i], results["labels"][i]
            if not fits[i]:
                assert np.isnan(e[i]) and np.isnan(f[i]).all() and np.isnan(s[i]).all(), label
                continue
            assert abs(e[i] - he) / n < TOL_E, label
            assert np.abs(f[i, :n] - hf).max() < TOL_F, label
            assert np.abs(s[i] - hs).max() < TOL_S, label
            assert np.abs(f[i, n:]).max(initial=0.0) == 0.0


def test_fire_defaults_are_ases():
    from ase.optimize import FIRE

    sig = inspect.signature(FIRE.__init__).parameters
    ase = {"dt": sig["dt"].default, "maxstep": FIRE.defaults["maxstep"], "dtmax": sig["dtmax"].default,
           "nmin": sig["Nmin"].default, "finc": sig["finc"].default, "fdec": sig["fdec"].default,
           "astart": sig["astart"].default, "fa": sig["fa"].default}
    assert fire.FIRE_DEFAULTS == ase


def test_expm_matches_scipy():
    from scipy.linalg import expm

    a = np.random.default_rng(0).normal(0, 0.5, (3, 3))
    np.testing.assert_allclose(np.asarray(fire.expm(jnp.asarray(a, jnp.float32))), expm(a), rtol=2e-5, atol=2e-6)


def _relaxed(relaxer, key, structures, nan_site=None, skip=None):
    """fire.init/run/finalize with the relaxer's compiled group functions (no new compile)."""
    b, (n, *_) = len(structures), key
    cell = np.stack([s.lattice.matrix for s in structures]).astype(np.float32)
    pos = np.zeros((b, n, 3), np.float32)
    z = np.zeros((b, n), np.int32)
    mask = np.zeros((b, n), bool)
    for j, s in enumerate(structures):
        pos[j, : len(s)], z[j, : len(s)], mask[j, : len(s)] = s.cart_coords, [x.specie.Z for x in s], True
    if nan_site is not None:
        pos[nan_site, 0] = np.nan
    run, finalize = relaxer.compiled(key)
    state = fire.init(pos, mask, skip)
    while (np.asarray(state.status) == fire.RUNNING).any():
        state = run(relaxer.params, state, cell, z, mask)
    return finalize(state, cell, mask)


def test_fire_relaxes_back_like_the_host_relaxer(model_dir, data_dir):
    """A rattled (0.1 A) and 3 % strained data-set crystal relaxes back to the original; final energy equal to the
    host relaxer's on the same input; the suite's ``m3gnet_jax`` relaxer gives the same records; a NaN structure
    in the batch is frozen and flagged without disturbing the others; padding entries are never run."""
    from hgfn_jax.metrics.relax import Relaxer, make_relaxer

    jaxr = make_relaxer("m3gnet_jax", max_steps=300, batch_size=2)
    meta = mp.read_meta()
    rng = np.random.default_rng(7)
    rows = rng.choice(np.flatnonzero((meta.nsites.values >= 3) & (meta.nsites.values <= 6)), 8, replace=False)
    ds = mp.load_mp(n_max=8, rows=rows, parse_all=False)
    cands = [ds.get_structure(i) for i in range(len(rows))]
    rattled = []
    for s in cands:
        p = s.copy()
        p.apply_strain(0.03)
        rattled.append(Structure(p.lattice, p.species, p.cart_coords + rng.normal(0, 0.1, (len(p), 3)),
                                 coords_are_cartesian=True))
    keys = [jaxr.group_key(s) for s in rattled]
    a = next(i for i in range(len(cands)) if keys.count(keys[i]) >= 2)  # two cells of one compiled group
    b = next(i for i in range(a + 1, len(cands)) if keys[i] == keys[a])
    originals, inputs = [cands[a], cands[b]], [rattled[a], rattled[b]]
    out = jaxr.relax_many([*inputs, None])
    host = Relaxer(max_steps=300).relax_many(inputs)
    matcher = StructureMatcher()
    assert out[2].reason == "no_structure" and not out[2].converged
    for s0, rj, rh in zip(originals, out[:2], host, strict=True):
        assert rj.converged and rj.reason is None and rh.converged, (rj, rh)
        assert 0 < rj.steps <= 300 and rj.seconds > 0
        assert matcher.fit(rj.structure, s0), s0.composition
        assert abs(rj.energy_per_atom - rh.energy_per_atom) < 5e-3, (rj.energy_per_atom, rh.energy_per_atom)
    res = _relaxed(jaxr, keys[a], [inputs[1], inputs[0]], nan_site=1)
    assert int(res.status[0]) == fire.CONVERGED
    assert int(res.status[1]) in (fire.NONFINITE, fire.GRAPH) and int(res.steps[1]) == 0
    assert abs(float(res.energy_per_atom[0]) - out[1].energy_per_atom) < 1e-5
    res = _relaxed(jaxr, keys[a], [inputs[0], inputs[1]], skip=np.array([False, True]))
    assert [int(x) for x in res.status] == [fire.CONVERGED, fire.SKIPPED] and int(res.steps[1]) == 0


def test_fire_rejects_bad_shapes_and_options(model_dir):
    params = m3gnet_pes.load_params()
    with pytest.raises(ValueError, match="relax expects"):
        fire.relax(params, np.eye(3), np.zeros((1, 2, 3)), np.ones((1, 2), int), np.ones((1, 2), bool))
    with pytest.raises(TypeError, match="unknown FIRE parameters"):
        fire.relax(params, np.eye(3)[None], np.zeros((1, 2, 3)), np.ones((1, 2), int), np.ones((1, 2), bool),
                   dtt=0.2)
    with pytest.raises(ValueError, match="efs_batch expects"):
        m3gnet_pes_packed.efs_batch(params, np.eye(3), np.zeros((1, 2, 3)), np.ones((1, 2), int), np.ones((1, 2), bool))
    with pytest.raises(ValueError, match="edge_capacity must be >= 1"):
        m3gnet_pes_packed.efs_batch(params, np.eye(3)[None], np.zeros((1, 2, 3)), np.ones((1, 2), int),
                                    np.ones((1, 2), bool), edge_capacity=0)
    with pytest.raises(ValueError, match="unknown relaxer"):
        from hgfn_jax.metrics.relax import make_relaxer

        make_relaxer("m3gnet-jax")


def test_each_model_refuses_a_checkpoint_whose_architecture_differs(model_dir):
    """The guard every JAX energy model runs on load (convert.check_config): a checkpoint whose model.json differs
    from the architecture the module implements (here: another cutoff / block count) is refused with the field
    named, instead of loading weights into the wrong computation."""
    import json

    from hgfn_jax.models import convert, m3gnet, megnet

    for mod, name, field in ((m3gnet_pes, m3gnet_pes.NAME, "cutoff"), (m3gnet, m3gnet.NAME, "nblocks"),
                             (megnet, megnet.NAME, "nblocks")):
        arrays = dict(convert.checkpoint_arrays(name, model_dir))
        config = convert.config_of(arrays)
        assert field in config, (name, sorted(config))
        mod.params_from_arrays(arrays)  # the real checkpoint loads
        arrays["_meta.config"] = np.asarray(json.dumps({**config, field: config[field] + 1}))
        with pytest.raises(ValueError, match=field):
            mod.params_from_arrays(arrays)
