"""Pretrained matgl property models (formation energy, band gap, M3GNet potential) giving the right numbers.

Models (folder names in ``hgfn_jax.paths.model_dir()``, default ``../shared/models``):

================================  ==========================================  ========  ======================
name                              predicts                                    units     batched on the host
================================  ==========================================  ========  ======================
``M3GNet-MP-2018.6.1-Eform``      formation energy per atom (the papers')     eV/atom   per structure
``MEGNet-MP-2018.6.1-Eform``      formation energy per atom (faster)          eV/atom   graph batches
``MEGNet-MP-2019.4.1-BandGap-mfi`` band gap, fidelity 0 = PBE (1 GLLB-SC,      eV        graph batches
                                  2 HSE, 3 SCAN)
``M3GNet-MP-2021.2.8-PES``        potential energy per atom (+ forces)        eV/atom   per structure
================================  ==========================================  ========  ======================

All are loaded through :mod:`hgfn_jax.models.matgl_fix` (stock matgl 4.1.2 gives wrong numbers for these
checkpoints; see there). A models folder that is set (``model_dir``, ``HGFN_MODEL_DIR``, or the default
``../shared/models`` existing) but lacks the model is an immediate error (:func:`hgfn_jax.paths.model_folder`), never
a hub lookup. Only with no local models folder at all is the checkpoint fetched by name through matgl's resolver
(Hugging Face hub, ``ModelSpec.hub_name``; not when ``HF_HUB_OFFLINE`` is set), and it must pass the same
weights fingerprint check.

Accuracy against the DFT labels of the CGCNN data set (120 random cells with <= 40 sites, seed 0; see
``tests/models/test_matgl_models.py``): M3GNet Eform MAE 0.018 eV/atom, MEGNet Eform 0.018 eV/atom, band gap
(PBE fidelity) 0.63 eV. The band-gap checkpoint is clearly less reliable than its stated 0.31 eV validation
MAE: metals 0.22 eV, but it badly underestimates some insulators (MgO 0.41 eV against ~4.5 eV DFT, Na2GeO3
~0 eV against 3.0 eV) while CsCl (4.83 eV against 5.0-5.5 eV) is fine. matgl_fix improves it (stock: 0.85
eV), but another, unidentified incompatibility may remain; treat band-gap rewards with care.

:class:`PropertyModel` never raises for a bad structure: ``predict`` returns ``(values, ok)`` with NaN and
``ok=False`` for structures it cannot evaluate, and ``predict_with_reasons`` also says why (``REASONS``).
Torch runs on the CPU with ``HGFN_TORCH_THREADS`` intra-op threads (default 1: on the shared 2-core machine
two threads were 10-30x slower under load than one), set on first load.
Loaded models are cached per process.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Structure

from hgfn_jax import paths
from hgfn_jax.models import matgl_fix

logger = logging.getLogger(__name__)

THREADS_ENV = "HGFN_TORCH_THREADS"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Static facts about a supported checkpoint."""

    kind: str  # "formation_energy" | "band_gap" | "potential"
    units: str
    batch_size: int  # structures per forward pass on the host (1 = one graph at a time)
    hub_name: str | None  # name on the matgl model hub (materialyze org), for the by-name fallback


MODEL_SPECS: dict[str, ModelSpec] = {
    # Host batch sizes: measured on the loaded 2-core CPU with 1 torch thread, MEGNet ~3x faster per structure
    # in batches of 32 than one by one; M3GNet gains less (~1.5x for small cells, noisy), so a moderate 8.
    "M3GNet-MP-2018.6.1-Eform": ModelSpec("formation_energy", "eV/atom", 8, "M3GNet-Eform-MP-2018.6.1"),
    "MEGNet-MP-2018.6.1-Eform": ModelSpec("formation_energy", "eV/atom", 32, "MEGNet-Eform-MP-2018.6.1"),
    "MEGNet-MP-2019.4.1-BandGap-mfi": ModelSpec("band_gap", "eV", 32, "MEGNet-BandGap-mfi-MP-2019.4.1"),
    "M3GNet-MP-2021.2.8-PES": ModelSpec("potential", "eV/atom", 1, None),
}

#: Why a structure got no value (keys of the failure counts).
REASONS: dict[str, str] = {
    "unsupported_element": "an element the model has no embedding for",
    "graph_error": "building the neighbour graph raised",
    "no_bonds": "no neighbour within the model cutoff (the models give NaN or garbage for edge-less graphs)",
    "too_many_neighbors": "mean neighbours per atom above the limit (memory guard for dense/collapsed cells)",
    "model_error": "the model forward raised",
    "nonfinite_output": "the model returned NaN/inf",
}


def configure_torch_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default: ``HGFN_TORCH_THREADS``, else 1)."""
    if n is None:
        n = int(os.environ.get(THREADS_ENV, "0")) or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _resolve_files(name: str, model_dir: str | Path | None) -> Path:
    folder = paths.model_folder(name, model_dir)  # raises at once when a local folder is set but lacks it
    if folder is not None:
        return folder
    # No local models folder is configured at all: fetch by name (needs network; skipped when HF_HUB_OFFLINE)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise paths.MissingResourceError(
            f"matgl model {name!r} not found: no local models folder ({paths.model_dir()}) and HF_HUB_OFFLINE "
            f"is set. Set HGFN_MODEL_DIR to the folder that holds {name}/ (default ../shared/models)."
        )
    hub = MODEL_SPECS[name].hub_name
    errors = []
    for candidate in [c for c in (hub, name) if c]:
        try:  # matgl's own resolver: local path, then the hub (needs network)
            from matgl.utils.io import _get_file_paths

            files = _get_file_paths(Path(candidate), str_path=candidate)
            return Path(files["model.json"]).parent
        except Exception as exc:  # noqa: BLE001 - any failure means "not available", reported below
            errors.append(f"{candidate}: {type(exc).__name__}: {exc}")
    raise paths.MissingResourceError(
        f"matgl model {name!r} not found: no local models folder ({paths.model_dir()}) and fetching it by name "
        f"failed ({'; '.join(errors)}). "
        f"Set HGFN_MODEL_DIR to the folder that holds {name}/ (default ../shared/models), or pass model_dir."
    )


@functools.cache
def _load_cached(name: str, folder: str) -> torch.nn.Module:
    configure_torch_threads()
    model = matgl_fix.load_fixed_checkpoint(folder, name=name)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_model(name: str, model_dir: str | Path | None = None) -> torch.nn.Module:
    """The fixed torch model ``name`` (see ``MODEL_SPECS``), cached per process.

    Reads ``<model_dir or hgfn_jax.paths.model_dir()>/<name>``; falls back to fetching by name. Raises
    ``KeyError`` for an unknown name, :class:`hgfn_jax.paths.MissingResourceError` if it cannot be found and
    :class:`matgl_fix.MatglCompatibilityError` if matgl or the weights are not what the fixes expect.
    """
    if name not in MODEL_SPECS:
        raise KeyError(f"unknown matgl model {name!r}; supported: {sorted(MODEL_SPECS)}")
    return _load_cached(name, str(_resolve_files(name, model_dir).resolve()))


class PropertyModel:
    """Batched, failure-tolerant prediction of one scalar per structure with a fixed matgl model.

    ``predict(structures) -> (values float64 [B], ok bool [B])``: formation energy (eV/atom), band gap (eV)
    or, for the potential, energy per atom (eV/atom). Structures it cannot evaluate get NaN, ``ok=False``.
    """

    def __init__(
        self,
        name: str,
        model_dir: str | Path | None = None,
        *,
        fidelity: int = 0,
        batch_size: int | None = None,
        max_mean_neighbors: float = 250.0,
    ):
        self.name = name
        self.model = load_model(name, model_dir)  # KeyError for an unknown name
        self.spec = MODEL_SPECS[name]
        self.units = self.spec.units
        self.kind = self.spec.kind
        self.batch_size = self.spec.batch_size if batch_size is None else int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.max_mean_neighbors = float(max_mean_neighbors)
        inner = self.model.model  # TransformedTargetModel.model or Potential.model
        self.cutoff = float(inner.cutoff)
        self.element_types: tuple[str, ...] = tuple(inner.element_types)
        self._supported = frozenset(self.element_types)
        self.is_megnet = type(inner).__name__ == "MEGNet"
        if self.kind == "band_gap":
            if fidelity not in (0, 1, 2, 3):
                raise ValueError(
                    f"band-gap fidelity must be 0 (PBE), 1 (GLLB-SC), 2 (HSE) or 3 (SCAN), got {fidelity}"
                )
        self.fidelity = int(fidelity)
        from matgl.ext.pymatgen import Structure2Graph

        self._converter = Structure2Graph(element_types=self.element_types, cutoff=self.cutoff)

    # -- graphs ----------------------------------------------------------------------------------------
    def _graph(self, structure: Structure):
        """(graph with pos/pbc_offshift, lattice [1,3,3], default state) or a failure reason string."""
        try:
            if not {site.specie.symbol for site in structure} <= self._supported:
                return "unsupported_element"
            g, lat, state = self._converter.get_graph(structure)
        except Exception:  # noqa: BLE001
            logger.debug("graph construction failed", exc_info=True)
            return "graph_error"
        n_edges, n_atoms = int(g.edge_index.shape[1]), len(structure)
        if n_edges == 0:
            return "no_bonds"
        if n_edges / n_atoms > self.max_mean_neighbors:
            return "too_many_neighbors"
        g.pbc_offshift = torch.matmul(g.pbc_offset, lat[0])
        g.pos = g.frac_coords @ lat[0]
        return g, lat, state

    def _state(self, default_states: list, n: int) -> torch.Tensor | None:
        if self.kind == "band_gap":
            return torch.full((n,), self.fidelity, dtype=torch.long)
        if self.is_megnet:  # Eform MEGNet: the converter's default state [0, 0] per graph
            return torch.as_tensor(np.stack(default_states), dtype=torch.float32)
        return None

    def _forward(self, graphs: list, default_states: list) -> np.ndarray:
        from torch_geometric.data import Batch

        with torch.no_grad():
            if len(graphs) == 1:
                state = self._state(default_states, 1)
                if state is not None and self.is_megnet and self.kind != "band_gap":
                    state = state[0]
                out = self.model(g=graphs[0], state_attr=state)
            else:
                batch = Batch.from_data_list(graphs)
                out = self.model(g=batch, state_attr=self._state(default_states, len(graphs)))
        return np.atleast_1d(out.detach().cpu().numpy().astype(np.float64)).reshape(len(graphs))

    # -- public API --------------------------------------------------------------------------------------
    def predict_with_reasons(self, structures: Sequence[Structure]) -> tuple[np.ndarray, np.ndarray, list]:
        """``(values [B] float64, ok [B] bool, reasons [B] str | None)``; never raises for a bad structure."""
        if self.kind == "potential":
            return self._predict_potential(structures)
        n = len(structures)
        values = np.full(n, np.nan)
        reasons: list[str | None] = [None] * n
        todo: list[tuple[int, object, object]] = []
        for i, s in enumerate(structures):
            res = self._graph(s)
            if isinstance(res, str):
                reasons[i] = res
            else:
                todo.append((i, res[0], res[2]))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            try:
                out = self._forward([c[1] for c in chunk], [c[2] for c in chunk])
                for (i, _, _), v in zip(chunk, out, strict=True):
                    values[i] = v
            except Exception:  # noqa: BLE001 - isolate the failing structure(s)
                logger.debug("batched forward failed; retrying one by one", exc_info=True)
                for i, g, st in chunk:
                    try:
                        values[i] = self._forward([g], [st])[0]
                    except Exception:  # noqa: BLE001
                        reasons[i] = "model_error"
        for i in range(n):
            if reasons[i] is None and not np.isfinite(values[i]):
                reasons[i] = "nonfinite_output"
        ok = np.array([r is None for r in reasons], dtype=bool)
        values[~ok] = np.nan
        return values, ok, reasons

    def predict(self, structures: Sequence[Structure]) -> tuple[np.ndarray, np.ndarray]:
        """``(values [B] float64, ok [B] bool)``; NaN where ``ok`` is False."""
        values, ok, _ = self.predict_with_reasons(structures)
        return values, ok

    # -- potential -----------------------------------------------------------------------------------------
    def energy_and_forces(self, structure: Structure) -> tuple[float, np.ndarray]:
        """Potential only: (energy per atom in eV/atom, forces [N, 3] in eV/A); ValueError for a bad one."""
        if self.kind != "potential":
            raise TypeError(f"{self.name} is not a potential")
        res = self._graph(structure)
        if isinstance(res, str):
            raise ValueError(f"cannot evaluate structure: {res} ({REASONS[res]})")
        return self._energy_forces(res[0], res[1], len(structure))

    def _energy_forces(self, g, lat, n_atoms: int) -> tuple[float, np.ndarray]:
        energy, forces = self.model(g, lat, None)[:2]
        return float(energy.detach()) / n_atoms, forces.detach().cpu().numpy().astype(np.float64)

    def _predict_potential(self, structures: Sequence[Structure]) -> tuple[np.ndarray, np.ndarray, list]:
        n = len(structures)
        values = np.full(n, np.nan)
        reasons: list[str | None] = [None] * n
        for i, s in enumerate(structures):
            res = self._graph(s)
            if isinstance(res, str):
                reasons[i] = res
                continue
            try:
                values[i] = self._energy_forces(res[0], res[1], len(s))[0]
            except Exception:  # noqa: BLE001
                reasons[i] = "model_error"
                continue
            if not np.isfinite(values[i]):
                reasons[i] = "nonfinite_output"
        ok = np.array([r is None for r in reasons], dtype=bool)
        values[~ok] = np.nan
        return values, ok, reasons


@functools.cache
def _property_model_cached(name: str, model_dir: str | None, fidelity: int, batch_size: int | None):
    return PropertyModel(name, model_dir, fidelity=fidelity, batch_size=batch_size)


def get_property_model(
    name: str, model_dir: str | Path | None = None, *, fidelity: int = 0, batch_size: int | None = None
) -> PropertyModel:
    """A cached :class:`PropertyModel` (one per process and argument set)."""
    return _property_model_cached(name, None if model_dir is None else str(model_dir), fidelity, batch_size)
