"""PGCGM's atom clustering and merging (paper "Atom Clustering and Merging"), on the host with pymatgen + scipy.

Same-element atoms are grouped by single-linkage hierarchical clustering on minimum-image distances, cut at
``threshold = ratio * 2 * r(element)`` (``r`` = atomic radius, :func:`hgfn_jax.data.pgcgm.atomic_radii`;
``ratio`` 0.5 by default as in the authors' public post-processing; the paper's text names 1.2 times the
radius sum as the largest distance allowed, which we read as the validity check). Each cluster becomes one atom
at the periodic mean of its members (offsets unwrapped around the first member).

Unlike a single clustering pass, the merge is repeated until no two same-element atoms are closer than the
threshold: a merged atom can land within the threshold of another cluster's merged atom, and one pass would
leave that pair. Every pass removes at least one atom, so this ends. A structure with no same-element pair
closer than the threshold is returned unchanged (so its space group is unchanged).
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Structure
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from hgfn_jax.data.pgcgm import atomic_radii

DEFAULT_MERGE_RATIO = 0.5


def _threshold(z: int, ratio: float) -> float:
    return float(ratio * 2.0 * atomic_radii()[z])


def _merge_once(frac: np.ndarray, lattice, thr: float) -> np.ndarray:
    d = lattice.get_all_distances(frac, frac)
    d = 0.5 * (d + d.T)
    np.fill_diagonal(d, 0.0)
    if len(frac) < 2 or d[np.triu_indices(len(frac), 1)].min() >= thr:
        return frac
    labels = fcluster(linkage(squareform(d, checks=False), method="single"), thr * (1 - 1e-9), "distance")
    out = []
    for c in np.unique(labels):
        members = frac[labels == c]
        off = members - members[0]
        out.append(np.mod(members[0] + np.mean(off - np.round(off), axis=0), 1.0))
    return np.asarray(out)


def merge_same_element(structure: Structure, ratio: float = DEFAULT_MERGE_RATIO, max_passes: int = 100) -> Structure:
    """A new structure with same-element atoms closer than ``ratio * 2 r`` merged (see module docstring)."""
    lattice = structure.lattice
    species, coords = [], []
    for el in sorted({s.specie for s in structure}, key=lambda e: e.Z):
        frac = np.asarray([s.frac_coords for s in structure if s.specie == el], float)
        thr = _threshold(el.Z, ratio)
        for _ in range(max_passes):
            new = _merge_once(frac, lattice, thr)
            if len(new) == len(frac):
                break
            frac = new
        species += [el] * len(frac)
        coords.append(frac)
    if sum(len(c) for c in coords) == len(structure):
        return structure.copy()
    return Structure(lattice, species, np.concatenate(coords), coords_are_cartesian=False)


def min_same_element_distance(structure: Structure) -> dict[int, float]:
    """``{Z: shortest distance between two distinct same-element atoms}`` (inf for a single atom)."""
    out = {}
    for el in {s.specie for s in structure}:
        frac = np.asarray([s.frac_coords for s in structure if s.specie == el], float)
        if len(frac) < 2:
            out[el.Z] = float("inf")
            continue
        d = structure.lattice.get_all_distances(frac, frac)
        out[el.Z] = float(d[np.triu_indices(len(frac), 1)].min())
    return out
