"""Volume-per-atom plausibility (issue 10 item 4): the Crystal-GFN reward floors cells outside the data set's
range of volume per atom, the range is the data set's (read here with pandas from the shared metadata), the
paper preset stays faithful (no constraint), and the evaluation's plausible share is pymatgen's volume per atom.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice

from experiments.configs import get_config
from experiments.configs._crystal_gfn import DATA_SET_VOLUME_PER_ATOM
from experiments.crystal_gfn import plausible_volume_share
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.paths import data_dir
from hgfn_jax.rewards.crystal_gfn import CrystalGFNRewardConfig, make_crystal_gfn_reward


def test_range_is_the_data_sets():
    meta = pd.read_csv(data_dir() / "cgcnn_mp_36737_meta.csv.gz", usecols=["volume", "nsites"])
    vpa = meta["volume"] / meta["nsites"]
    lo, hi = DATA_SET_VOLUME_PER_ATOM
    assert lo <= vpa.min() < lo * 1.01 and hi * 0.99 < vpa.max() <= hi


def test_presets():
    for exp in ("crystal_gfn_fe", "crystal_gfn_bg", "crystal_gfn_density"):
        assert tuple(get_config(exp, "default").reward.volume_per_atom) == DATA_SET_VOLUME_PER_ATOM
        assert get_config(exp, "paper").reward.volume_per_atom is None


def _cell(a: float, n: int, angles=(90.0, 90.0, 90.0)) -> Crystal:
    n_max = 8
    mask = np.arange(n_max) < n
    return Crystal(lattice=jnp.asarray([a, a * 1.1, a * 0.9, *angles], jnp.float32),
                   frac=jnp.asarray(np.random.default_rng(n).uniform(size=(n_max, 3)), jnp.float32),
                   species=jnp.asarray(np.where(mask, 8, 0), jnp.int32), mask=jnp.asarray(mask),
                   spacegroup=jnp.asarray(1, jnp.int32), overflow=jnp.asarray(False))


@pytest.mark.parametrize("penalty", [None, 10.0], ids=["floor", "smooth"])
@pytest.mark.parametrize("target", ["formation_energy", "band_gap", "density"])
def test_reward_penalises_implausible_cells(target, penalty):
    value = {"formation_energy": -1.0, "band_gap": 1.2}.get(target)  # eV/atom, eV: rewards above the floor
    fn = (lambda c: (jnp.asarray(value), jnp.asarray(True))) if target != "density" else None
    on = jax.jit(make_crystal_gfn_reward(
        CrystalGFNRewardConfig(target=target, volume_per_atom=(5.0, 100.0), volume_penalty=penalty), fn))
    off = jax.jit(make_crystal_gfn_reward(CrystalGFNRewardConfig(target=target), fn))
    floor = {"formation_energy": -100.0, "band_gap": np.log(1e-8), "density": np.log(1e-8)}[target]
    # (a, n, angles): volume per atom from pymatgen decides which are plausible, incl. a skewed cell
    cases = [(3.0, 2, (90, 90, 90)), (6.0, 4, (90, 90, 90)), (12.0, 2, (90, 90, 90)), (5.5, 8, (60, 70, 80)),
             (30.0, 8, (90, 90, 90)), (1.2, 1, (90, 90, 90)), (7.0, 1, (50, 55, 100))]
    n_in = 0
    for a, n, ang in cases:
        vpa = Lattice.from_parameters(a, a * 1.1, a * 0.9, *ang).volume / n
        c = _cell(a, n, ang)
        lr_on, t_on = on(c)
        lr_off, t_off = off(c)
        assert float(t_on["structure_valid"]) == float(t_off["structure_valid"])
        if not float(t_off["structure_valid"]):
            continue  # atoms too close: floored either way
        np.testing.assert_allclose(float(t_on["volume_per_atom"]), vpa, rtol=1e-4)
        if 5.0 <= vpa <= 100.0:
            n_in += 1
            assert float(lr_on) == pytest.approx(float(lr_off), abs=1e-6) and float(lr_off) > floor
        else:
            assert float(t_on["plausible_volume"]) == 0.0
            if penalty is None:
                assert float(lr_on) == pytest.approx(floor, abs=1e-4)
            else:  # exp(-lambda d), d the log-distance to the range, then the usual floor
                d = np.log(5.0 / vpa) if vpa < 5.0 else np.log(vpa / 100.0)
                want = max(float(lr_off) - penalty * d, floor)
                assert float(lr_on) == pytest.approx(want, abs=1e-3)
    assert n_in >= 2
    with pytest.raises(ValueError, match="volume_per_atom"):
        make_crystal_gfn_reward(CrystalGFNRewardConfig(target=target, volume_per_atom=(10.0, 5.0)), fn)
    with pytest.raises(ValueError, match="volume_penalty"):
        make_crystal_gfn_reward(CrystalGFNRewardConfig(target=target, volume_per_atom=(5.0, 10.0),
                                                      volume_penalty=-1.0), fn)


def test_plausible_share_matches_pymatgen():
    rng = np.random.default_rng(0)
    lat = np.column_stack([rng.uniform(1, 30, (200, 3)), rng.uniform(60, 120, (200, 3))]).astype(np.float32)
    counts = rng.integers(0, 5, (200, 3))
    counts[:, 0] += 1
    ref = []
    for p, c in zip(lat, counts, strict=True):
        try:
            v = Lattice.from_parameters(*map(float, p)).volume
        except Exception:
            v = 0.0
        v = 0.0 if not np.isfinite(v) else v
        ref.append(DATA_SET_VOLUME_PER_ATOM[0] <= v / c.sum() <= DATA_SET_VOLUME_PER_ATOM[1])
    got = plausible_volume_share({"lattice": lat, "counts": counts})
    assert 0.1 < np.mean(ref) < 0.9
    assert got == pytest.approx(np.mean(ref), abs=1.0 / 200)
