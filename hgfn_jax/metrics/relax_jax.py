"""The evaluation suite's relaxation in JAX: M3GNet-MP-2021.2.8-PES + batched FIRE (``relaxer="m3gnet_jax"``).

Same interface and records as :class:`hgfn_jax.metrics.relax.Relaxer` (``relax``, ``relax_many`` ->
:class:`~hgfn_jax.metrics.relax.RelaxResult` with the same failure reasons), same algorithm (ASE FIRE on the
FrechetCellFilter DOF, fmax 0.1 eV/A, step cap; :mod:`hgfn_jax.models.fire`), same potential
(:mod:`hgfn_jax.models.m3gnet_pes`, equal to the fixed host model to ~1e-5 eV/A). How it runs:

- structures are grouped by padded size (sites rounded up to a multiple of ``site_bucket``); each group's bond
  capacities ``k`` / ``k3`` (bonds per atom within 5 A / 4 A) are the smallest of :data:`K_BUCKETS` /
  :data:`K3_BUCKETS` holding 1.25 x its members' largest count + 2 (the padded per-bond work is proportional to
  ``k``: data-set cells need 32-64, not the 80 a fixed graph carries). One compile per group shape (~20 s on a
  loaded 2-core CPU), cached per process;
- each group relaxes with continuous batching, as the host relaxer: ``batch_size`` slots advance together for
  ``chunk`` FIRE iterations inside one compiled ``while_loop``; between chunks the finished slots are harvested
  and refilled from the queue (finished slots stay frozen until then);
- ``packed=True`` (default): the potential runs on the packed real bonds
  (:mod:`hgfn_jax.models.m3gnet_pes_packed`, same numbers; speed: ``benchmarks/results/relax_jax.json``); the
  batch shares a pool of ``batch_size x edge_capacity`` bond slots, ``edge_capacity`` the smallest of
  :data:`EDGE_BUCKETS` x padded sites holding 1.25 x the mean bond count of the group's ``batch_size`` densest
  members + 2 (``edge_capacity=`` overrides it, for tests). The graph is rebuilt at every FIRE step (no skin);
- a structure whose graph outgrows the capacities during relaxation (bonds per atom, bonds per structure, or a
  wider periodic-image window: status GRAPH, e.g. a cell under tension shrinking; with a shared pool, possibly a
  batch mate that grew) is relaxed again from its input once with the largest capacities (``k`` 128, ``k3`` 96,
  ``128 x sites`` bond slots per structure) and ``max_images=3``; still
  failing: ``graph_error``. More bonds than the largest bucket at the input: ``too_dense``;
- ``seconds`` is each chunk's wall time shared by the slots running in it, by their site counts; a structure
  whose ``seconds`` reach ``time_limit_s`` (checked between chunks, so a limit is overshot by at most one chunk's
  share) stops with ``timeout`` and keeps its last structure and last energy, as on the host (a retried
  structure's limit counts both passes; compilation is not counted: each group compiles on an empty batch first;
  default: no limit, the suite passes its ``time_limit``);
- statuses map to reasons: step cap -> ``step_cap``, non-finite energy/forces/stress -> ``nonfinite``, cell
  exploded/collapsed -> ``diverged``.
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
K_BUCKETS = (32, 48, 64, 80, 96, 128)
K3_BUCKETS = (16, 24, 32, 48, 64, 96)
EDGE_BUCKETS = (16, 24, 32, 40, 48, 64, 80, 96, 128)  # packed bond slots per padded site
CHUNK = 25  # FIRE iterations per compiled call between refills


def _bucket(need: int, buckets: tuple[int, ...]) -> int | None:
    return next((b for b in buckets if b >= need), None)


def max_bonds(s: Structure, cutoff: float) -> int:
    """Largest number of bonds (directed pairs, periodic images included) of one atom within ``cutoff`` A."""
    centres = s.get_neighbor_list(cutoff)[0]
    return int(np.bincount(centres, minlength=len(s)).max()) if len(centres) else 0


@functools.cache
def _compiled(k: int, k3: int, edge_capacity: int | None, max_images: int, chunk: int):
    """Jitted ``fire.run`` (``chunk`` iterations; fmax and max_steps traced: one compile per shape and capacity)
    and ``fire.finalize``."""
    import jax

    from hgfn_jax.models import fire

    run = jax.jit(functools.partial(fire.run, max_iters=chunk, k=k, k3=k3, max_images=max_images,
                                    edge_capacity=edge_capacity))
    return run, jax.jit(fire.finalize)


class JaxRelaxer:
    """Failure-tolerant, batched relaxation of pymatgen Structures with the JAX M3GNet PES potential."""

    def __init__(self, fmax: float = 0.1, max_steps: int = 500, time_limit_s: float = math.inf,
                 relax_cell: bool = True, model_dir=None, batch_size: int = 32, site_bucket: int = 8,
                 chunk: int = CHUNK, packed: bool = True, edge_capacity: int | None = None, **_ignored):
        from hgfn_jax.models import fire, m3gnet_pes

        if not relax_cell:
            raise ValueError("JaxRelaxer relaxes positions and cell together (FrechetCellFilter DOF) only")
        if batch_size < 1 or site_bucket < 1 or chunk < 1:
            raise ValueError(f"batch_size, site_bucket and chunk must be >= 1, got {batch_size}, {site_bucket}, "
                             f"{chunk}")
        self.name = NAME
        self.params = m3gnet_pes.load_params(model_dir)
        self.supported_z = frozenset(int(z) for z in np.flatnonzero(np.asarray(self.params["z_to_index"]) >= 0))
        self.fmax, self.max_steps, self.time_limit_s = float(fmax), int(max_steps), float(time_limit_s)
        self.batch_size, self.site_bucket, self.chunk = int(batch_size), int(site_bucket), int(chunk)
        if edge_capacity is not None and (not packed or edge_capacity < 1):
            raise ValueError(f"edge_capacity needs packed=True and >= 1, got {edge_capacity} (packed={packed})")
        self.packed, self.edge_capacity = bool(packed), edge_capacity
        self._fire = fire
        self._pes = m3gnet_pes

    def relax(self, s: Structure | None) -> RelaxResult:
        return self.relax_many([s])[0]

    def relax_many(self, structures: list[Structure | None]) -> list[RelaxResult]:
        """One :class:`RelaxResult` per input, in order; never raises for a bad structure."""
        results: list[RelaxResult | None] = [None] * len(structures)
        groups: dict[int, list] = {}
        for i, s in enumerate(structures):
            err = input_error(s)
            if err is None and not s.is_ordered:
                err = "invalid_cell"
            if err is None and not {el.Z for el in s.composition.elements} <= self.supported_z:
                err = "unsupported_element"
            key = None
            if err is None:
                key = self.group_key(s)
                err = "too_dense" if key is None else None
            if err is not None:
                results[i] = _fail(err)
            else:
                groups.setdefault(key[0], []).append((i, key))
        retry: dict[tuple, list[int]] = {}
        for n, members in sorted(groups.items()):  # one group per site bucket: the members' largest capacities
            items = [i for i, _ in members]
            key = (n, max(kk[1] for _, kk in members), max(kk[2] for _, kk in members), None, 2)
            if self.packed:  # bond slots for the mean of the densest batch_size members
                bonds = sorted((len(structures[i].get_neighbor_list(self._pes.CUTOFF)[0]) for i in items),
                               reverse=True)[: self.batch_size]
                key = (*key[:3], self.group_key(structures[items[0]], bonds)[3], 2)
            largest = (n, K_BUCKETS[-1], K3_BUCKETS[-1], n * K_BUCKETS[-1] if self.packed else None, 3)
            for i, res in self._relax_group(structures, items, *key).items():
                if res.reason == "graph_error" and key != largest:
                    retry.setdefault(largest, []).append(i)
                results[i] = res
        for key, items in sorted(retry.items()):
            spent = {i: results[i].seconds for i in items}
            for i, res in self._relax_group(structures, items, *key, spent=spent).items():
                results[i] = res  # its seconds include the first pass (``spent``)
        return results  # type: ignore[return-value]

    def group_key(self, s: Structure, bonds: list[int] | None = None) -> tuple[int, int, int, int | None, int] | None:
        """(padded sites, k, k3, bond slots per structure or None when not packed, max_images) that ``s`` needs
        (None if too dense for the buckets). The bond slots (on average over the batch's shared pool) are the
        smallest ``EDGE_BUCKETS`` x padded sites holding 1.25 x the mean of ``bonds`` (default: ``s``'s own count
        of directed bonds within 5 A) + 2; a group takes its members' largest k, k3 and the slots for the mean of
        its ``batch_size`` densest members."""
        n = self.site_bucket * math.ceil(len(s) / self.site_bucket)
        k = _bucket(int(np.ceil(1.25 * max_bonds(s, self._pes.CUTOFF))) + 2, K_BUCKETS)
        k3 = _bucket(int(np.ceil(1.25 * max_bonds(s, self._pes.THREEBODY_CUTOFF))) + 2, K3_BUCKETS)
        if k is None or k3 is None:
            return None
        cap = None
        if self.packed:
            mean = np.mean(bonds if bonds else [len(s.get_neighbor_list(self._pes.CUTOFF)[0])])
            per_site = _bucket(math.ceil((1.25 * mean + 2) / n), EDGE_BUCKETS) or EDGE_BUCKETS[-1]
            cap = self.edge_capacity or n * min(per_site, k)
        return n, k, min(k3, k), cap, 2

    def compiled(self, key: tuple[int, int, int, int | None, int]):
        """(run, finalize): jitted :func:`hgfn_jax.models.fire.run` (``chunk`` iterations) and ``finalize`` of a
        group (cached per process)."""
        import jax.numpy as jnp

        run, finalize = _compiled(*key[1:], self.chunk)
        limits = (jnp.float32(self.fmax), jnp.int32(self.max_steps))
        return lambda params, state, cell, species, mask: run(params, state, cell, species, mask, *limits), finalize

    def _relax_group(self, structures: list, items: list[int], n: int, k: int, k3: int, cap: int | None,
                     max_images: int, spent: dict[int, float] | None = None) -> dict[int, RelaxResult]:
        """Continuous batching of one group of structures sharing the padded shape and capacities; ``spent``:
        seconds already used by each structure (a retry), counted against the time limit."""
        fire = self._fire
        spent = spent or {}
        run, finalize = self.compiled((n, k, k3, cap, max_images))
        b = min(self.batch_size, 1 << (len(items) - 1).bit_length())
        cell = np.tile(np.eye(3, dtype=np.float32) * 10.0, (b, 1, 1))
        species = np.zeros((b, n), np.int32)
        mask = np.zeros((b, n), bool)
        state = {k_: np.array(v) for k_, v in fire.init(np.zeros((b, n, 3)), mask)._asdict().items()}
        fresh = {k_: np.array(v) for k_, v in fire.init(np.zeros((1, n, 3)), np.ones((1, n), bool))._asdict().items()}
        finalize(run(self.params, fire.RelaxState(**state), cell, species, mask), cell, mask)  # compiles: all slots
        slots = [-1] * b  # are empty (SKIPPED), the loop runs 0 iterations; keeps compile time out of ``seconds``
        seconds = np.zeros(b)
        queue = list(items)
        out: dict[int, RelaxResult] = {}
        while True:
            for j in range(b):
                if slots[j] == -1 and queue:
                    i = queue.pop(0)
                    s = structures[i]
                    cell[j] = s.lattice.matrix
                    species[j] = 0
                    species[j, : len(s)] = [site.specie.Z for site in s]
                    mask[j] = np.arange(n) < len(s)
                    for key_, v in fresh.items():
                        state[key_][j] = v[0]
                    state["u"][j] = 0.0
                    state["u"][j, : len(s)] = s.cart_coords
                    slots[j], seconds[j] = i, spent.get(i, 0.0)
            if all(x == -1 for x in slots):
                return out
            running = state["status"] == fire.RUNNING
            t0 = time.perf_counter()
            new = run(self.params, fire.RelaxState(**state), cell, species, mask)
            final = {k_: np.asarray(v) for k_, v in finalize(new, cell, mask)._asdict().items()}
            state = {k_: np.array(v) for k_, v in new._asdict().items()}
            sites = mask.sum(axis=1) * running
            seconds += (time.perf_counter() - t0) * sites / max(sites.sum(), 1)
            for j, i in enumerate(slots):
                timeout = state["status"][j] == fire.RUNNING and seconds[j] >= self.time_limit_s
                if i != -1 and (state["status"][j] != fire.RUNNING or timeout):
                    out[i] = self._result(structures[i], final, j, float(seconds[j]), timeout)
                    slots[j] = -1
                    state["status"][j] = fire.SKIPPED

    def _result(self, s: Structure, out: dict, j: int, seconds: float, timeout: bool = False) -> RelaxResult:
        status, steps = int(out["status"][j]), int(out["steps"][j])
        reason = None if status == self._fire.CONVERGED else _REASONS.get(status, "model_error")
        reason = "timeout" if timeout else reason
        if reason in HARD_FAILURES:
            return _fail(reason, steps, seconds)
        n = len(s)
        try:
            final = Structure(Lattice(out["cell"][j].astype(np.float64)), s.species,
                              out["positions"][j, :n].astype(np.float64), coords_are_cartesian=True)
        except Exception:  # noqa: BLE001
            return _fail("model_error", steps, seconds)
        return RelaxResult(final, float(out["energy_per_atom"][j]), reason is None, steps, seconds, reason)
