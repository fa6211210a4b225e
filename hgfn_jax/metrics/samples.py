"""What the evaluation suite consumes: one :class:`Sample` per generated crystal, never dropped.

A sample carries a pymatgen ``Structure`` when one could be built, else ``structure=None`` and the reason
(``error``); composition-only generators (Crystal-GFN: composition + space group + lattice, no positions) give
``structure=None, error="no_positions"`` with the composition and lattice filled in. Every metric keeps every
sample in its denominator: a sample that cannot be judged counts as failing that metric.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from pymatgen.core import Composition, Lattice, Structure

#: Reasons a sample has no usable structure.
ERRORS = {
    "unreadable_cif": "pymatgen could not parse the CIF",
    "empty": "no sites",
    "nonfinite_lattice": "NaN/inf lattice parameters or matrix",
    "degenerate_lattice": "zero or negative cell volume",
    "nonfinite_coords": "NaN/inf fractional coordinates",
    "disordered": "partially occupied sites",
    "no_positions": "the generator gives composition and lattice only (Crystal-GFN)",
}


@dataclasses.dataclass
class Sample:
    """One generated crystal as the metrics see it."""

    structure: Structure | None
    composition: Composition | None
    error: str | None = None  # key of ERRORS when structure is None
    spacegroup: int | None = None  # the generator's chosen group, if any
    lattice: tuple[float, ...] | None = None  # a, b, c, alpha, beta, gamma (composition-only samples)
    name: str = ""

    @property
    def n_atoms(self) -> int | None:
        if self.structure is not None:
            return len(self.structure)
        return None if self.composition is None else int(round(self.composition.num_atoms))

    @property
    def volume(self) -> float | None:
        if self.structure is not None:
            return float(self.structure.volume)
        if self.lattice is None or not np.all(np.isfinite(self.lattice)):
            return None
        try:
            vol = float(Lattice.from_parameters(*self.lattice).volume)
        except Exception:  # noqa: BLE001
            return None
        # impossible angle triples (Crystal-GFN's independent 50-150 degree ranges): pymatgen gives volume 0
        return vol if math.isfinite(vol) and vol > 1e-12 else None


def structure_error(s: Structure) -> str | None:
    """Why ``s`` is unusable (a key of ERRORS), or None."""
    if len(s) == 0:
        return "empty"
    m = np.asarray(s.lattice.matrix, float)
    if not np.all(np.isfinite(m)):
        return "nonfinite_lattice"
    vol = float(np.linalg.det(m))
    if not math.isfinite(vol) or abs(vol) <= 1e-12 or not np.all(np.isfinite(s.lattice.abc + s.lattice.angles)):
        return "degenerate_lattice"
    if not np.all(np.isfinite(s.frac_coords)):
        return "nonfinite_coords"
    if not s.is_ordered:
        return "disordered"
    return None


def from_structure(s: Structure | None, name: str = "", spacegroup: int | None = None) -> Sample:
    """Sample of a built structure (checked for NaN lattice, empty cell, disorder)."""
    if s is None:
        return Sample(None, None, "unreadable_cif", spacegroup, name=name)
    err = structure_error(s)
    comp = None
    try:
        comp = s.composition if len(s) else None
    except Exception:  # noqa: BLE001
        comp = None
    return Sample(None if err else s, comp, err, spacegroup, name=name)


def from_cif(text: str, name: str = "", spacegroup: int | None = None) -> Sample:
    """Sample of CIF text; an unreadable CIF is kept as ``error='unreadable_cif'``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = Structure.from_str(text, fmt="cif")
    except Exception:  # noqa: BLE001 - any parse failure is "unreadable"
        return Sample(None, None, "unreadable_cif", spacegroup, name=name)
    return from_structure(s, name, spacegroup)


def from_cif_files(paths: Iterable[str | Path]) -> list[Sample]:
    out = []
    for p in paths:
        p = Path(p)
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError):
            out.append(Sample(None, None, "unreadable_cif", name=p.name))
            continue
        out.append(from_cif(text, name=p.name))
    return out


def from_record(rec: dict, name: str = "") -> Sample:
    """Composition-only sample of a Crystal-GFN / hierarchical ``samples.jsonl`` record."""
    comp = None
    if rec.get("composition"):
        comp = Composition({k: float(v) for k, v in rec["composition"].items()})
    elif rec.get("formula"):
        try:
            comp = Composition(rec["formula"])
        except Exception:  # noqa: BLE001
            comp = None
    lat = rec.get("lattice")
    sg = rec.get("spacegroup")
    return Sample(None, comp, "no_positions", None if sg is None else int(sg),
                  tuple(float(x) for x in lat) if lat is not None else None, name=name)


def from_jsonl(path: str | Path) -> list[Sample]:
    with Path(path).open() as f:
        return [from_record(json.loads(line), name=f"{i}") for i, line in enumerate(f) if line.strip()]


def error_counts(samples: list[Sample]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in samples:
        if s.error:
            out[s.error] = out.get(s.error, 0) + 1
    return out
