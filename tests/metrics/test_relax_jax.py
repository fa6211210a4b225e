"""Failure paths of the JAX relaxer (``JaxRelaxer``, packed-bond M3GNet PES + batched FIRE).

References: the host relaxer (:class:`hgfn_jax.metrics.relax.Relaxer`: matgl's fixed potential, ASE FIRE +
FrechetCellFilter) and pymatgen's neighbour counts. Cases: rock-salt NaCl and MgO under 5-6 % tension, rattled
(their cells shrink while relaxing, so their bond graphs GROW mid-relaxation), a NaN batch mate, a time limit.
One padded shape (2 slots x 8 sites) and three capacities: three compiles.
"""

from __future__ import annotations

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from hgfn_jax.metrics.relax import REASONS, Relaxer
from hgfn_jax.metrics.relax_jax import _REASONS, JaxRelaxer
from hgfn_jax.models import fire

MAX_STEPS = 300
CHUNK = 5


def _stretched(species, a, strain, seed):
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a * (1 + strain)), species, [[0, 0, 0], [0.5, 0.5, 0.5]])
    s = s.get_primitive_structure()
    rng = np.random.default_rng(seed)
    return Structure(s.lattice, s.species, s.cart_coords + rng.normal(0, 0.05, (len(s), 3)), coords_are_cartesian=True)


@pytest.fixture(scope="module")
def inputs(model_dir):
    return [_stretched(["Na", "Cl"], 5.69, 0.06, 0), _stretched(["Mg", "O"], 4.25, 0.05, 1)]


@pytest.fixture(scope="module")
def host(inputs):
    out = Relaxer(max_steps=MAX_STEPS).relax_many(inputs)
    assert all(r.converged for r in out)
    return out


def _bonds(s: Structure) -> int:
    return len(s.get_neighbor_list(5.0)[0])  # directed pairs within 5 A, periodic images included


def _group_key(relaxer, structures):
    keys = [relaxer.group_key(s) for s in structures]
    return tuple(max(k[j] for k in keys) for j in range(5))


def _run(relaxer, structures, nan_slot=None):
    """One compiled group of the relaxer run to the end on ``structures`` (no refill): finalized outputs."""
    key = _group_key(relaxer, structures)
    n = key[0]
    b = len(structures)
    cell = np.stack([s.lattice.matrix for s in structures]).astype(np.float32)
    pos, z, mask = np.zeros((b, n, 3), np.float32), np.zeros((b, n), np.int32), np.zeros((b, n), bool)
    for j, s in enumerate(structures):
        pos[j, : len(s)], z[j, : len(s)], mask[j, : len(s)] = s.cart_coords, [x.specie.Z for x in s], True
    if nan_slot is not None:
        pos[nan_slot, 1] = np.nan
    run, finalize = relaxer.compiled(key)
    state = fire.init(pos, mask)
    while (np.asarray(state.status) == fire.RUNNING).any():
        state = run(relaxer.params, state, cell, z, mask)
    return {k: np.asarray(v) for k, v in finalize(state, cell, mask)._asdict().items()}


def test_bond_overflow_mid_relaxation_is_retried_to_the_host_result(inputs, host):
    """With a bond pool of exactly the inputs' bonds (+1), the shrinking cells outgrow it after some steps:
    the first pass stops them with status GRAPH (never a truncated graph), the relaxer retries them from the input
    with the largest capacities and returns the host relaxer's final energy (5 meV/atom)."""
    cap = -(-sum(_bonds(s) for s in inputs) // len(inputs))  # pool = 2 x cap: the inputs fit, barely
    small = JaxRelaxer(max_steps=MAX_STEPS, batch_size=2, chunk=CHUNK, edge_capacity=cap)
    first = _run(small, inputs)
    grew = first["status"] == fire.GRAPH
    assert grew.any() and (first["steps"][grew] > 0).all(), first  # overflowed mid-relaxation, not at the input
    out = small.relax_many(inputs)
    for rj, rh in zip(out, host, strict=True):
        assert rj.converged and rj.reason is None, rj
        assert abs(rj.energy_per_atom - rh.energy_per_atom) < 5e-3, (rj.energy_per_atom, rh.energy_per_atom)
    relaxed_bonds = [_bonds(r.structure) for r in out]
    assert max(relaxed_bonds) > cap  # the relaxed graph really is larger than the first pass's capacity


def test_nan_batch_mate_is_isolated_and_counted(inputs, host):
    """A NaN structure in the batch stops at once with a counted reason; its batch mate's run is identical to the
    run beside a clean structure (per-structure bond capacity: nothing is shared) and matches the host."""
    relaxer = JaxRelaxer(max_steps=MAX_STEPS, batch_size=2, chunk=CHUNK)
    clean = _run(relaxer, inputs)
    dirty = _run(relaxer, inputs, nan_slot=1)
    assert int(dirty["status"][1]) in (fire.NONFINITE, fire.GRAPH) and int(dirty["steps"][1]) == 0
    assert _REASONS[int(dirty["status"][1])] in REASONS
    assert int(dirty["status"][0]) == fire.CONVERGED
    for name in ("energy", "steps", "cell", "positions", "fmax"):
        np.testing.assert_array_equal(dirty[name][0], clean[name][0], err_msg=name)
    assert abs(float(clean["energy_per_atom"][0]) - host[0].energy_per_atom) < 5e-3
    out = relaxer.relax_many(inputs)  # the suite's path: same compiled group, same numbers
    np.testing.assert_allclose([r.energy_per_atom for r in out], clean["energy_per_atom"], rtol=0, atol=1e-6)


def test_time_limit_stops_with_timeout_and_keeps_the_structure(inputs):
    """``time_limit_s``: checked between chunks; a structure past it stops with ``timeout``, not converged, and
    keeps its last structure (as the host relaxer)."""
    out = JaxRelaxer(max_steps=MAX_STEPS, batch_size=2, chunk=CHUNK, time_limit_s=1e-9).relax_many(inputs)
    for r, s in zip(out, inputs, strict=True):
        assert r.reason == "timeout" and not r.converged and r.steps == CHUNK and r.seconds > 0, r
        assert r.structure is not None and len(r.structure) == len(s) and np.isfinite(r.energy_per_atom)
    with pytest.raises(ValueError, match="edge_capacity"):
        JaxRelaxer(packed=False, edge_capacity=10)


def test_too_dense_input_is_counted_not_compiled(model_dir):
    """A cell with more bonds per atom within 5 A than the largest capacity bucket (133 for this random 12-atom Si
    cell, pymatgen's count) is refused before any compile with the counted reason ``too_dense``."""
    from hgfn_jax.metrics.relax_jax import K_BUCKETS

    dense = Structure(Lattice.cubic(3.6), ["Si"] * 12, np.random.default_rng(1).random((12, 3)))
    assert max(np.bincount(dense.get_neighbor_list(5.0)[0])) > K_BUCKETS[-1]
    (r,) = JaxRelaxer(batch_size=2, chunk=CHUNK).relax_many([dense])
    assert r.reason == "too_dense" and r.reason in REASONS and not r.converged and r.structure is None
