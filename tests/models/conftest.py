"""Shared cases of the JAX energy-model tests: data-set cells, skewed cells, high-symmetry groups, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from hgfn_jax.crystal.convert import from_structure
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.data import mp

N_MAX = 20
N_RANDOM = 48
HIGH_SYMMETRY = (225, 229, 221, 227, 194, 191, 166, 139)  # Fm-3m, Im-3m, Pm-3m, Fd-3m, P6_3/mmc, P6/mmm, R-3m, I4/mmm
SKEW = np.array([[1, 2, 0], [0, 1, 0], [1, 0, 1]])  # unimodular: the same crystal in a strongly skewed cell


@pytest.fixture(scope="session")
def energy_cases():
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
