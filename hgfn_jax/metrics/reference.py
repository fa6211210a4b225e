"""The reference set the metrics compare against: the shared data set (36,737 Materials Project crystals).

Read through :mod:`hgfn_jax.paths` (``HGFN_DATA_DIR``, default ``../shared/data``), never copied. Tables are
cached per process; CIF texts are read once (one pass over the 76 MB file) and parsed only for the rows a
metric needs (novelty parses the rows whose reduced formula equals a sample's). Distance statistics of a fixed
random subsample are cached in ``<cache_dir>/metrics_reference_*.npz``.
"""

from __future__ import annotations

import functools
import warnings
from collections import defaultdict

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure

from hgfn_jax.data.mp import DATA_FILE, read_meta
from hgfn_jax.paths import cache_dir, require_file

AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660


def _derived_columns(formulas: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reduced formula, mass in amu, atoms) of each cell formula; cached on disk (36,737 Compositions ~10 s)."""
    path = cache_dir() / f"metrics_reference_formulas_v1_{len(formulas)}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            if z["formula"].tolist() == formulas:
                return z["reduced"].astype(str), z["mass"], z["natoms"]
    comps = [Composition(f) for f in formulas]
    reduced = np.array([c.reduced_formula for c in comps], dtype=str)
    mass = np.array([c.weight for c in comps], float)
    natoms = np.array([c.num_atoms for c in comps], float)
    np.savez(path, formula=np.array(formulas, dtype=str), reduced=reduced, mass=mass, natoms=natoms)
    return reduced, mass, natoms


@functools.cache
def reference_table() -> pd.DataFrame:
    """One row per data-set crystal: ``formula`` (cell), ``reduced_formula``, ``elements`` (tuple),
    ``formation_energy_per_atom`` (eV/atom, DFT), ``nsites``, ``volume`` (A^3), ``volume_per_atom``,
    ``density`` (g/cm^3), ``spacegroup``."""
    meta = read_meta()
    formulas = meta["formula"].astype(str).tolist()
    reduced, mass, natoms = _derived_columns(formulas)
    df = pd.DataFrame({
        "formula": formulas,
        "reduced_formula": reduced,
        "elements": meta["elements"],
        "formation_energy_per_atom": meta["formation_energy_per_atom"].astype(float),
        "nsites": meta["nsites"].astype(int),
        "volume": meta["volume"].astype(float),
        "spacegroup": meta["spacegroup_symprec0.1"].astype(int),
    })
    df["volume_per_atom"] = df["volume"] / df["nsites"]
    # mass per formula atom x sites of the cell / cell volume (the meta formula is the cell's, this is robust
    # to it being reduced)
    df["density"] = mass / natoms * df["nsites"].to_numpy() / df["volume"].to_numpy() * AMU_PER_A3_TO_G_PER_CM3
    return df


@functools.cache
def formula_index() -> dict[str, np.ndarray]:
    """reduced formula -> data-set rows with that formula."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(reference_table()["reduced_formula"]):
        groups[f].append(i)
    return {k: np.asarray(v) for k, v in groups.items()}


@functools.cache
def _cif_column() -> np.ndarray:
    df = pd.read_csv(require_file("data", DATA_FILE), usecols=["id", "cif"])
    if not np.array_equal(df["id"].to_numpy(), np.arange(len(df))):
        raise ValueError(f"{DATA_FILE}: column 'id' is not 0..{len(df) - 1} in order")
    return df["cif"].to_numpy()


@functools.lru_cache(maxsize=20000)
def reference_structure(row: int) -> Structure:
    """The data-set crystal at ``row`` as stored (conventional/primitive cell of the CIF)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(str(_cif_column()[int(row)]), fmt="cif")


def distance_extrema(s: Structure) -> tuple[float, float]:
    """(min, max) interatomic distance (A) over distinct-site minimum-image pairs (pymatgen ``distance_matrix``,
    as PGCGM's minD/maxD); NaN for a one-site cell."""
    if len(s) < 2:
        return float("nan"), float("nan")
    d = np.asarray(s.distance_matrix, float)
    iu = np.triu_indices(len(s), 1)
    return float(d[iu].min()), float(d[iu].max())


def reference_distance_stats(n: int = 2000, seed: int = 0, max_sites: int = 200) -> dict[str, np.ndarray]:
    """min/max interatomic distances and density of a fixed random subsample of the data set (cached)."""
    path = cache_dir() / f"metrics_reference_dist_n{n}_s{seed}_m{max_sites}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    table = reference_table()
    pool = np.flatnonzero(table["nsites"].to_numpy() <= max_sites)
    rows = np.sort(np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False))
    mins, maxs = np.empty(len(rows)), np.empty(len(rows))
    for j, r in enumerate(rows):
        mins[j], maxs[j] = distance_extrema(reference_structure(int(r)))
        reference_structure.cache_clear() if j % 5000 == 4999 else None
    out = {"rows": rows, "min_distance": mins, "max_distance": maxs,
           "density": table["density"].to_numpy()[rows]}
    np.savez(path, **out)
    return out
