"""Per element-pair interatomic distance statistics (bond table): data the bond-distance reward terms read.

Source: ``bond_distance_stats.json.gz`` in the shared data folder, published with the CHGFlowNet code (MIT):
``{"min"|"max"|"mean"|"std": {"Z1_Z2": angstrom}}`` for 3,569 element pairs, keys with Z1 <= Z2. The
statistics are over interatomic distances up to 4 A in Materials Project structures (every ``max`` is <= 4 A).

Conventions (paper 000, CHGFlowNet, Sec. 4.3, eqs. 11-12, and its reference code):

- ``d_min[Zi, Zj]``: the ``min`` table, the minimum-distance threshold of eq. 11 (default 1.0 A for pairs
  absent from the table);
- ``d_max[Zi, Zj]``: ``mean + std``, the neighbour-distance bound of eq. 12 (default 3.5 A);
- ``d_mean[Zi, Zj]``: the ``mean`` table, used by SHAFT's bond-length score (paper 002, eq. 7; default 2.0 A
  as in the SHAFT reference code);
- all arrays are symmetric ``[119, 119]`` float32 indexed by atomic number; row/column 0 (padding) holds the
  defaults and must be masked by the caller.

``derive_from_dataset`` recomputes the same statistics from the shared CGCNN data set (a random sample of
structures; pymatgen neighbour search within 4 A, periodic images included, distances of each element pair in
a structure de-duplicated within 1e-5 A as in the CHGFlowNet code) and ``compare_tables`` summarises how it
relates to the shipped table. Measured (``python -m hgfn_jax.data.bond_stats --n 2000``: seed 0, 2,000
random structures of the 36,737 (any size <= 200 sites), 1,805 element pairs found, all present in the shipped
table):

- ``min``: Pearson r = 0.825; derived / shipped ratio median 1.109 (5th-95th percentile 1.012-1.447); the
  derived minimum is >= the shipped one for 1,804 of 1,805 pairs. A sample can only raise a minimum over all
  of MP (the shipped table comes from the full database), so the shipped minima are the stricter thresholds
  and the derived ones are systematically larger, the more so the rarer the pair.
- ``mean``: Pearson r = 0.813; ratio median 0.996 (5th-95th percentile 0.874-1.108): the typical neighbour
  distances agree.

The reward uses the shipped table; the derived one is a consistency check
(tests/data/test_bond_stats.py).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import struct

from hgfn_jax.crystal.elements import NUM_ELEMENTS
from hgfn_jax.paths import require_file

BOND_STATS_FILE = "bond_distance_stats.json.gz"
DEFAULT_D_MIN = 1.0  # A, pairs absent from the table (CHGFlowNet code and data README)
DEFAULT_D_MAX = 3.5  # A, neighbour bound for absent pairs (CHGFlowNet code and data README)
DEFAULT_D_MEAN = 2.0  # A, mean bond length for absent pairs (SHAFT code)
NEIGHBOUR_CUTOFF = 4.0  # A, radius over which the statistics were collected


@struct.dataclass
class BondTable:
    """Symmetric per element-pair distance thresholds, indexed by atomic number (0 = padding)."""

    d_min: jnp.ndarray  # [119, 119] float32: minimum observed distance (A), eq. 11 threshold
    d_max: jnp.ndarray  # [119, 119] float32: mean + std of observed distances (A), eq. 12 neighbour bound
    d_mean: jnp.ndarray  # [119, 119] float32: mean observed distance (A), SHAFT eq. 7
    known: jnp.ndarray  # [119, 119] bool: the pair is present in the source statistics


def _parse_key(key: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in key.split("_"))
    except ValueError:
        raise ValueError(f"bad bond-table key {key!r}: expected 'Z1_Z2'") from None
    if not (1 <= a < NUM_ELEMENTS and 1 <= b < NUM_ELEMENTS):
        raise ValueError(f"bad bond-table key {key!r}: atomic numbers must lie in 1..118")
    return a, b


def table_arrays(
    stats: Mapping[str, Mapping[str, float]],
    default_min: float = DEFAULT_D_MIN,
    default_max: float = DEFAULT_D_MAX,
    default_mean: float = DEFAULT_D_MEAN,
) -> dict[str, np.ndarray]:
    """numpy ``[119, 119]`` arrays ``d_min, d_max, d_mean, known`` from a statistics dict (host side)."""
    for part in ("min", "mean", "std"):
        if part not in stats:
            raise ValueError(f"bond statistics lack the {part!r} table (keys: {sorted(stats)})")
    d_min = np.full((NUM_ELEMENTS, NUM_ELEMENTS), default_min, np.float64)
    d_max = np.full((NUM_ELEMENTS, NUM_ELEMENTS), default_max, np.float64)
    d_mean = np.full((NUM_ELEMENTS, NUM_ELEMENTS), default_mean, np.float64)
    known = np.zeros((NUM_ELEMENTS, NUM_ELEMENTS), bool)
    for key, vmin in stats["min"].items():
        a, b = _parse_key(key)
        try:
            mean, std = float(stats["mean"][key]), float(stats["std"][key])
        except KeyError:
            raise ValueError(f"bond statistics: pair {key!r} has a min but no mean/std") from None
        values = (float(vmin), mean, std)
        if not all(np.isfinite(v) for v in values) or min(values[0], values[1]) <= 0 or std < 0:
            raise ValueError(f"bond statistics: non-physical entry for {key!r}: min/mean/std = {values}")
        for i, j in ((a, b), (b, a)):
            d_min[i, j], d_max[i, j], d_mean[i, j], known[i, j] = values[0], mean + std, mean, True
    return {
        "d_min": d_min.astype(np.float32),
        "d_max": d_max.astype(np.float32),
        "d_mean": d_mean.astype(np.float32),
        "known": known,
    }


def table_from_stats(stats: Mapping[str, Mapping[str, float]], **defaults: float) -> BondTable:
    """A :class:`BondTable` from ``{"min"|"mean"|"std": {"Z1_Z2": A}}`` (``max`` is not needed)."""
    arrays = table_arrays(stats, **defaults)
    return BondTable(**{k: jnp.asarray(v) for k, v in arrays.items()})


def read_stats(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """The raw statistics dict of the shipped file (default: the shared data folder)."""
    path = Path(path) if path is not None else require_file("data", BOND_STATS_FILE)
    with gzip.open(path, "rt") as fh:
        return json.load(fh)


@functools.lru_cache(maxsize=4)
def load_bond_table(
    path: str | None = None,
    default_min: float = DEFAULT_D_MIN,
    default_max: float = DEFAULT_D_MAX,
    default_mean: float = DEFAULT_D_MEAN,
) -> BondTable:
    """The shipped CHGFlowNet bond table (cached). ``path`` overrides the shared data file."""
    return table_from_stats(
        read_stats(path), default_min=default_min, default_max=default_max, default_mean=default_mean
    )


def structure_pair_distances(structure, cutoff: float = NEIGHBOUR_CUTOFF, tol: float = 1e-5) -> dict:
    """``{"Z1_Z2": [distances]}`` of one pymatgen Structure: every neighbour within ``cutoff`` (periodic
    images included, a site's own images too), distances of a pair type de-duplicated within ``tol``
    (CHGFlowNet code).
    """
    per: dict[str, list[float]] = {}
    for i, neighbours in enumerate(structure.get_all_neighbors(cutoff)):
        zi = structure[i].specie.Z
        for nb in neighbours:
            zj = nb.specie.Z
            key = f"{min(zi, zj)}_{max(zi, zj)}"
            per.setdefault(key, []).append(float(nb.nn_distance))
    out = {}
    for key, values in per.items():
        v = np.sort(np.asarray(values))
        keep = np.concatenate([[True], np.diff(v) > tol])
        out[key] = v[keep].tolist()
    return out


def stats_from_structures(structures: Iterable, cutoff: float = NEIGHBOUR_CUTOFF) -> dict:
    """``{"min"|"max"|"mean"|"std"|"count": {"Z1_Z2": value}}`` pooled over pymatgen structures."""
    pooled: dict[str, list[float]] = {}
    for s in structures:
        for key, values in structure_pair_distances(s, cutoff).items():
            pooled.setdefault(key, []).extend(values)
    out: dict[str, dict[str, float]] = {"min": {}, "max": {}, "mean": {}, "std": {}, "count": {}}
    for key, values in pooled.items():
        v = np.asarray(values)
        out["min"][key], out["max"][key] = float(v.min()), float(v.max())
        out["mean"][key], out["std"][key] = float(v.mean()), float(v.std())
        out["count"][key] = int(v.size)
    return out


def derive_from_dataset(
    n_structures: int = 500, seed: int = 0, max_sites: int = 200, cutoff: float = NEIGHBOUR_CUTOFF
) -> tuple[dict, np.ndarray]:
    """Bond statistics from a random sample of the shared CGCNN data set: ``(stats, rows)``.

    ``rows`` are the data-set row ids of the sample (seeded ``numpy`` choice among cells with at most
    ``max_sites`` sites), so the sample can be reported and reproduced.
    """
    from hgfn_jax.data import mp

    meta = mp.read_meta()
    ok = (meta["nsites"].to_numpy() <= max_sites) & meta["parse_error"].isna().to_numpy()
    candidates = np.flatnonzero(ok)
    if n_structures > candidates.size:
        raise ValueError(f"n_structures={n_structures} exceeds the {candidates.size} eligible structures")
    rows = np.sort(np.random.default_rng(seed).choice(candidates, size=n_structures, replace=False))
    data = mp.load_mp(n_max=max_sites, rows=rows, parse_all=False)
    return stats_from_structures(mp.iter_structures(data), cutoff), rows


def compare_tables(derived: Mapping, shipped: Mapping) -> dict[str, float]:
    """Summary of a derived table vs the shipped one over pairs present in both.

    Returns ``n_shipped, n_derived, n_common`` and, for the ``min`` and ``mean`` tables: Pearson correlation,
    median / 5th / 95th percentile of the ratio derived / shipped, and the fraction of common pairs whose
    derived minimum is >= the shipped minimum (a sample of MP can only raise a minimum over all of MP, up to
    differences between MP releases).
    """
    common = sorted(set(derived["min"]) & set(shipped["min"]))
    out: dict[str, float] = {
        "n_shipped": float(len(shipped["min"])),
        "n_derived": float(len(derived["min"])),
        "n_common": float(len(common)),
    }
    if len(common) < 2:
        return out
    for part in ("min", "mean"):
        a = np.asarray([derived[part][k] for k in common])
        b = np.asarray([shipped[part][k] for k in common])
        ratio = a / b
        out[f"{part}_pearson"] = float(np.corrcoef(a, b)[0, 1])
        out[f"{part}_ratio_median"] = float(np.median(ratio))
        out[f"{part}_ratio_p05"] = float(np.percentile(ratio, 5))
        out[f"{part}_ratio_p95"] = float(np.percentile(ratio, 95))
    a = np.asarray([derived["min"][k] for k in common])
    b = np.asarray([shipped["min"][k] for k in common])
    out["frac_min_not_below"] = float(np.mean(a >= b - 1e-6))
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m hgfn_jax.data.bond_stats [--n N] [--seed S]``: derive, compare, print a JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="structures in the sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-sites", type=int, default=200)
    args = parser.parse_args(argv)
    derived, rows = derive_from_dataset(args.n, args.seed, args.max_sites)
    report = compare_tables(derived, read_stats())
    report.update(
        n_structures=args.n, seed=args.seed, max_sites=args.max_sites, first_rows=rows[:10].tolist()
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
