"""The evaluation suite's relaxation in JAX: M3GNet-MP-2021.2.8-PES + batched FIRE (``relaxer="m3gnet_jax"``).

Same interface and records as :class:`hgfn_jax.metrics.relax.Relaxer` (``relax``, ``relax_many`` ->
:class:`~hgfn_jax.metrics.relax.RelaxResult` with the same failure reasons), same algorithm (ASE FIRE on the
FrechetCellFilter DOF, fmax 0.1 eV/A, step cap; :mod:`hgfn_jax.models.fire`), same potential
(:mod:`hgfn_jax.models.m3gnet_pes`, equal to the fixed host model to ~1e-5 eV/A). Differences:

- structures are relaxed in fixed-shape batches (``batch_size`` structures, sites padded to a multiple of
  ``site_bucket``; one compile per shape, cached per process): a batch runs until its slowest member stops
  (no refilling as on the host), finished members stay frozen;
- the per-structure time limit is not applied inside the compiled loop (the step cap is); ``seconds`` is the
  batch's wall time shared by the members' (steps + 1) x sites;
- statuses map to reasons: step cap -> ``step_cap``, non-finite energy/forces/stress -> ``nonfinite``, a graph
  over the capacities (more than 80 bonds within 5 A or 48 within 4 A at an atom) or beyond the periodic-image
  window -> ``graph_error`` (checked before relaxing too), cell exploded/collapsed -> ``diverged``.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np
from pymatgen.core import Lattice, Structure

from hgfn_jax.metrics.relax import HARD_FAILURES, RelaxResult, _fail, input_error

NAME = "M3GNet-MP-2021.2.8-PES (JAX)"
_REASONS = {2: "step_cap", 3: "nonfinite", 4: "graph_error", 5: "diverged"}


@functools.cache
def _compiled(fmax: float, max_steps: int):
    import jax

    from hgfn_jax.models import fire

    return jax.jit(functools.partial(fire.relax, fmax=fmax, max_steps=max_steps))


class JaxRelaxer:
    """Failure-tolerant, batched relaxation of pymatgen Structures with the JAX M3GNet PES potential."""

    def __init__(self, fmax: float = 0.1, max_steps: int = 500, time_limit_s: float = math.inf,
                 relax_cell: bool = True, model_dir=None, batch_size: int = 32, site_bucket: int = 8, **_ignored):
        from hgfn_jax.models import fire, m3gnet_pes

        if not relax_cell:
            raise ValueError("JaxRelaxer relaxes positions and cell together (FrechetCellFilter DOF) only")
        if batch_size < 1 or site_bucket < 1:
            raise ValueError(f"batch_size and site_bucket must be >= 1, got {batch_size}, {site_bucket}")
        self.name = NAME
        self.params = m3gnet_pes.load_params(model_dir)
        self.supported_z = frozenset(int(z) for z in np.flatnonzero(np.asarray(self.params["z_to_index"]) >= 0))
        self.fmax, self.max_steps, self.time_limit_s = float(fmax), int(max_steps), float(time_limit_s)
        self.batch_size, self.site_bucket = int(batch_size), int(site_bucket)
        self._fire = fire
        self.run = _compiled(self.fmax, self.max_steps)

    def relax(self, s: Structure | None) -> RelaxResult:
        return self.relax_many([s])[0]

    def arrays(self, structures: list[Structure], b: int, n: int) -> dict:
        """Padded inputs of :func:`hgfn_jax.models.fire.relax` (entries beyond the structures: ``skip``)."""
        cell = np.tile(np.eye(3, dtype=np.float32) * 10.0, (b, 1, 1))
        pos = np.zeros((b, n, 3), np.float32)
        z = np.zeros((b, n), np.int32)
        mask = np.zeros((b, n), bool)
        for i, s in enumerate(structures):
            cell[i] = s.lattice.matrix
            pos[i, : len(s)] = s.cart_coords
            z[i, : len(s)] = [site.specie.Z for site in s]
            mask[i, : len(s)] = True
        skip = np.arange(b) >= len(structures)
        return {"cell": cell, "positions": pos, "species": z, "mask": mask, "skip": skip}

    def relax_many(self, structures: list[Structure | None]) -> list[RelaxResult]:
        """One :class:`RelaxResult` per input, in order; never raises for a bad structure."""
        results: list[RelaxResult | None] = [None] * len(structures)
        queue = []
        for i, s in enumerate(structures):
            err = input_error(s)
            if err is None and not s.is_ordered:
                err = "invalid_cell"
            if err is None and not {el.Z for el in s.composition.elements} <= self.supported_z:
                err = "unsupported_element"
            if err is not None:
                results[i] = _fail(err)
            else:
                queue.append(i)
        queue.sort(key=lambda i: len(structures[i]))  # similar sizes share a batch (less padding)
        for start in range(0, len(queue), self.batch_size):
            idx = queue[start : start + self.batch_size]
            b = min(self.batch_size, 1 << (len(idx) - 1).bit_length())
            n = self.site_bucket * math.ceil(max(len(structures[i]) for i in idx) / self.site_bucket)
            t0 = time.perf_counter()
            out = self.run(self.params, **self.arrays([structures[i] for i in idx], b, n))
            out = {k: np.asarray(v) for k, v in out._asdict().items()}
            dt = time.perf_counter() - t0
            work = np.array([(out["steps"][j] + 1) * len(structures[i]) for j, i in enumerate(idx)], float)
            for j, i in enumerate(idx):
                results[i] = self._result(structures[i], out, j, dt * work[j] / work.sum())
        return results  # type: ignore[return-value]

    def _result(self, s: Structure, out: dict, j: int, seconds: float) -> RelaxResult:
        status, steps = int(out["status"][j]), int(out["steps"][j])
        reason = None if status == self._fire.CONVERGED else _REASONS.get(status, "model_error")
        if reason in HARD_FAILURES:
            return _fail(reason, steps, seconds)
        n = len(s)
        try:
            final = Structure(Lattice(out["cell"][j].astype(np.float64)), s.species,
                              out["positions"][j, :n].astype(np.float64), coords_are_cartesian=True)
        except Exception:  # noqa: BLE001
            return _fail("model_error", steps, seconds)
        return RelaxResult(final, float(out["energy_per_atom"][j]), reason is None, steps, seconds, reason)
