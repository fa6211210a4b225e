"""Relaxation with a universal potential, and match rate / RMS displacement against the relaxed structure.

Potential: matgl ``M3GNet-MP-2021.2.8-PES`` (default) or ``TensorNet-MatPES-PBE-v2025.1-PES`` where the project's
loader knows it, loaded through :func:`hgfn_jax.models.matgl.load_model` (the fixed checkpoint; stock
matgl 4.1.2 gives wrong forces). ASE FIRE on positions and cell (``FrechetCellFilter``), ``fmax`` 0.1 eV/A as
matgl's ``Relaxer``, with a step cap and a per-structure wall-clock limit checked after every step, so one
pathological cell cannot stall the batch. Structures are relaxed one at a time (torch, 1 thread).

Every structure gets a :class:`RelaxResult`; failures are counted by reason (``REASONS``) and stay in every
denominator: a structure that could not be relaxed does not match. A run that hits the step cap keeps its last
structure (``converged=False``, reason ``step_cap``) and is matched like the others.

Match (papers 000 Table 3, 002 Table 4, PGCGM Table 2): pymatgen ``StructureMatcher(ltol, stol, angle_tol)``
between the generated and the relaxed structure; ``TOLERANCES`` names each paper's values. RMS displacement is
``get_rms_dist``'s first value (normalised by (V/n)^(1/3)), averaged over the matched pairs.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

DEFAULT_POTENTIAL = "M3GNet-MP-2021.2.8-PES"
DEFAULT_EFORM = "M3GNet-MP-2018.6.1-Eform"

#: (ltol, stol, angle_tol) of each convention.
TOLERANCES = {
    "chgflownet": (1.0, 1.0, 10.0),  # papers 000 (sec. 5.3) and 002: "10 deg, 1.0 length, 1.0 site"
    "pgcgm": (0.2, 0.2, 0.5),  # PGCGM Table 2
    "cdvae": (0.3, 0.5, 10.0),  # CDVAE reconstruction match (RecEval)
    "pymatgen_default": (0.2, 0.3, 5.0),
}

REASONS = {
    "no_structure": "the sample has no usable structure",
    "unsupported_element": "an element the potential has no embedding for",
    "graph_error": "the potential could not build the neighbour graph",
    "model_error": "the potential raised",
    "nonfinite": "energy, forces or stress became NaN/inf",
    "diverged": "the cell exploded or collapsed (volume per atom outside [0.5, 500] A^3) or E < -50 eV/atom",
    "timeout": "the per-structure time limit was reached",
    "step_cap": "the step cap was reached before fmax (the last structure is kept)",
}


@dataclasses.dataclass
class RelaxResult:
    structure: Structure | None  # relaxed (or last) structure; None on a hard failure
    energy_per_atom: float  # potential energy of ``structure`` (eV/atom), NaN on failure
    converged: bool
    steps: int
    seconds: float
    reason: str | None  # key of REASONS, None when converged


class Relaxer:
    """Failure-tolerant relaxation of pymatgen Structures with a fixed matgl potential."""

    def __init__(self, potential: str = DEFAULT_POTENTIAL, fmax: float = 0.1, max_steps: int = 500,
                 time_limit_s: float = 60.0, relax_cell: bool = True, model_dir=None):
        from matgl.ext.ase import PESCalculator

        from hgfn_jax.models.matgl import configure_torch_threads, load_model

        configure_torch_threads()
        self.name = potential
        self.model = load_model(potential, model_dir)
        self.calc = PESCalculator(potential=self.model, stress_unit="eV/A3")
        inner = getattr(self.model, "model", self.model)
        self.elements = frozenset(getattr(inner, "element_types", ()))
        self.fmax, self.max_steps, self.time_limit_s = float(fmax), int(max_steps), float(time_limit_s)
        self.relax_cell = bool(relax_cell)

    def relax(self, s: Structure | None) -> RelaxResult:
        from ase.filters import FrechetCellFilter
        from ase.optimize import FIRE
        from pymatgen.io.ase import AseAtomsAdaptor

        t0 = time.perf_counter()
        if s is None or len(s) == 0:
            return RelaxResult(None, math.nan, False, 0, 0.0, "no_structure")
        if self.elements and not {el.symbol for el in s.composition.elements} <= self.elements:
            return RelaxResult(None, math.nan, False, 0, 0.0, "unsupported_element")
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = self.calc
        n = len(atoms)
        steps, reason, converged = 0, None, False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = FrechetCellFilter(atoms) if self.relax_cell else atoms
                opt = FIRE(obj, logfile=None)
                for conv in opt.irun(fmax=self.fmax, steps=self.max_steps):
                    e = float(atoms.get_potential_energy()) / n
                    f = atoms.get_forces()
                    vpa = atoms.get_volume() / n
                    if not (math.isfinite(e) and np.all(np.isfinite(f))):
                        reason = "nonfinite"
                        break
                    if not 0.5 <= vpa <= 500.0 or e < -50.0:
                        reason = "diverged"
                        break
                    if conv:
                        converged = True
                        break
                    steps += 1
                    if time.perf_counter() - t0 > self.time_limit_s:
                        reason = "timeout"
                        break
                else:
                    reason = "step_cap"
                if not converged and reason is None:
                    reason = "step_cap"
        except Exception as exc:  # noqa: BLE001 - classify and keep going
            msg = f"{type(exc).__name__}: {exc}".lower()
            reason = "graph_error" if "graph" in msg or "neighbor" in msg or "index" in msg else "model_error"
        dt = time.perf_counter() - t0
        if reason in ("nonfinite", "diverged", "graph_error", "model_error"):
            return RelaxResult(None, math.nan, False, steps, dt, reason)
        try:
            final = AseAtomsAdaptor.get_structure(atoms)
            energy = float(atoms.get_potential_energy()) / n
        except Exception:  # noqa: BLE001
            return RelaxResult(None, math.nan, False, steps, dt, "model_error")
        return RelaxResult(final, energy, converged, steps, dt, None if converged else reason)

    def relax_many(self, structures: list[Structure | None]) -> list[RelaxResult]:
        return [self.relax(s) for s in structures]


def formation_energies(structures: list[Structure | None], model: str = DEFAULT_EFORM) -> np.ndarray:
    """Predicted formation energy per atom (eV/atom) of each structure (NaN where none / refused)."""
    from hgfn_jax.models.matgl import get_property_model

    out = np.full(len(structures), np.nan)
    idx = [i for i, s in enumerate(structures) if s is not None]
    if idx:
        values, ok = get_property_model(model).predict([structures[i] for i in idx])
        out[idx] = np.where(ok, values, np.nan)
    return out


def match(a: Structure | None, b: Structure | None, convention: str = "chgflownet") -> float | None:
    """RMS displacement of a match between ``a`` and ``b`` under ``convention``'s tolerances, else None."""
    if a is None or b is None:
        return None
    ltol, stol, angle_tol = TOLERANCES[convention]
    try:
        rms = StructureMatcher(ltol=ltol, stol=stol, angle_tol=angle_tol).get_rms_dist(a, b)
    except Exception:  # noqa: BLE001
        return None
    return None if rms is None else float(rms[0])


def relaxation_metrics(generated: list[Structure | None], results: list[RelaxResult],
                       conventions=("chgflownet", "pgcgm")) -> dict:
    """Match rate (over ALL samples) and mean RMS (over matches) per convention; failures by reason."""
    n = max(len(generated), 1)
    out: dict = {"n": len(generated), "relaxed": sum(r.structure is not None for r in results) / n,
                 "converged": sum(r.converged for r in results) / n,
                 "failures": {}, "steps_mean": float(np.mean([r.steps for r in results])) if results else 0.0,
                 "seconds_total": float(sum(r.seconds for r in results))}
    for r in results:
        if r.reason:
            out["failures"][r.reason] = out["failures"].get(r.reason, 0) + 1
    for conv in conventions:
        rms = [match(g, r.structure, conv) for g, r in zip(generated, results, strict=True)]
        ok = [x for x in rms if x is not None]
        out[f"match_rate_{conv}"] = len(ok) / n
        out[f"rms_{conv}"] = float(np.mean(ok)) if ok else float("nan")
    return out
