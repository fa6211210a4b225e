"""The fixed matgl models reproduce DFT on real Materials Project structures; stock matgl 4.1.2 does not.

References are independent of the code under test: DFT labels of the CGCNN data set (a fixed random sample of
120 cells with <= 40 sites, numpy seed 0), the LiFePO4 values measured with matgl 2.0.4 in
../shared/models/README.md, and an equivalent weight-only conversion of the MEGNet checkpoint.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure

from hgfn_jax import paths
from hgfn_jax.models import matgl_fix
from hgfn_jax.models.matgl import get_property_model, load_model

M3GNET = "M3GNet-MP-2018.6.1-Eform"
MEGNET = "MEGNet-MP-2018.6.1-Eform"
BANDGAP = "MEGNet-MP-2019.4.1-BandGap-mfi"
PES = "M3GNet-MP-2021.2.8-PES"
N_SAMPLE = 120


def _parse(cif: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif")


@pytest.fixture(scope="module")
def sample(data_dir):
    """Structures, DFT formation energy (eV/atom), DFT band gap (eV) of a fixed sample; LiFePO4 mp-19017."""
    meta = pd.read_csv(data_dir / "cgcnn_mp_36737_meta.csv.gz", usecols=["material_id", "nsites"])
    df = pd.read_csv(
        data_dir / "cgcnn_mp_36737.csv.gz",
        usecols=["material_id", "formation_energy_per_atom", "band_gap", "cif"],
    )
    assert (meta.material_id.values == df.material_id.values).all()
    candidates = np.flatnonzero(meta.nsites.values <= 40)
    rows = df.iloc[np.random.default_rng(0).choice(candidates, N_SAMPLE, replace=False)]
    lfp = df[df.material_id == "mp-19017"]
    assert len(lfp) == 1, "LiFePO4 (mp-19017) missing from the data set"
    return {
        "structures": [_parse(c) for c in rows.cif],
        "eform": rows.formation_energy_per_atom.to_numpy(),
        "gap": rows.band_gap.to_numpy(),
        "lifepo4": _parse(lfp.cif.iloc[0]),
    }


def _stock_predict(folder, structures, state=None) -> np.ndarray:
    """Stock matgl 4.1.2 code path (only the loading fix, so that the checkpoint loads at all)."""
    model = matgl_fix.load_stock_checkpoint(folder)
    with torch.no_grad():
        return np.array([float(model.predict_structure(s, state)) for s in structures])


@pytest.mark.parametrize("name", [M3GNET, MEGNET])
def test_formation_energy_matches_dft(name, sample):
    values, ok = get_property_model(name).predict(sample["structures"])
    err = np.abs(values - sample["eform"])[ok]
    # MEGNet (4 A cutoff) cannot evaluate cells with no neighbour within 4 A (1 such cell in the sample).
    assert ok.sum() >= N_SAMPLE - 2
    assert np.all(np.isnan(values[~ok]))
    # README (400 cells): M3GNet 0.019 (median 0.0075), MEGNet 0.023. Measured on this sample: M3GNet 0.0179
    # (median 0.0068), MEGNet 0.0184 (median 0.0091).
    assert err.mean() <= 0.03, f"{name}: MAE {err.mean():.4f} eV/atom"
    assert np.median(err) <= 0.015


@pytest.mark.parametrize("name", [M3GNET, MEGNET])
def test_stock_matgl_is_far_off(name, sample, model_dir):
    """Proves the fix matters: the same checkpoints through stock matgl 4.1.2 miss DFT by > 0.1 eV/atom."""
    structures, ref = sample["structures"][:12], sample["eform"][:12]
    stock = _stock_predict(model_dir / name, structures)
    ok = np.isfinite(stock)
    assert np.abs(stock - ref)[ok].mean() > 0.1  # measured 0.84 (M3GNet) / 0.26 (MEGNet) on these 12
    fixed, fixed_ok = get_property_model(name).predict(structures)
    assert np.abs(fixed - ref)[fixed_ok].mean() < 0.05


def test_band_gap_model(sample, model_dir):
    values, ok = get_property_model(BANDGAP, fidelity=0).predict(sample["structures"])
    gap = sample["gap"]
    err = np.abs(values - gap)[ok]
    metals = (gap == 0)[ok]
    # Measured on this sample: MAE 0.628 eV (median 0.076; 63 metals 0.222, non-metals 1.076); stock 0.847.
    # Worse than the checkpoint's stated validation MAE (0.31 eV): it badly underestimates some insulators
    # (e.g. MgO 0.41 eV, Na2GeO3 ~0 eV at PBE fidelity), see the hgfn_jax.models.matgl docstring.
    assert ok.sum() >= N_SAMPLE - 2
    assert err.mean() <= 0.75, f"band gap MAE {err.mean():.3f} eV"
    assert err[metals].mean() <= 0.3
    stock = _stock_predict(model_dir / BANDGAP, sample["structures"][:24], torch.tensor([0]))
    assert np.abs(stock - gap[:24]).mean() > np.abs(values[:24] - gap[:24]).mean() + 0.1  # 0.97 vs 0.67
    # CsCl (MP PBE gap 5.0-5.5 eV in the data set): fixed 4.83 eV, stock 2.72 eV.
    cscl = Structure.from_spacegroup(
        "Pm-3m", Lattice.cubic(4.1437), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    v, _ = get_property_model(BANDGAP, fidelity=0).predict([cscl])
    assert 4.3 < v[0] < 5.6


def test_lifepo4_m3gnet_eform(sample, model_dir):
    """README: -2.5489 eV/atom with the checkpoint's three-body semantics, -2.4201 with matgl >= 2023-08-28's.

    The data set's CIF is an older MP relaxation than the README's (measured here: -2.5478 and -2.4167).
    """
    lfp = sample["lifepo4"]
    assert lfp.composition.reduced_formula == "LiFePO4"
    values, ok = get_property_model(M3GNET).predict([lfp])
    assert ok[0] and values[0] == pytest.approx(-2.5489, abs=0.005)
    fix1_only, _ = matgl_fix.read_checkpoint(model_dir / M3GNET)
    matgl_fix.apply_fixes(fix1_only, matgl_fix.CheckpointFixes(True, False, ""))
    with torch.no_grad():
        wrong = float(fix1_only.predict_structure(lfp))
    assert wrong == pytest.approx(-2.4201, abs=0.01)


def test_pes_potential_lifepo4(sample, model_dir):
    """README (MP-relaxed LiFePO4): fixed -6.806 eV/atom, max |F| 0.073 eV/A; stock -2.119, 30.6 eV/A."""
    pes = get_property_model(PES)
    energy, forces = pes.energy_and_forces(sample["lifepo4"])
    assert energy == pytest.approx(-6.806, abs=0.005)
    assert forces.shape == (28, 3)
    assert np.linalg.norm(forces, axis=1).max() < 0.2  # 0.118 on the data set's (older) relaxation
    assert np.abs(forces.sum(axis=0)).max() < 1e-3  # Newton's third law
    stock = matgl_fix.load_stock_checkpoint(model_dir / PES)
    g, lat, _ = pes._graph(sample["lifepo4"])
    stock_forces = stock(g, lat, None)[1].detach().numpy()
    assert np.linalg.norm(stock_forces, axis=1).max() > 10.0


def test_megnet_fix_equals_weight_conversion(sample, model_dir):
    """Independent route to fix 1 for MEGNet: stock code, edge_func input columns 0:32 and 32:64 swapped."""
    converted = matgl_fix.load_stock_checkpoint(model_dir / MEGNET)
    with torch.no_grad():
        for block in converted.model.blocks:
            w = block.conv.edge_func.layers[0].weight
            w.copy_(torch.cat([w[:, 32:64], w[:, 0:32], w[:, 64:]], dim=1))
        structures = sample["structures"][:8]
        ref = np.array([float(converted.predict_structure(s)) for s in structures])
    values, ok = get_property_model(MEGNET).predict(structures)
    np.testing.assert_allclose(values[ok], ref[ok], atol=2e-4)


@pytest.mark.parametrize("name", [M3GNET, MEGNET, BANDGAP])
def test_batched_equals_one_by_one(name, sample):
    structures = sample["structures"][:10]
    batched, ok_b = get_property_model(name, batch_size=10).predict(structures)
    single, ok_s = get_property_model(name, batch_size=1).predict(structures)
    np.testing.assert_array_equal(ok_b, ok_s)
    np.testing.assert_allclose(batched[ok_b], single[ok_s], atol=2e-4)


def test_failures_are_flagged_not_raised(sample):
    model = get_property_model(MEGNET)
    isolated = Structure(Lattice.cubic(9.0), ["Na"], [[0, 0, 0]])  # no neighbour within 4 A
    americium = Structure(Lattice.cubic(3.0), ["Am"], [[0, 0, 0]])  # Am (Z=95) is not among the 89 types
    good = sample["structures"][0]
    values, ok, reasons = model.predict_with_reasons([isolated, good, americium])
    assert ok.tolist() == [False, True, False]
    assert reasons == ["no_bonds", None, "unsupported_element"]
    assert np.isnan(values[0]) and np.isfinite(values[1]) and np.isnan(values[2])


def test_version_and_source_guards(monkeypatch):
    import matgl

    monkeypatch.setattr(matgl_fix, "_CHECKED", False)
    monkeypatch.delenv(matgl_fix.SKIP_CHECKS_ENV, raising=False)
    monkeypatch.setattr(matgl, "__version__", "9.9.9")
    with pytest.raises(matgl_fix.MatglCompatibilityError, match="9.9.9"):
        matgl_fix.check_matgl_compatibility()
    monkeypatch.setenv(matgl_fix.SKIP_CHECKS_ENV, "1")
    with pytest.warns(RuntimeWarning, match="9.9.9"):
        matgl_fix.check_matgl_compatibility()

    monkeypatch.setattr(matgl_fix, "_CHECKED", False)
    monkeypatch.delenv(matgl_fix.SKIP_CHECKS_ENV)
    monkeypatch.setattr(matgl, "__version__", "4.1.2")
    key = "matgl.layers._three_body:ThreeBodyInteractions.forward"
    monkeypatch.setitem(matgl_fix._EXPECTED_SOURCE_SHA256, key, "0" * 64)
    with pytest.raises(matgl_fix.MatglCompatibilityError, match="ThreeBodyInteractions.forward"):
        matgl_fix.check_matgl_compatibility()


def test_checkpoint_fingerprint_guard(monkeypatch, model_dir):
    fixes = matgl_fix.CHECKPOINTS[MEGNET]
    monkeypatch.delenv(matgl_fix.SKIP_CHECKS_ENV, raising=False)
    monkeypatch.setitem(matgl_fix.CHECKPOINTS, MEGNET, matgl_fix.CheckpointFixes(True, False, "f" * 64))
    with pytest.raises(matgl_fix.MatglCompatibilityError, match="fingerprint"):
        matgl_fix.load_fixed_checkpoint(model_dir / MEGNET)
    assert fixes.weights_sha256 != "f" * 64


def test_missing_model_folder_error(monkeypatch, tmp_path):
    with pytest.raises(KeyError, match="unknown matgl model"):
        load_model("not-a-model", tmp_path)

    import matgl.utils.io

    hub_calls = []

    def offline(*args, **kwargs):
        hub_calls.append(args)
        raise ConnectionError("offline")

    monkeypatch.setattr(matgl.utils.io, "_get_file_paths", offline)
    with pytest.raises(paths.MissingResourceError, match="HGFN_MODEL_DIR") as info:
        load_model(MEGNET, tmp_path)
    assert str(tmp_path / MEGNET) in str(info.value)
    # a models folder that is set but lacks the model is an immediate error: never a (slow, offline) hub lookup
    assert hub_calls == []
