"""Energy above the convex hull and S.U.N. (SHAFT App. 14, MatterGen, LeMat-GenBench).

The hull is made of the shared data set's DFT formation energies (36,737 Materials Project crystals, an older
MP release; :mod:`hgfn_jax.metrics.reference`) with every element's reference at 0 eV/atom (formation energies
are relative to the elemental references, so the elements are the hull's corners). It is a SUBSET of the
Materials Project: with fewer competing phases the hull lies higher than MP's, so energies above it are lower
(lower bounds of the values against full MP) and "stable" fractions are upper bounds.

A query (composition, formation energy per atom) is placed on the hull of its own chemical system: every data-set
entry whose elements are a subset of the query's, plus the elemental references (pymatgen ``PhaseDiagram``,
cached per system). ``e_above_hull`` may be negative (below the hull: a new ground state).

Thresholds: stable e_hull <= 0, metastable e_hull <= 0.1 eV/atom. S.U.N. (LeMat-GenBench) = stable AND unique
AND novel; M.S.U.N. = metastable AND unique AND novel (MatterGen's "S.U.N." uses the 0.1 eV/atom threshold:
compare MatterGen's numbers with ``msun``).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element

STABLE = 0.0  # eV/atom
METASTABLE = 0.1  # eV/atom


class HullReference:
    """Convex hulls of (composition, formation energy per atom) entries, per chemical system."""

    def __init__(self, formulas: Sequence[str], formation_energies: Sequence[float]):
        self._by_system: dict[frozenset, list[PDEntry]] = defaultdict(list)
        for f, e in zip(formulas, formation_energies, strict=True):
            if e is None or not math.isfinite(float(e)):
                continue
            comp = Composition(f)
            self._by_system[frozenset(el.symbol for el in comp.elements)].append(
                PDEntry(comp, float(e) * comp.num_atoms))
        self._pd = functools.lru_cache(maxsize=4096)(self._phase_diagram)
        self.n_entries = sum(len(v) for v in self._by_system.values())

    @classmethod
    def from_dataset(cls) -> HullReference:
        from hgfn_jax.metrics.reference import reference_table

        t = reference_table()
        return cls(t["formula"].tolist(), t["formation_energy_per_atom"].tolist())

    def entries(self, system: frozenset) -> list[PDEntry]:
        """Data entries whose elements are a subset of ``system`` plus an elemental reference at 0 per element."""
        out = [PDEntry(Composition(el), 0.0, name=f"{el} (reference)") for el in sorted(system)]
        els = sorted(system)
        for k in range(1, len(els) + 1):
            for sub in itertools.combinations(els, k):
                out.extend(self._by_system.get(frozenset(sub), ()))
        return out

    def _phase_diagram(self, system: frozenset) -> PhaseDiagram:
        return PhaseDiagram(self.entries(system), elements=[Element(e) for e in sorted(system)])

    def phase_diagram(self, comp: Composition) -> PhaseDiagram:
        return self._pd(frozenset(el.symbol for el in comp.elements))

    def e_above_hull(self, comp: Composition, formation_energy_per_atom: float) -> float:
        """Energy above the hull (eV/atom, negative below it); NaN for a missing energy or composition."""
        if comp is None or formation_energy_per_atom is None or not math.isfinite(float(formation_energy_per_atom)):
            return float("nan")
        comp = Composition(comp).element_composition
        if comp.num_atoms <= 0:
            return float("nan")
        pd = self.phase_diagram(comp)
        entry = PDEntry(comp, float(formation_energy_per_atom) * comp.num_atoms)
        return float(pd.get_e_above_hull(entry, allow_negative=True))

    def e_above_hull_many(self, comps: Sequence[Composition | None], energies: Sequence[float]) -> np.ndarray:
        out = np.full(len(comps), np.nan)
        for i, (c, e) in enumerate(zip(comps, energies, strict=True)):
            try:
                out[i] = self.e_above_hull(c, e)
            except Exception:  # noqa: BLE001 - a hull that cannot be built gives NaN, counted by the caller
                out[i] = np.nan
        return out


@functools.cache
def dataset_hull() -> HullReference:
    """The hull of the shared data set (built once per process)."""
    return HullReference.from_dataset()


def stability_metrics(e_hull: np.ndarray, unique: np.ndarray | None = None, novel: np.ndarray | None = None) -> dict:
    """Fractions over ALL samples (NaN e_hull, i.e. no energy, counts as unstable) and the S.U.N. rates."""
    e = np.asarray(e_hull, float)
    n = max(len(e), 1)
    ok = np.isfinite(e)
    stable = ok & (e <= STABLE)
    meta = ok & (e <= METASTABLE)
    out = {
        "n": int(len(e)),
        "e_hull_available": float(ok.sum() / n),
        "e_hull_mean": float(np.mean(e[ok])) if ok.any() else float("nan"),
        "e_hull_median": float(np.median(e[ok])) if ok.any() else float("nan"),
        "stable_frac": float(stable.sum() / n),
        "metastable_frac": float(meta.sum() / n),
    }
    if unique is not None and novel is not None:
        un = np.asarray(unique, bool) & np.asarray(novel, bool)
        out["sun"] = float((stable & un).sum() / n)
        out["msun"] = float((meta & un).sum() / n)
    return out
