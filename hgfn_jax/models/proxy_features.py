"""Inputs of the Crystal-GFN proxies (paper 001, Appendix D): element property table, features, input checks.

- ``element_property_table()``: ``[119, P]`` standardised physical properties of the elements (pymatgen data);
- ``composition_and_lattice_features``: atom fractions and the eight lattice features (a, b, c, angles,
  ``log(V / N)``, ``log N``) the model standardises;
- ``input_validity`` (jit) and ``validate_inputs`` (host, raises): which rows are proxy inputs. The cell part is
  the one rule of :func:`hgfn_jax.crystal.lattice.valid_cell`, at tolerance 0 with the direct volume factor.

Units and conventions: see :mod:`hgfn_jax.models.proxy`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal.elements import NUM_ELEMENTS
from hgfn_jax.crystal.lattice import cell_volume_factor, valid_cell

NUM_SPACEGROUPS = 230
NUM_LATTICE_FEATURES = 8  # a, b, c, alpha, beta, gamma, log(V/N), log N

ELEMENT_PROPERTIES = (
    "log_atomic_mass",  # log(g/mol)
    "electronegativity",  # Pauling
    "atomic_radius",  # empirical, Angstrom
    "atomic_radius_calculated",  # Angstrom
    "van_der_waals_radius",  # Angstrom
    "average_ionic_radius",  # Angstrom
    "first_ionization_energy",  # eV
    "electron_affinity",  # eV
    "log_molar_volume",  # log(cm^3/mol)
    "log_melting_point",  # log(K)
    "mendeleev_number",
    "valence_s",  # electrons in the outer s shell
    "valence_p",  # electrons in the outer p shell
    "valence_d",  # electrons in the (n-1) d shell
    "valence_f",  # electrons in the (n-2) f shell
)


MAX_PROPERTY_Z = 103  # physical properties are used up to lawrencium


def _safe(fn: Callable[[], Any]) -> float:
    try:
        v = fn()
        return float("nan") if v is None else float(v)
    except Exception:  # pymatgen raises assorted errors for missing data
        return float("nan")


def _valence(elem) -> tuple[float, float, float, float]:
    try:
        shells = elem.full_electronic_structure
    except Exception:
        return (float("nan"),) * 4
    n_max = max(n for n, _, _ in shells)
    occ = {(n, l): float(o) for n, l, o in shells}
    return (
        occ.get((n_max, "s"), 0.0),
        occ.get((n_max, "p"), 0.0),
        occ.get((n_max - 1, "d"), 0.0),
        occ.get((n_max - 2, "f"), 0.0),
    )


@functools.lru_cache(maxsize=1)
def element_property_table() -> np.ndarray:
    """[119, P] float32 standardised physical properties of the elements (``ELEMENT_PROPERTIES``), row = Z.

    Built from pymatgen's element data for Z = 1..103 (heavier elements get all zeros: their tabulated values
    are unreliable). Each column is standardised over the elements that have the value; missing values
    become 0 (the column mean) and row 0 (padding) is all zeros. Logs are natural logs.
    """
    from pymatgen.core.periodic_table import Element

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in range(1, NUM_ELEMENTS):
            e = Element.from_Z(z)
            mass = _safe(lambda e=e: e.atomic_mass)
            mv = _safe(lambda e=e: e.molar_volume)
            mp = _safe(lambda e=e: e.melting_point)
            rows.append(
                [
                    np.log(mass) if mass > 0 else np.nan,
                    _safe(lambda e=e: e.X),
                    _safe(lambda e=e: e.atomic_radius),
                    _safe(lambda e=e: e.atomic_radius_calculated),
                    _safe(lambda e=e: e.van_der_waals_radius),
                    _safe(lambda e=e: e.average_ionic_radius),
                    _safe(lambda e=e: e.ionization_energy),
                    _safe(lambda e=e: e.electron_affinity),
                    np.log(mv) if mv > 0 else np.nan,
                    np.log(mp) if mp > 0 else np.nan,
                    _safe(lambda e=e: e.mendeleev_no),
                    *_valence(e),
                ]
            )
    raw = np.asarray(rows, dtype=np.float64)
    raw[MAX_PROPERTY_Z:] = np.nan  # Z > 103: pymatgen's values are estimates or wrong (e.g. Ds IE = 65 eV)
    mean = np.nanmean(raw, axis=0)
    std = np.nanstd(raw, axis=0)
    std = np.where(std > 0, std, 1.0)
    table = np.nan_to_num((raw - mean) / std, nan=0.0)
    out = np.zeros((NUM_ELEMENTS, len(ELEMENT_PROPERTIES)), np.float32)
    out[1:] = table
    out.setflags(write=False)
    return out


def cell_volume(lattice: jnp.ndarray) -> jnp.ndarray:
    """[...] volume (A^3) of cells given as ``[..., 6]`` (a, b, c, alpha, beta, gamma in degrees).

    ``V = abc sqrt(1 - cos^2 a - cos^2 b - cos^2 g + 2 cos a cos b cos g)``; 0 for degenerate angle triples.
    """
    a, b, c = lattice[..., 0], lattice[..., 1], lattice[..., 2]
    return a * b * c * jnp.sqrt(jnp.maximum(cell_volume_factor(lattice), 0.0))


def input_validity(counts_z: jnp.ndarray, spacegroup: jnp.ndarray, lattice: jnp.ndarray) -> jnp.ndarray:
    """[...] bool: the row is a valid proxy input (see module docstring, "Invalid inputs")."""
    counts = counts_z[..., 1:]
    ok_counts = jnp.all(jnp.isfinite(counts) & (counts >= 0), axis=-1) & (jnp.sum(counts, axis=-1) > 0)
    ok_sg = (spacegroup >= 1) & (spacegroup <= NUM_SPACEGROUPS)
    # the cell rule of crystal.lattice (tolerance 0, direct volume factor: the rule the proxies were trained with);
    # the feature log(V / N) also needs V > 0 in float32 (a * b * c can underflow for absurd lengths)
    ok_lat = valid_cell(lattice, rel_volume_tol=0.0, exact=False)
    ok_vol = cell_volume(jnp.where(jnp.isfinite(lattice), lattice, 1.0)) > 0
    return ok_counts & ok_sg & ok_lat & ok_vol


def composition_and_lattice_features(
    counts_z: jnp.ndarray, lattice: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Atom fractions ``[..., 119]`` (index 0 zeroed) and raw lattice features ``[..., 8]``.

    Lattice features: a, b, c (A), alpha, beta, gamma (deg), log(V/N) (V/N in A^3/atom), log N. Safe (finite)
    for invalid rows: those are masked to NaN at the output by ``ProxyModel``.
    """
    counts = jnp.maximum(jnp.nan_to_num(counts_z.astype(jnp.float32)), 0.0)
    counts = counts.at[..., 0].set(0.0)
    total = jnp.sum(counts, axis=-1, keepdims=True)
    frac = counts / jnp.maximum(total, 1e-6)
    n = jnp.maximum(total[..., 0], 1e-6)
    lat = jnp.nan_to_num(lattice.astype(jnp.float32))
    vol = jnp.maximum(cell_volume(lat), 1e-6)
    feats = jnp.concatenate([lat, jnp.log(vol / n)[..., None], jnp.log(n)[..., None]], axis=-1)
    return frac, feats



def validate_inputs(counts_z, spacegroup, lattice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check concrete inputs at the Python boundary; return them as float32/int32/float32 numpy arrays.

    Raises ``ValueError`` naming the first problem: wrong shapes, a space group outside 1..230 or not an
    integer, negative or non-finite counts, a row without atoms, a count at index 0 (padding, not an element),
    non-finite lattice, non-positive lengths, angles outside (0, 180) degrees, or an angle triple that gives
    no cell. Non-integer counts are accepted (the model only uses fractions and the total N).
    """
    counts = np.asarray(counts_z, dtype=np.float64)
    sg = np.asarray(spacegroup)
    lat = np.asarray(lattice, dtype=np.float64)
    if counts.ndim < 1 or counts.shape[-1] != NUM_ELEMENTS:
        raise ValueError(
            f"counts_z must have shape [..., {NUM_ELEMENTS}] (index = atomic number), got {counts.shape}"
        )
    batch = counts.shape[:-1]
    if sg.shape != batch:
        raise ValueError(
            f"spacegroup must have shape {batch} to match counts_z {counts.shape}, got {sg.shape}"
        )
    if lat.shape != batch + (6,):
        raise ValueError(
            f"lattice must have shape {batch + (6,)} (a, b, c, alpha, beta, gamma), got {lat.shape}"
        )
    if not np.issubdtype(sg.dtype, np.integer):
        if not np.all(np.isfinite(sg)) or np.any(np.asarray(sg, np.float64) % 1 != 0):
            raise ValueError(f"spacegroup must hold integers 1..{NUM_SPACEGROUPS}, got {sg}")
    sgi = np.asarray(sg, dtype=np.int64)
    bad = (sgi < 1) | (sgi > NUM_SPACEGROUPS)
    if np.any(bad):
        raise ValueError(f"spacegroup must be in 1..{NUM_SPACEGROUPS}, got {sgi[bad].ravel()[:5].tolist()}")
    if not np.all(np.isfinite(counts)):
        raise ValueError("counts_z contains non-finite values")
    if np.any(counts < 0):
        zs = np.unique(np.nonzero(counts < 0)[-1])
        raise ValueError(f"counts_z must be non-negative; negative counts for Z = {zs[:10].tolist()}")
    if np.any(counts[..., 0] != 0):
        raise ValueError("counts_z[..., 0] must be 0: index 0 is padding (the index is the atomic number Z)")
    if np.any(counts.sum(-1) <= 0):
        raise ValueError("counts_z has a row with no atoms (all counts are 0)")
    if not np.all(np.isfinite(lat)):
        raise ValueError("lattice contains non-finite values")
    if np.any(lat[..., :3] <= 0):
        raise ValueError(
            f"lattice lengths a, b, c must be > 0 Angstrom, got {lat[..., :3].reshape(-1, 3)[:3]}"
        )
    ang = lat[..., 3:]
    if np.any((ang <= 0) | (ang >= 180)):
        raise ValueError(f"lattice angles must be in (0, 180) degrees, got {ang.reshape(-1, 3)[:3].tolist()}")
    cosines = np.cos(np.deg2rad(ang))
    ca, cb, cg = cosines[..., 0], cosines[..., 1], cosines[..., 2]
    if np.any(1.0 - ca**2 - cb**2 - cg**2 + 2.0 * ca * cb * cg <= 0):
        raise ValueError("lattice angles do not form a cell (zero volume): check alpha, beta, gamma")
    return counts.astype(np.float32), sgi.astype(np.int32), lat.astype(np.float32)
