"""Independent references shared by several test modules (tests/ is on sys.path through its conftest.py)."""

from __future__ import annotations

import warnings

import numpy as np
from pymatgen.core import Structure


def shaft_bond_score(s: Structure, stats) -> float:
    """SHAFT eq. 7 (the reference code's bond score) from pymatgen's neighbours within 4 A: per element pair, the
    mean over its distinct neighbour distances of |d - mean| + exp(min - d)^2, averaged over the pairs present;
    pairs absent from ``stats`` take the code's defaults (min 1.0 A, mean 2.0 A); 5.0 with no neighbour."""
    per: dict[str, list[float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        neighbours = s.get_all_neighbors(4.0)
    for i, nbs in enumerate(neighbours):
        for nb in nbs:
            za, zb = sorted((s[i].specie.Z, nb.specie.Z))
            per.setdefault(f"{za}_{zb}", []).append(nb.nn_distance)
    if not per:
        return 5.0
    scores = []
    for key, values in per.items():
        v = np.sort(np.asarray(values))
        v = v[np.concatenate([[True], np.diff(v) > 1e-5])]
        dmin, dmean = stats["min"].get(key, 1.0), stats["mean"].get(key, 2.0)
        scores.append(np.mean(np.abs(v - dmean) + np.exp(dmin - v) ** 2))
    return float(np.mean(scores))
