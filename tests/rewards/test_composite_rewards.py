"""Composite rewards (CHGFlowNet eq. 15, SHAFT eq. 8, Crystal-GFN) vs host-side references.

The energy and band gap come from JAX stand-ins (lookup tables indexed by the space-group number), so the
expected rewards can be recomputed on the host with pymatgen (density, neighbours), SMACT (composition) and
the bond statistics file, independently of the JAX terms.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from hgfn_jax.crystal import chemistry as chem
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.data import bond_stats as bt
from hgfn_jax.rewards import composite, crystal_gfn

N_MAX = 20
N_REAL = 10
NACL = [(11, (0, 0, 0)), (11, (0.5, 0.5, 0)), (11, (0.5, 0, 0.5)), (11, (0, 0.5, 0.5))]
NACL += [(17, (0.5, 0.5, 0.5)), (17, (0, 0, 0.5)), (17, (0, 0.5, 0)), (17, (0.5, 0, 0))]
# hand-made cases: (name, energy, energy valid); the first five are rock-salt NaCl (a = 5.64 A)
CASES = [
    ("nacl", -0.5, True),
    ("nacl_low_energy", -12.0, True),
    ("nacl_nan_energy", np.nan, True),
    ("nacl_invalid_energy", -1.0, False),
    ("nacl_high_energy", 15.0, True),
    ("overlap", -1.0, True),
    ("nan_lattice", -1.0, True),
    ("empty", -1.0, True),
    ("nan_frac", -1.0, True),
    ("overflow", -1.0, True),
]
BROKEN = {"nan_lattice", "empty", "nan_frac", "overflow"}


def _cell(a: float, sites, sg: int) -> dict:
    frac = np.zeros((N_MAX, 3), np.float32)
    species = np.zeros(N_MAX, np.int32)
    mask = np.zeros(N_MAX, bool)
    for i, (z, f) in enumerate(sites):
        frac[i], species[i], mask[i] = f, z, True
    lattice = np.array([a, a, a, 90, 90, 90], np.float32)
    return dict(
        lattice=lattice, frac=frac, species=species, mask=mask, spacegroup=np.int32(sg), overflow=False
    )


@pytest.fixture(scope="module")
def setup(data_dir):
    """Batch of 10 real structures + the hand-made CASES, stand-in property tables, pymatgen structures."""
    from hgfn_jax.data import mp

    meta = mp.read_meta()
    eligible = np.flatnonzero((meta["nsites"].to_numpy() <= N_MAX) & meta["parse_error"].isna().to_numpy())
    rows = np.sort(np.random.default_rng(21).choice(eligible, N_REAL, replace=False))
    data = mp.load_mp(n_max=N_MAX, rows=rows, parse_all=False)
    real = {f.name: np.asarray(getattr(data.crystals(), f.name)) for f in dataclasses.fields(Crystal)}
    free = [sg for sg in range(1, 231) if sg not in set(real["spacegroup"].tolist())]
    sg = np.arange(231)
    e_val = (-3.0 + (sg % 7) * 0.5).astype(np.float32)  # real structures: -3 .. 0 eV/atom
    e_ok = np.ones(231, bool)
    bg_val = ((sg % 5) * 0.7).astype(np.float32)  # 0 .. 2.8 eV
    cells = []
    for (name, e, ok), code in zip(CASES, free, strict=False):
        e_val[code], e_ok[code] = e, ok
        cell = _cell(5.64, NACL, code)
        if name == "overlap":
            cell["frac"][4] = cell["frac"][0]
        elif name == "nan_lattice":
            cell["lattice"][1] = np.nan
        elif name == "empty":
            cell["mask"][:] = False
            cell["species"][:] = 0
        elif name == "nan_frac":
            cell["frac"][2, 1] = np.nan
        elif name == "overflow":
            cell["overflow"] = True
        cells.append(cell)
    hand = {k: np.stack([np.asarray(c[k]) for c in cells]) for k in cells[0]}
    crystal = Crystal(**{k: jnp.asarray(np.concatenate([real[k], hand[k]])) for k in real})
    structures = list(mp.iter_structures(data)) + [
        None
        if c["mask"].sum() == 0 or not np.isfinite(c["lattice"]).all() or not np.isfinite(c["frac"]).all()
        else Structure(
            Lattice.from_parameters(*c["lattice"].astype(float)),
            c["species"][c["mask"]].tolist(),
            c["frac"][c["mask"]].astype(float),
        )
        for c in cells
    ]
    e_val, e_ok, bg_val = jnp.asarray(e_val), jnp.asarray(e_ok), jnp.asarray(bg_val)
    energy_fn = lambda c: (e_val[c.spacegroup], e_ok[c.spacegroup])  # noqa: E731
    bandgap_fn = lambda c: (bg_val[c.spacegroup], jnp.bool_(True))  # noqa: E731
    names = [f"real{i}" for i in range(N_REAL)] + [n for n, _, _ in CASES]
    sgs = np.asarray(crystal.spacegroup)
    return dict(
        crystal=crystal,
        structures=structures,
        names=names,
        energy=np.asarray(e_val)[sgs],
        energy_ok=np.asarray(e_ok)[sgs],
        band_gap=np.asarray(bg_val)[sgs],
        energy_fn=energy_fn,
        bandgap_fn=bandgap_fn,
    )


@pytest.fixture(scope="module")
def stats():
    return bt.read_stats()


def _bond_ref(s: Structure, stats) -> float:
    """Eq. 13 with pymatgen's exact neighbour search (a site's own images included)."""
    close, isolated = False, np.ones(len(s), bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        neighbours = s.get_all_neighbors(5.0)
    dm = s.distance_matrix  # pymatgen's neighbour search skips coincident sites (distance 0)
    close |= bool(np.any((dm + np.eye(len(s)) * 99) < 1e-3))
    isolated &= ~np.any((dm + np.eye(len(s)) * 99) < 1e-3, axis=1)
    for i, nbs in enumerate(neighbours):
        for nb in nbs:
            key = "_".join(map(str, sorted((s[i].specie.Z, nb.specie.Z))))
            dmin = stats["min"].get(key, 1.0)
            dmax = stats["mean"][key] + stats["std"][key] if key in stats["mean"] else 3.5
            close |= nb.nn_distance < dmin
            isolated[i] &= not nb.nn_distance <= dmax
    return 0.001 if close and isolated.any() else 0.1 if close else 0.01 if isolated.any() else 1.0


def _chg_energy(e: float, ok: bool) -> float:
    e = e if ok and np.isfinite(e) else 10.0
    e = 10.0 if e < -10.0 else e
    return min(max(e, -10.0), 10.0)


def _smact(s: Structure) -> float:
    return float(chem.smact_valid(s.composition.as_dict()))


@pytest.fixture(scope="module")
def jitted(setup):
    """The batched, jitted CHGFlowNet and SHAFT rewards (compiled once, reused by several tests)."""
    chg = composite.make_chgflownet_reward(energy_fn=setup["energy_fn"])
    cfg = composite.ShaftRewardConfig(w_bandgap=0.3)
    shaft = composite.make_shaft_reward(cfg, energy_fn=setup["energy_fn"], bandgap_fn=setup["bandgap_fn"])
    return jax.jit(jax.vmap(chg)), jax.jit(jax.vmap(shaft))


@pytest.fixture(scope="module")
def chg_out(setup, jitted):
    return jax.tree.map(np.asarray, jitted[0](setup["crystal"]))


@pytest.fixture(scope="module")
def shaft_out(setup, jitted):
    return jax.tree.map(np.asarray, jitted[1](setup["crystal"]))


def test_chgflownet_matches_host_reference(setup, stats, chg_out):
    log_r, terms = chg_out
    for b, (name, s) in enumerate(zip(setup["names"], setup["structures"], strict=True)):
        if name in BROKEN:
            continue
        e = _chg_energy(float(setup["energy"][b]), bool(setup["energy_ok"][b]))
        r_p = 3.0 * math.exp(-((s.density - 3.0) ** 2) / 2.0)
        r = (math.exp(-e) + r_p) * _bond_ref(s, stats) + _smact(s)
        expected = math.log(min(max(r, 1e-4), 10.0))
        assert log_r[b] == pytest.approx(expected, abs=2e-4), name
        assert terms["energy"][b] == pytest.approx(e, abs=1e-6), name
        assert terms["log_reward"][b] == log_r[b]
    i = setup["names"].index
    assert terms["energy"][i("nacl_low_energy")] == 10.0  # App. A.3.6: below -10 -> +10
    assert terms["energy"][i("nacl_nan_energy")] == 10.0 and terms["energy_valid"][i("nacl_nan_energy")] == 0
    assert terms["energy"][i("nacl_high_energy")] == 10.0
    assert terms["r_bond"][i("nacl")] == 1.0 and terms["r_comp"][i("nacl")] == 1.0
    assert terms["r_bond"][i("overlap")] == pytest.approx(0.1)
    # the reference code's cap R <= 10: NaCl (E = -0.5) stays below it, low-energy real structures reach it
    assert log_r[i("nacl")] < math.log(10.0) - 0.5
    assert np.any(np.isclose(log_r[:N_REAL], math.log(10.0), atol=1e-6))


def test_shaft_matches_host_reference(setup, chg_out, shaft_out):
    log_r, terms = shaft_out
    for b, (name, s) in enumerate(zip(setup["names"], setup["structures"], strict=True)):
        if name in BROKEN:
            continue
        e = setup["energy"][b] if setup["energy_ok"][b] and np.isfinite(setup["energy"][b]) else 10.0
        e = min(max(float(e), -10.0), 10.0)  # App. 10.8 clamp
        r_p = math.exp(-((s.density - 3.0) ** 2) / 2.0)
        r_g = math.exp(-(float(setup["band_gap"][b]) ** 2) / (2 * 0.25))
        # the bond-length score itself is checked against pymatgen in test_physics_terms.py
        r = 0.2 * math.exp(-e / 10.0) + 0.5 * terms["r_bond"][b] + 0.2 * r_p + 0.1 * _smact(s) + 0.3 * r_g
        assert log_r[b] == pytest.approx(math.log(max(r, 1e-5)), abs=2e-4), name
    i = setup["names"].index
    assert terms["energy"][i("nacl_low_energy")] == -10.0  # SHAFT clamps instead of penalizing
    assert terms["r_bond"][i("overlap")] < 0.01 < terms["r_bond"][i("nacl")]


def test_crystal_gfn_rewards(setup):
    crystal = setup["crystal"]
    fe = jax.jit(jax.vmap(crystal_gfn.make_crystal_gfn_reward(property_fn=setup["energy_fn"])))(crystal)
    cfg_bg = crystal_gfn.CrystalGFNRewardConfig(target="band_gap")
    bg = jax.jit(jax.vmap(crystal_gfn.make_crystal_gfn_reward(cfg_bg, setup["bandgap_fn"])))(crystal)
    cfg_de = crystal_gfn.CrystalGFNRewardConfig(target="density")
    de = jax.jit(jax.vmap(crystal_gfn.make_crystal_gfn_reward(cfg_de)))(crystal)
    for b, (name, s) in enumerate(zip(setup["names"], setup["structures"], strict=True)):
        if name in BROKEN:
            assert fe[0][b] == -100.0 and bg[0][b] == pytest.approx(math.log(1e-8)), name
            assert de[0][b] == pytest.approx(math.log(1e-8)), name
            continue
        e, ok = float(setup["energy"][b]), bool(setup["energy_ok"][b]) and np.isfinite(setup["energy"][b])
        assert fe[0][b] == pytest.approx(max(-e / 0.125, -100.0) if ok else -100.0, rel=1e-5), name
        g = float(setup["band_gap"][b])
        assert bg[0][b] == pytest.approx(max(-8.0 * (g - 1.34) ** 2, math.log(1e-8)), rel=1e-5, abs=1e-5), (
            name
        )
        assert de[0][b] == pytest.approx(math.log(s.density), abs=1e-4), name


def test_broken_structures_get_finite_floor_rewards(setup, chg_out, shaft_out):
    for (log_r, terms), floor in ((chg_out, 1e-4), (shaft_out, 1e-5)):
        assert np.all(np.isfinite(log_r))
        for v in terms.values():
            assert np.all(np.isfinite(v))
        for name in BROKEN:
            b = setup["names"].index(name)
            assert log_r[b] == pytest.approx(math.log(floor)), name
            assert terms["structure_valid"][b] == 0.0
        assert log_r[setup["names"].index("nacl")] > math.log(floor) + 1.0


def test_config_factory_and_errors(setup):
    fn = composite.reward_from_config({"kind": "chgflownet", "use_energy": False, "alpha_p": 0.2})
    log_r, terms = jax.eval_shape(jax.vmap(fn), setup["crystal"])  # traced, not compiled (fast)
    assert "energy" not in terms and log_r.shape == (N_REAL + len(CASES),) and log_r.dtype == jnp.float32
    assert {"r_bond", "r_density", "r_comp", "log_reward", "structure_valid"} <= set(terms)
    fn = composite.reward_from_config(
        {"kind": "crystal_gfn", "target": "band_gap"}, bandgap_fn=setup["bandgap_fn"]
    )
    assert set(jax.eval_shape(fn, jax.tree.map(lambda x: x[0], setup["crystal"]))[1]) >= {"band_gap"}
    with pytest.raises(ValueError, match="unknown chgflownet reward config fields"):
        composite.reward_from_config({"kind": "chgflownet", "alpha": 0.1})
    with pytest.raises(ValueError, match="'kind' must be one of"):
        composite.reward_from_config({"kind": "nope"})
    with pytest.raises(ValueError, match="needs energy_fn"):
        composite.make_chgflownet_reward()
    with pytest.raises(ValueError, match="needs bandgap_fn"):
        composite.make_shaft_reward(composite.ShaftRewardConfig(w_bandgap=0.1), energy_fn=setup["energy_fn"])
    with pytest.raises(ValueError, match="low_energy_rule"):
        composite.make_chgflownet_reward(
            composite.CHGFlowNetRewardConfig(low_energy_rule="x"), setup["energy_fn"]
        )
    with pytest.raises(ValueError, match="needs property_fn"):
        crystal_gfn.make_crystal_gfn_reward(crystal_gfn.CrystalGFNRewardConfig(target="band_gap"))


def test_no_nan_under_debug_nans(setup, jitted, debug_nans):
    # normal inputs only (the broken cases are replaced by copies of real structures); the compiled functions
    # are reused: jax_debug_nans checks the outputs of jitted computations
    idx = np.r_[np.arange(N_REAL), np.arange(len(CASES)) % N_REAL]
    crystal = jax.tree.map(lambda x: x[idx], setup["crystal"])
    for fn in jitted:
        log_r, terms = fn(crystal)
        assert np.all(np.isfinite(np.asarray(log_r)))
        assert all(np.all(np.isfinite(np.asarray(v))) for v in terms.values())
