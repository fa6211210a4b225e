"""Relaxation with a universal potential, and match rate / RMS displacement against the relaxed structure.

Potential: matgl ``M3GNet-MP-2021.2.8-PES`` (default), loaded through :func:`hgfn_jax.models.matgl.load_model`
(the fixed checkpoint; stock matgl 4.1.2 gives wrong forces), or ``TensorNet-MatPES-PBE-v2025.1-PES`` (PyG-native,
loaded with stock ``matgl.load_model`` from the models folder; checked in tests/metrics/test_relax.py). ASE FIRE on
positions and cell (``FrechetCellFilter``), ``fmax`` 0.1 eV/A as matgl's ``Relaxer``.

Batched: all structures in flight share ONE graph batch per FIRE step (``Batch.from_data_list``; energies,
forces and per-graph stresses from one forward/backward), each structure keeps its own ASE ``FIRE`` state and
gets the batch's results through a ``SinglePointCalculator``; a structure that converges or fails leaves the
batch at once and the next one in the queue takes its place (continuous batching, ``batch_size`` in flight).
Why batched and not a process pool: measured on this 2-core CPU (M3GNet PES, data-set cells <= 40 sites, mean 17
sites, energy+forces+stress, 1 torch thread, other agents loading the CPU): one structure at a time 35 ms per
structure-step; a graph batch of 32, 20 ms on ONE core (the per-call Python/autograd overhead is shared); a pool
of 2 single-structure workers, 22 ms wall per structure-step using BOTH cores (probe scripts, same 64 cells), so
the batch is ~2x more work per core, and on this machine the other agents already hold ~1-1.5 cores, which a
second worker would only compete with. The batch also needs no per-process model copy (~1 s load and 0.3 GB each).

One pathological cell never stalls or crashes the batch: inputs are checked first (``invalid_cell``: NaN/inf or
degenerate lattice or coordinates; ``overlapping_atoms``: two atoms closer than 0.1 A; ``too_dense``: more than
``max_mean_neighbors`` edges per atom, which would blow the batch up), a per-structure step cap and time limit
(the batch step's time is attributed to its members by their share of the batch's edges, so a big cell pays for
itself), ``nonfinite`` / ``diverged`` checks after every step, and a forward that raises is retried structure by
structure so the culprit alone is marked ``model_error``.

Every structure gets a :class:`RelaxResult`; failures are counted by reason (``REASONS``) and stay in every
denominator: a structure that could not be relaxed does not match. A run that hits the step cap or the time limit
keeps its last structure (``converged=False``) and is matched like the others.

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
TENSORNET_POTENTIAL = "TensorNet-MatPES-PBE-v2025.1-PES"
DEFAULT_EFORM = "M3GNet-MP-2018.6.1-Eform"
#: ``relaxer`` setting of the suite -> potential; ``m3gnet_jax``: the same M3GNet PES and algorithm in JAX
#: (:class:`hgfn_jax.metrics.relax_jax.JaxRelaxer`, same records).
RELAXERS = {"m3gnet": DEFAULT_POTENTIAL, "tensornet": TENSORNET_POTENTIAL, "m3gnet_jax": DEFAULT_POTENTIAL}

#: (ltol, stol, angle_tol) of each convention.
TOLERANCES = {
    "chgflownet": (1.0, 1.0, 10.0),  # papers 000 (sec. 5.3) and 002: "10 deg, 1.0 length, 1.0 site"
    "pgcgm": (0.2, 0.2, 0.5),  # PGCGM Table 2
    "cdvae": (0.3, 0.5, 10.0),  # CDVAE reconstruction match (RecEval)
    "pymatgen_default": (0.2, 0.3, 5.0),
}

REASONS = {
    "no_structure": "the sample has no usable structure (unreadable CIF, no positions)",
    "invalid_cell": "NaN/inf or degenerate lattice, or NaN/inf coordinates",
    "overlapping_atoms": "two atoms closer than 0.1 A (periodic images included)",
    "unsupported_element": "an element the potential has no embedding for",
    "too_dense": "more neighbours per atom than max_mean_neighbors (a collapsed cell)",
    "graph_error": "the potential could not build the neighbour graph",
    "model_error": "the potential raised",
    "nonfinite": "energy, forces or stress became NaN/inf",
    "diverged": "the cell exploded or collapsed (volume per atom outside [0.5, 500] A^3) or E < -50 eV/atom",
    "timeout": "the per-structure time limit was reached (the last structure is kept)",
    "step_cap": "the step cap was reached before fmax (the last structure is kept)",
}
#: Reasons that leave no relaxed structure.
HARD_FAILURES = frozenset(REASONS) - {"timeout", "step_cap"}
MIN_DISTANCE = 0.1  # A, below which atoms count as overlapping


@dataclasses.dataclass
class RelaxResult:
    structure: Structure | None  # relaxed (or last) structure; None on a hard failure
    energy_per_atom: float  # potential energy of ``structure`` (eV/atom), NaN on failure
    converged: bool
    steps: int
    seconds: float  # this structure's share of the compute
    reason: str | None  # key of REASONS, None when converged


def _fail(reason: str, steps: int = 0, seconds: float = 0.0) -> RelaxResult:
    return RelaxResult(None, math.nan, False, steps, seconds, reason)


def input_error(s: Structure | None) -> str | None:
    """Why ``s`` cannot be relaxed at all (a key of REASONS), or None."""
    if s is None or len(s) == 0:
        return "no_structure"
    m = np.asarray(s.lattice.matrix, float)
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s.frac_coords))) or abs(np.linalg.det(m)) < 1e-6:
        return "invalid_cell"
    if len(s) > 1:
        d = np.asarray(s.distance_matrix, float)
        if d[np.triu_indices(len(s), 1)].min() < MIN_DISTANCE:
            return "overlapping_atoms"
    return None


def load_potential(name: str, model_dir=None):
    """matgl ``Potential`` ``name``: the project's fixed loader where it knows the model, else stock matgl from
    the models folder (TensorNet-MatPES is PyG-native, so matgl 4.1.2 reads it as trained)."""
    from hgfn_jax.models.matgl import MODEL_SPECS, configure_torch_threads, load_model

    configure_torch_threads()
    if name in MODEL_SPECS:
        return load_model(name, model_dir)
    import matgl

    from hgfn_jax import paths

    folder = paths.model_folder(name, model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = matgl.load_model(folder if folder is not None else name)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class _Run:
    """One structure in flight: ASE atoms + cell filter + its own FIRE state."""

    def __init__(self, index: int, s: Structure, relax_cell: bool):
        from ase.filters import FrechetCellFilter
        from ase.optimize import FIRE
        from pymatgen.io.ase import AseAtomsAdaptor

        self.index = index
        self.atoms = AseAtomsAdaptor.get_atoms(s)
        self.n = len(self.atoms)
        self.obj = FrechetCellFilter(self.atoms) if relax_cell else self.atoms
        self.opt = FIRE(self.obj, logfile=None)
        self.steps, self.seconds, self.energy = 0, 0.0, math.nan


class Relaxer:
    """Failure-tolerant, batched relaxation of pymatgen Structures with a fixed matgl potential."""

    def __init__(self, potential: str = DEFAULT_POTENTIAL, fmax: float = 0.1, max_steps: int = 500,
                 time_limit_s: float = 60.0, relax_cell: bool = True, model_dir=None, batch_size: int = 32,
                 max_mean_neighbors: float = 250.0):
        from matgl.ext.ase import Atoms2Graph

        self.name = potential
        self.model = load_potential(potential, model_dir)
        inner = getattr(self.model, "model", self.model)
        self.elements = frozenset(getattr(inner, "element_types", ()))
        self.converter = Atoms2Graph(element_types=tuple(inner.element_types), cutoff=float(inner.cutoff))
        self.fmax, self.max_steps, self.time_limit_s = float(fmax), int(max_steps), float(time_limit_s)
        self.relax_cell, self.batch_size = bool(relax_cell), int(batch_size)
        self.max_mean_neighbors = float(max_mean_neighbors)

    def relax(self, s: Structure | None) -> RelaxResult:
        return self.relax_many([s])[0]

    # -- one batched evaluation -----------------------------------------------------------------------------
    def _graphs(self, runs: list[_Run]):
        """(graph, lattice) per run, or a failure reason string."""
        out = []
        for r in runs:
            try:
                g, lat, _ = self.converter.get_graph(r.atoms)
            except Exception:  # noqa: BLE001
                out.append("graph_error")
                continue
            out.append("too_dense" if g.edge_index.shape[1] > self.max_mean_neighbors * r.n else (g, lat))
        return out

    def _forward(self, graphs: list, lats: list):
        """(energies [B] eV, forces per graph [n_i, 3] eV/A, stresses [B, 3, 3] GPa) of one batch."""
        import torch
        from torch_geometric.data import Batch

        batch = graphs[0] if len(graphs) == 1 else Batch.from_data_list(graphs)
        e, f, s, _ = self.model(batch, torch.cat(lats) if len(lats) > 1 else lats[0], None)[:4]
        e = np.atleast_1d(e.detach().cpu().numpy().astype(np.float64))
        f = f.detach().cpu().numpy().astype(np.float64)
        s = s.detach().cpu().numpy().astype(np.float64).reshape(len(graphs), 3, 3)
        splits = np.cumsum([g.num_nodes for g in graphs])[:-1]
        return e, np.split(f, splits), s

    def _evaluate(self, runs: list[_Run]) -> list[str | None]:
        """Attach energy/forces/stress to each run's atoms; returns a failure reason (or None) per run."""
        from ase import units
        from ase.calculators.singlepoint import SinglePointCalculator

        t0 = time.perf_counter()
        reasons: list[str | None] = [None] * len(runs)
        built = self._graphs(runs)
        ok = [i for i, b in enumerate(built) if not isinstance(b, str)]
        for i, b in enumerate(built):
            if isinstance(b, str):
                reasons[i] = b
        values: dict[int, tuple] = {}
        if ok:
            try:
                e, f, s = self._forward([built[i][0] for i in ok], [built[i][1] for i in ok])
                values = {i: (e[j], f[j], s[j]) for j, i in enumerate(ok)}
            except Exception:  # noqa: BLE001 - isolate the culprit
                for i in ok:
                    try:
                        e, f, s = self._forward([built[i][0]], [built[i][1]])
                        values[i] = (e[0], f[0], s[0])
                    except Exception:  # noqa: BLE001
                        reasons[i] = "model_error"
        dt = time.perf_counter() - t0
        edges = np.array([b[0].edge_index.shape[1] if not isinstance(b, str) else 0 for b in built], float)
        share = edges / edges.sum() if edges.sum() > 0 else np.full(len(runs), 1.0 / len(runs))
        for i, r in enumerate(runs):
            r.seconds += dt * share[i]
            if i not in values:
                continue
            e, f, s = values[i]
            if not (math.isfinite(e) and np.all(np.isfinite(f)) and np.all(np.isfinite(s))):
                reasons[i] = "nonfinite"
                continue
            r.energy = e / r.n
            vpa = r.atoms.get_volume() / r.n
            if not 0.5 <= vpa <= 500.0 or r.energy < -50.0:
                reasons[i] = "diverged"
                continue
            r.atoms.calc = SinglePointCalculator(r.atoms, energy=e, free_energy=e, forces=f,
                                                 stress=s * units.GPa)  # GPa -> eV/A^3, ASE's sign
        return reasons

    def _finish(self, r: _Run, reason: str | None) -> RelaxResult:
        from pymatgen.io.ase import AseAtomsAdaptor

        if reason in HARD_FAILURES:
            return _fail(reason, r.steps, r.seconds)
        try:
            final = AseAtomsAdaptor.get_structure(r.atoms)
        except Exception:  # noqa: BLE001
            return _fail("model_error", r.steps, r.seconds)
        return RelaxResult(final, r.energy, reason is None, r.steps, r.seconds, reason)

    # -- the batch ---------------------------------------------------------------------------------------------
    def relax_many(self, structures: list[Structure | None]) -> list[RelaxResult]:
        """One :class:`RelaxResult` per input, in order; never raises for a bad structure."""
        results: list[RelaxResult | None] = [None] * len(structures)
        queue = []
        for i, s in enumerate(structures):
            err = input_error(s)
            if err is None and self.elements and not {el.symbol for el in s.composition.elements} <= self.elements:
                err = "unsupported_element"
            if err is not None:
                results[i] = _fail(err)
            else:
                queue.append(i)
        queue.reverse()
        active: list[_Run] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            while queue or active:
                while queue and len(active) < self.batch_size:
                    i = queue.pop()
                    try:
                        active.append(_Run(i, structures[i], self.relax_cell))
                    except Exception:  # noqa: BLE001
                        results[i] = _fail("invalid_cell")
                if not active:
                    break
                reasons = self._evaluate(active)
                still = []
                for r, reason in zip(active, reasons, strict=True):
                    forces = None
                    if reason is None:
                        forces = r.obj.get_forces()  # the filter's (logm of the cell: ~8 ms), computed once
                        fmax = float(np.sqrt((forces**2).sum(axis=1).max()))
                        if fmax < self.fmax:
                            results[r.index] = self._finish(r, None)
                            continue
                        if r.steps >= self.max_steps:
                            reason = "step_cap"
                        elif r.seconds > self.time_limit_s:
                            reason = "timeout"
                    if reason is not None:
                        results[r.index] = self._finish(r, reason)
                        continue
                    try:
                        r.opt.step(forces)
                        r.steps += 1
                        still.append(r)
                    except Exception:  # noqa: BLE001
                        results[r.index] = _fail("model_error", r.steps, r.seconds)
                active = still
        return results  # type: ignore[return-value]


def make_relaxer(relaxer: str = "m3gnet", **kwargs):
    """The relaxer of a suite setting (a key of ``RELAXERS``); ``kwargs`` as :class:`Relaxer`."""
    if relaxer not in RELAXERS:
        raise ValueError(f"unknown relaxer {relaxer!r}; choose one of {sorted(RELAXERS)}")
    if relaxer == "m3gnet_jax":
        from hgfn_jax.metrics.relax_jax import JaxRelaxer

        return JaxRelaxer(**kwargs)
    return Relaxer(RELAXERS[relaxer], **kwargs)


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
