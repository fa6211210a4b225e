"""Host-side conversion between the padded :class:`Crystal` and pymatgen ``Structure`` / CIF text (numpy).

Conventions:
- Crystals produced here are numpy-backed (float32 / int32 / bool), unbatched unless stated; ``stack`` /
  ``unstack`` add / remove the leading batch axis.
- Fractional coordinates are wrapped to [0, 1) (float32 values that round up to 1.0 become 0.0).
- Lattice parameters go through ``Lattice.from_parameters`` (pymatgen's default orientation), so a round trip
  keeps lengths, angles and fractional coordinates but not the Cartesian orientation of the input.
- Every failure is a ``ValueError`` naming the problem: overflow, NaN coordinates, degenerate lattice, unknown
  species, disordered (partially occupied) sites, too many sites for ``n_max``, malformed CIF.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser, CifWriter

from hgfn_jax.crystal.elements import MAX_Z, SYMBOLS
from hgfn_jax.crystal.lattice import check_lattice
from hgfn_jax.crystal.types import Crystal

SPACEGROUP_SYMPREC = 0.1


def _numpy_fields(crystal: Crystal) -> dict[str, np.ndarray]:
    return {
        "lattice": np.asarray(crystal.lattice, np.float64),
        "frac": np.asarray(crystal.frac, np.float64),
        "species": np.asarray(crystal.species),
        "mask": np.asarray(crystal.mask, bool),
        "spacegroup": np.asarray(crystal.spacegroup),
        "overflow": np.asarray(crystal.overflow, bool),
    }


def to_structure(crystal: Crystal) -> Structure:
    """pymatgen ``Structure`` of one unbatched crystal (numpy or jax arrays); only real sites, in order.

    Raises ValueError for a batched crystal, overflow (sites are missing), no real site, NaN/inf coordinates
    of a real site, a degenerate lattice, or a real site whose species is not an element Z in 1..118.
    """
    c = _numpy_fields(crystal)
    if c["lattice"].shape != (6,) or c["frac"].ndim != 2:
        raise ValueError(
            "expected an unbatched Crystal (lattice [6], frac [N, 3]), got lattice shape "
            f"{c['lattice'].shape}; use unstack() for batches"
        )
    if bool(c["overflow"]):
        raise ValueError(
            "crystal overflowed its padding (the true cell had more sites than n_max); not convertible"
        )
    mask = c["mask"]
    if not mask.any():
        raise ValueError("crystal has no real site (mask is all False)")
    params = check_lattice(c["lattice"])
    frac = c["frac"][mask]
    if not np.all(np.isfinite(frac)):
        bad = np.flatnonzero(~np.all(np.isfinite(c["frac"]), axis=1) & mask)
        raise ValueError(f"non-finite (NaN/inf) fractional coordinates at real sites {bad.tolist()}")
    species = c["species"][mask].astype(np.int64)
    if np.any((species < 1) | (species > MAX_Z)):
        bad = sorted(set(species[(species < 1) | (species > MAX_Z)].tolist()))
        raise ValueError(f"unknown species: atomic numbers {bad} at real sites (expected 1..{MAX_Z})")
    lattice = Lattice.from_parameters(*params.tolist())
    return Structure(lattice, [SYMBOLS[z] for z in species], frac, coords_are_cartesian=False)


def _wrap_frac32(frac: np.ndarray) -> np.ndarray:
    f = np.mod(np.asarray(frac, np.float64), 1.0).astype(np.float32)
    f[f >= 1.0] = 0.0
    return f


def spacegroup_number(structure: Structure, symprec: float = SPACEGROUP_SYMPREC) -> int:
    """International space-group number from pymatgen's SpacegroupAnalyzer (0 if spglib finds none)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
    except Exception:  # spglib failure on a pathological cell: report unknown
        return 0


def from_structure(structure: Structure, n_max: int, spacegroup: bool = False) -> Crystal:
    """Padded, numpy-backed crystal of a pymatgen ``Structure`` with ``n_max`` slots (sites kept in order).

    ``spacegroup=True`` runs SpacegroupAnalyzer (symprec 0.1); otherwise the space group is 0 (unknown).
    Raises ValueError for disordered structures, more sites than ``n_max``, species without an element
    (dummy species) or a degenerate lattice.
    """
    if not isinstance(structure, Structure):
        raise ValueError(f"expected a pymatgen Structure, got {type(structure).__name__}")
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    if not structure.is_ordered:
        raise ValueError(
            "structure is disordered (partially occupied or mixed-species sites); the padded Crystal holds "
            "one element per site"
        )
    n = len(structure)
    if n > n_max:
        raise ValueError(f"structure has {n} sites, more than n_max={n_max}")
    if n == 0:
        raise ValueError("structure has no sites")
    params = check_lattice(np.asarray(structure.lattice.parameters, np.float64))
    z = np.zeros(n_max, np.int32)
    for i, site in enumerate(structure):
        zi = int(getattr(site.specie, "Z", 0) or 0)
        if not 1 <= zi <= MAX_Z:
            raise ValueError(f"site {i} has species {site.specie!s} without an element atomic number")
        z[i] = zi
    frac = np.zeros((n_max, 3), np.float32)
    fc = np.asarray(structure.frac_coords, np.float64)
    if not np.all(np.isfinite(fc)):
        raise ValueError("structure has non-finite (NaN/inf) fractional coordinates")
    frac[:n] = _wrap_frac32(fc)
    mask = np.arange(n_max) < n
    sg = spacegroup_number(structure) if spacegroup else 0
    return Crystal(
        lattice=params.astype(np.float32),
        frac=frac,
        species=z,
        mask=mask,
        spacegroup=np.asarray(sg, np.int32),
        overflow=np.asarray(False),
    )


def to_cif(crystal: Crystal) -> str:
    """CIF text (P1, all sites listed) of one unbatched crystal, written by pymatgen's CifWriter."""
    return str(CifWriter(to_structure(crystal)))


def parse_cif(text: str) -> Structure:
    """pymatgen ``Structure`` of the first block of a CIF text (the cell as written, not reduced to
    primitive); ValueError('malformed CIF: ...') when pymatgen cannot read a structure from it.

    Site order is pymatgen's CIF-reader order (sites grouped by species, then ``get_sorted_structure``, i.e.
    by electronegativity), not necessarily the order of the file. Crystals whose sites are already in that
    order (everything parsed from CIF, pymatgen-sorted structures) come back in the same order through
    ``to_cif``/``from_cif``; others come back as the same multiset of sites.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("malformed CIF: empty text")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parser = CifParser(io.StringIO(text))
    except Exception as err:  # noqa: BLE001 - pymatgen raises many types on broken input
        raise ValueError(f"malformed CIF: {type(err).__name__}: {err}") from err
    # an impossible cell gets a message naming the field (pymatgen would say "Singular matrix", or accept a
    # negative length); the parser's own parsed blocks are used, nothing is read twice
    blocks = list(getattr(getattr(parser, "_cif", None), "data", {}).values())
    if blocks:
        _check_cif_cell(blocks[0].data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structures = parser.parse_structures(primitive=False, on_error="raise")
    except ValueError as err:
        raise ValueError(f"malformed CIF: {err}") from err
    except Exception as err:  # pymatgen raises KeyError/IndexError/... on broken input
        raise ValueError(f"malformed CIF: {type(err).__name__}: {err}") from err
    if not structures:
        raise ValueError("malformed CIF: no structure could be read")
    return structures[0]


_CIF_CELL = ("_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta",
             "_cell_angle_gamma")


def _check_cif_cell(data: dict) -> None:
    """ValueError naming the field when a CIF block's cell has a length <= 0 or an angle outside (0, 180).
    Fields that are absent or not numbers are left to pymatgen."""
    for i, key in enumerate(_CIF_CELL):
        raw = data.get(key)
        if not isinstance(raw, str):
            continue
        try:
            value = float(raw.split("(")[0])  # "5.431(2)": value with its uncertainty
        except ValueError:
            continue  # "?" / "." (unknown): pymatgen's parser reports it
        ok = value > 0 if i < 3 else 0 < value < 180
        if not (np.isfinite(value) and ok):
            need = "a positive length (Angstrom)" if i < 3 else "an angle strictly between 0 and 180 degrees"
            raise ValueError(f"malformed CIF: {key} = {raw}, need {need}")


def from_cif(text: str, n_max: int, spacegroup: bool = False) -> Crystal:
    """Padded crystal from CIF text (see :func:`parse_cif` for the site order and :func:`from_structure`)."""
    return from_structure(parse_cif(text), n_max, spacegroup=spacegroup)


def stack(crystals: Sequence[Crystal]) -> Crystal:
    """Batched crystal (leading [B] on every field, numpy-backed) of same-``n_max`` unbatched crystals."""
    if len(crystals) == 0:
        raise ValueError("cannot stack an empty list of crystals")
    shapes = {np.shape(c.frac) for c in crystals}
    if len(shapes) != 1:
        raise ValueError(f"crystals have different padded shapes {sorted(shapes)}; pad to one n_max first")
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *crystals)


def unstack(batched: Crystal) -> list[Crystal]:
    """List of numpy-backed unbatched crystals of a batched crystal (fields with a leading [B])."""
    lattice = np.asarray(batched.lattice)
    if lattice.ndim != 2:
        raise ValueError(f"expected a batched Crystal (lattice [B, 6]), got lattice shape {lattice.shape}")
    host = jax.tree.map(np.asarray, batched)
    return [jax.tree.map(lambda x, i=i: x[i], host) for i in range(lattice.shape[0])]


def write_cifs(
    batched: Crystal, folder: str | Path, prefix: str = "crystal", skip_invalid: bool = False
) -> list[Path]:
    """Write each crystal of a batch as ``<folder>/<prefix>_<i:05d>.cif`` (P1); returns the written paths.

    A crystal counts as invalid when it cannot be converted, or when pymatgen cannot read its CIF back (e.g.
    two atoms on one position: the reader sums them to an occupancy > 1 and refuses the file), so every file
    written is one a user's pymatgen opens. With ``skip_invalid=False`` an invalid crystal raises ValueError
    naming its index; with True it is skipped (its index is absent from the returned file names).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, crystal in enumerate(unstack(batched)):
        try:
            text = to_cif(crystal)
            parse_cif(text)  # the round trip a reader will do
        except ValueError as err:
            if skip_invalid:
                continue
            raise ValueError(f"crystal {i} of the batch: {err}") from err
        path = folder / f"{prefix}_{i:05d}.cif"
        path.write_text(text)
        written.append(path)
    return written
