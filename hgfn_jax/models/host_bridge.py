"""JAX host-callback bridge to the matgl property models: ``fn(crystal) -> (value, valid)``, jit/vmap-safe.

``make_property_fn(model_name, ...)`` returns a :class:`PropertyBridge`. Calling it on a :class:`Crystal`
inside ``jax.jit`` / ``jax.vmap`` issues ONE ``jax.pure_callback`` (``vmap_method="broadcast_all"``): a
vmapped call hands the host the whole batch at once, and the model runs batched there. It also accepts a
batched crystal directly (leading dims on every field) and returns values of that leading shape.

Output conventions (per crystal):

- ``value`` float32: the model prediction in its units (eV/atom for formation energy and the potential, eV for
  the band gap), clamped to ``clamp`` (papers' treatment of energies: [-10, 10] eV/atom), or ``invalid_value``
  (default ``clamp[1]``, the worst energy) when ``valid`` is False. Always finite.
- ``valid`` bool: the structure was evaluated and the output was finite.

Invalid structures never raise (a training step must not crash). Reasons, checked on the host in this order
(first match wins) and counted by :meth:`PropertyBridge.stats`:

=======================  =====================================================================================
``overflow``             the crystal's ``overflow`` flag (sites beyond the padding are missing)
``empty``                no real site
``too_many_sites``       more real sites than ``max_sites``
``nonfinite_input``      NaN/inf lattice parameters or fractional coordinates of a real site
``invalid_species``      a real site whose species is not Z in 1..118
``degenerate_lattice``   length <= 0, angle outside (0, 180), impossible angle triple or V/(abc) < 1e-3
``too_dense``            volume per atom below ``min_volume_per_atom`` (A^3)
``huge_cell``            a lattice length above ``max_length`` (A), or a neighbour search whose grid would have
                         more than ``max_search_cells`` cells (the cell's bounding box over the smaller of
                         ``min_distance`` and the model cutoff): such cells (1e3-1e6 A) make pymatgen / matgl ask for
                         gigabytes to terabytes; screened before any graph is built
``conversion_error``     ``hgfn_jax.crystal.convert.to_structure`` refused it for another reason
``overlapping_atoms``    two sites (periodic images included) closer than ``min_distance`` (A)
model reasons            see ``hgfn_jax.models.matgl.REASONS`` (unsupported element, no bonds, ...)
``internal_error``       anything unexpected on the host while checking or evaluating ONE structure (logged)
=======================  =====================================================================================

Isolation: a structure's value never depends on its batch mates' validity. Input checks run per structure
(an unexpected error there marks that structure only), and when a batched model call fails as a whole the
structures are evaluated one at a time, so each gets its own value or its own reason. (Valid structures do go
through the model in batches: batched and one-at-a-time matgl energies differ by float summation order only,
<= 1.4e-6 eV/atom for MEGNet and <= 4.8e-7 eV/atom for M3GNet in our measurements.)
"""

from __future__ import annotations

import collections
import logging
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal.convert import to_structure
from hgfn_jax.crystal.lattice import check_lattice
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.models.matgl import REASONS as MODEL_REASONS
from hgfn_jax.models.matgl import get_property_model

logger = logging.getLogger(__name__)

INPUT_REASONS: dict[str, str] = {
    "overflow": "the crystal overflowed its padding",
    "empty": "no real site",
    "too_many_sites": "more real sites than max_sites",
    "nonfinite_input": "NaN/inf lattice or coordinates",
    "invalid_species": "species outside 1..118 at a real site",
    "degenerate_lattice": "unusable lattice parameters",
    "too_dense": "volume per atom below min_volume_per_atom",
    "huge_cell": "lattice length above max_length or a neighbour-search grid above max_search_cells",
    "conversion_error": "to_structure raised",
    "overlapping_atoms": "two sites closer than min_distance",
    "internal_error": "unexpected host-side error",
}
REASONS: dict[str, str] = {**INPUT_REASONS, **MODEL_REASONS}


class PropertyBridge:
    """Callable ``(crystal) -> (value float32, valid bool)`` backed by a matgl :class:`PropertyModel`.

    Thread-safe host-side counters (``stats()``) record host calls, structures evaluated, valid/failed counts,
    failures by reason and how many valid values were clamped.
    """

    def __init__(
        self,
        model_name: str,
        *,
        clamp: tuple[float, float] | None = (-10.0, 10.0),
        invalid_value: float | None = None,
        min_distance: float = 0.5,
        max_sites: int = 256,
        min_volume_per_atom: float = 2.0,
        fidelity: int = 0,
        model_dir: str | Path | None = None,
        batch_size: int | None = None,
        max_length: float = 1000.0,
        max_search_cells: float = 1e7,
    ):
        if clamp is not None:
            lo, hi = float(clamp[0]), float(clamp[1])
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"clamp must be a finite (low, high) with low < high, got {clamp}")
            self.clamp: tuple[float, float] | None = (lo, hi)
        else:
            self.clamp = None
        if invalid_value is None:
            if self.clamp is None:
                raise ValueError("invalid_value is required when clamp is None")
            invalid_value = self.clamp[1]
        if not np.isfinite(invalid_value):
            raise ValueError(f"invalid_value must be finite, got {invalid_value}")
        if min_distance < 0 or max_sites < 1 or min_volume_per_atom < 0:
            raise ValueError(
                f"need min_distance >= 0, max_sites >= 1, min_volume_per_atom >= 0; got {min_distance}, "
                f"{max_sites}, {min_volume_per_atom}"
            )
        self.model_name = model_name
        self.invalid_value = float(invalid_value)
        self.min_distance = float(min_distance)
        self.max_sites = int(max_sites)
        self.min_volume_per_atom = float(min_volume_per_atom)
        if not (max_length > 0 and max_search_cells > 0):
            raise ValueError(f"need max_length > 0 and max_search_cells > 0, got {max_length}, {max_search_cells}")
        self.max_length = float(max_length)
        self.max_search_cells = float(max_search_cells)
        # Loaded eagerly: a missing model or an incompatible matgl fails here, not inside a jitted step.
        self.model = get_property_model(model_name, model_dir, fidelity=fidelity, batch_size=batch_size)
        self.units = self.model.units
        cutoff = float(getattr(self.model, "cutoff", 5.0))
        # the finest neighbour search run on a structure: the overlap check (min_distance) or the model graph
        self._search_radius = min(self.min_distance, cutoff) if self.min_distance > 0 else cutoff
        self._lock = threading.Lock()
        self.reset_stats()

    # -- statistics ----------------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        with self._lock:
            self._host_calls = 0
            self._evaluated = 0
            self._valid = 0
            self._clamped = 0
            self._failures: collections.Counter[str] = collections.Counter()

    def stats(self) -> dict:
        """Counters since the last reset: ``{host_calls, evaluated, valid, failed, clamped, failures}``."""
        with self._lock:
            return {
                "host_calls": self._host_calls,
                "evaluated": self._evaluated,
                "valid": self._valid,
                "failed": self._evaluated - self._valid,
                "clamped": self._clamped,
                "failures": dict(self._failures),
            }

    # -- host side -------------------------------------------------------------------------------------------
    def _input_reason(self, lattice, frac, species, mask, overflow) -> str | object:
        """A reason string, or the pymatgen Structure if the crystal passed every input check."""
        if bool(overflow):
            return "overflow"
        n = int(mask.sum())
        if n == 0:
            return "empty"
        if n > self.max_sites:
            return "too_many_sites"
        if not (np.all(np.isfinite(lattice)) and np.all(np.isfinite(frac[mask]))):
            return "nonfinite_input"
        z = species[mask]
        if np.any((z < 1) | (z > 118)):
            return "invalid_species"
        try:
            params = check_lattice(lattice)
        except ValueError:
            return "degenerate_lattice"
        ca, cb, cg = np.cos(np.deg2rad(params[3:]))
        volume = (
            params[0] * params[1] * params[2] * np.sqrt(1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg)
        )
        if volume / n < self.min_volume_per_atom:
            return "too_dense"
        if float(np.max(params[:3])) > self.max_length or self._search_cells(params) > self.max_search_cells:
            return "huge_cell"
        try:
            structure = to_structure(Crystal(lattice, frac, species, mask, np.int32(0), np.bool_(False)))
        except ValueError:
            return "conversion_error"
        if self.min_distance > 0:
            centers, _, _, dists = structure.get_neighbor_list(self.min_distance, exclude_self=True)
            if len(centers) and float(np.min(dists)) < self.min_distance:
                return "overlapping_atoms"
        return structure

    def _search_cells(self, params: np.ndarray) -> float:
        """Cells of a neighbour-search grid of spacing ``_search_radius`` over the lattice's cartesian bounding
        box (padded by the radius): an upper estimate of what pymatgen's / matgl's cell lists allocate."""
        from pymatgen.core import Lattice

        m = Lattice.from_parameters(*(float(x) for x in params)).matrix
        r = self._search_radius
        extent = np.abs(m).sum(axis=0) + 2.0 * r
        return float(np.prod(np.ceil(extent / r)))

    def _checked(self, lattice, frac, species, mask, overflow) -> str | object:
        """``_input_reason`` that never raises: an unexpected error marks this one structure."""
        try:
            return self._input_reason(lattice, frac, species, mask, overflow)
        except Exception:  # noqa: BLE001 - one structure's surprise must not reach its batch mates
            logger.exception("property bridge: unexpected error checking one structure; marking it invalid")
            return "internal_error"

    def _predict(self, structures: list) -> tuple[np.ndarray, list]:
        """Model values and reasons for structures that passed the input checks. If the batched call fails as
        a whole, each structure is evaluated alone, so a failure stays with the structure that caused it."""
        try:
            vals, _, reasons = self.model.predict_with_reasons(structures)
            return np.asarray(vals, np.float64), list(reasons)
        except Exception:  # noqa: BLE001
            if len(structures) == 1:
                logger.exception("property bridge: model failed on one structure; marking it invalid")
                return np.full(1, np.nan), ["internal_error"]
            logger.warning("property bridge: batched model call failed; evaluating %d structures one at a time",
                           len(structures), exc_info=True)
        vals, reasons = np.full(len(structures), np.nan), []
        for j, s in enumerate(structures):
            v, r = self._predict([s])
            vals[j] = v[0]
            reasons.append(r[0])
        return vals, reasons

    def evaluate_arrays(self, lattice, frac, species, mask, overflow) -> tuple[np.ndarray, np.ndarray, list]:
        """Host evaluation of a flat batch: ``lattice [B, 6], frac [B, N, 3], species [B, N], mask [B, N],
        overflow [B]`` -> ``(values float32 [B], valid bool [B], reasons [B] str | None)``. Never raises."""
        lattice = np.asarray(lattice, np.float64)
        b = lattice.shape[0]
        try:
            frac = np.asarray(frac, np.float64)
            species = np.asarray(species, np.int64)
            mask = np.asarray(mask, bool)
            overflow = np.asarray(overflow, bool)
            reasons: list[str | None] = [None] * b
            structures, idx = [], []
            for i in range(b):
                res = self._checked(lattice[i], frac[i], species[i], mask[i], overflow[i])
                if isinstance(res, str):
                    reasons[i] = res
                else:
                    structures.append(res)
                    idx.append(i)
            raw = np.full(b, np.nan)
            if structures:
                vals, model_reasons = self._predict(structures)
                for j, i in enumerate(idx):
                    raw[i] = vals[j]
                    reasons[i] = model_reasons[j]
        except Exception:  # noqa: BLE001 - the training loop must never see a host exception
            logger.exception(
                "property bridge: unexpected host-side error; marking the call's structures invalid"
            )
            raw, reasons = np.full(b, np.nan), ["internal_error"] * b
        valid = np.array([r is None for r in reasons], dtype=bool) & np.isfinite(raw)
        reasons = [r if (r is not None or valid[i]) else "nonfinite_output" for i, r in enumerate(reasons)]
        values = np.where(valid, raw, self.invalid_value)
        n_clamped = 0
        if self.clamp is not None:
            clipped = np.clip(values, *self.clamp)
            n_clamped = int(np.sum(valid & (clipped != values)))
            values = np.where(valid, clipped, self.invalid_value)
        with self._lock:
            self._evaluated += b
            self._valid += int(valid.sum())
            self._clamped += n_clamped
            self._failures.update(r for r in reasons if r is not None)
        return values.astype(np.float32), valid, reasons

    def _host(self, lattice, frac, species, mask, overflow):
        lead = np.shape(lattice)[:-1]
        n = np.shape(frac)[-2]
        with self._lock:
            self._host_calls += 1
        values, valid, _ = self.evaluate_arrays(
            np.reshape(lattice, (-1, 6)),
            np.reshape(frac, (-1, n, 3)),
            np.reshape(species, (-1, n)),
            np.reshape(mask, (-1, n)),
            np.reshape(overflow, (-1,)),
        )
        return values.reshape(lead), valid.reshape(lead)

    # -- JAX side --------------------------------------------------------------------------------------------
    def __call__(self, crystal: Crystal) -> tuple[jnp.ndarray, jnp.ndarray]:
        """``(value float32, valid bool)`` with the crystal's leading shape (``[]`` for one crystal)."""
        lead = jnp.shape(crystal.lattice)[:-1]
        out = (jax.ShapeDtypeStruct(lead, jnp.float32), jax.ShapeDtypeStruct(lead, jnp.bool_))
        return jax.pure_callback(
            self._host,
            out,
            jnp.asarray(crystal.lattice, jnp.float32),
            jnp.asarray(crystal.frac, jnp.float32),
            jnp.asarray(crystal.species, jnp.int32),
            jnp.asarray(crystal.mask, jnp.bool_),
            jnp.asarray(crystal.overflow, jnp.bool_),
            vmap_method="broadcast_all",
        )


def make_property_fn(
    model_name: str,
    clamp: tuple[float, float] | None = (-10.0, 10.0),
    invalid_value: float | None = None,
    min_distance: float = 0.5,
    max_sites: int = 256,
    min_volume_per_atom: float = 2.0,
    fidelity: int = 0,
    model_dir: str | Path | None = None,
    batch_size: int | None = None,
    max_length: float = 1000.0,
    max_search_cells: float = 1e7,
) -> PropertyBridge:
    """The bridge ``fn(crystal) -> (value [] float32, valid [] bool)``; ``fn.stats()`` gives the counters.

    ``model_name``: a key of ``hgfn_jax.models.matgl.MODEL_SPECS``. ``invalid_value`` defaults to
    ``clamp[1]``. ``fidelity`` selects the band-gap fidelity (0 = PBE). See the module docstring.
    """
    return PropertyBridge(
        model_name,
        clamp=clamp,
        invalid_value=invalid_value,
        min_distance=min_distance,
        max_sites=max_sites,
        min_volume_per_atom=min_volume_per_atom,
        fidelity=fidelity,
        model_dir=model_dir,
        batch_size=batch_size,
        max_length=max_length,
        max_search_cells=max_search_cells,
    )
