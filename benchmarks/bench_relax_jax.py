"""JAX M3GNet PES + batched FIRE against the host relaxer (matgl torch + ASE FIRE), same run, same machine.

1. Energy + forces + stress throughput (structures/s) of data-set cells with n-3..n sites padded to n = 8, 20,
   40, batch 32: JAX padded (``vmap(energy_forces_stress_cell)``, k 80) and packed
   (:mod:`hgfn_jax.models.m3gnet_pes_packed`), against the host potential on one graph batch of the same 32 cells
   (``Relaxer._forward``), all in the same run.
2. Relaxation (FIRE + FrechetCellFilter, fmax 0.1 eV/A, <= 300 steps) of rattled data-set cells (0.1 A
   displacements, 3 % strain, cells of <= 8 sites; default 32 cells; the whole default run ~7 min on the
   loaded 2-core CPU, the recorded results are of it): ``relaxer="m3gnet_jax"`` padded (``packed=False``) and packed
   (default) vs the host ``Relaxer`` (batch 32 each): wall time, converged fraction, mean steps, agreement of the
   final energies with the host's.
   ``compile_s`` of the JAX relaxer: a warm-up run with a 1-step cap on the same inputs (same group shapes).

    python -m benchmarks.bench_relax_jax [--n-relax 100] [--max-sites 8] [--skip-efs]

Writes ``benchmarks/results/relax_jax.json`` (records with benchmark, batch, items_per_s, compile_s, device).
"""

from __future__ import annotations

import argparse
import functools
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from pymatgen.core import Structure

from benchmarks.common import record, time_host, time_jax, write_results
from hgfn_jax.crystal.convert import stack, to_structure
from hgfn_jax.data import mp
from hgfn_jax.models import m3gnet_pes

BATCH = 32
SIZES = (8, 20, 40)


def _rattled(s: Structure, rng) -> Structure:
    p = s.copy()
    p.apply_strain(0.03)
    return Structure(p.lattice, p.species, p.cart_coords + rng.normal(0.0, 0.1, (len(p), 3)), coords_are_cartesian=True)


def bench_efs(records: list, sizes: tuple[int, ...] = SIZES) -> None:
    """Energy + forces + stress of 32 data-set cells of ``n - 3 .. n`` sites padded to ``n``, per size: JAX padded
    (k 80, ``vmap(energy_forces_stress_cell)``), JAX packed (:mod:`hgfn_jax.models.m3gnet_pes_packed`, a pool of
    32 x the smallest ``EDGE_BUCKETS`` x n bond slots holding the batch's bonds) and the host potential."""
    from pymatgen.io.ase import AseAtomsAdaptor

    from hgfn_jax.crystal.lattice import params_to_matrix
    from hgfn_jax.metrics.relax import Relaxer
    from hgfn_jax.metrics.relax_jax import EDGE_BUCKETS
    from hgfn_jax.models import m3gnet_pes_packed

    meta = mp.read_meta()
    params = m3gnet_pes.load_params()
    host = Relaxer(batch_size=BATCH)
    for n in sizes:
        cand = np.flatnonzero((meta.nsites.values >= n - 3) & (meta.nsites.values <= n))
        rows = np.random.default_rng(0).choice(cand, BATCH, replace=False)
        ds = mp.load_mp(n_max=n, rows=np.sort(rows), parse_all=False)
        crystals = [ds.crystal(i) for i in range(BATCH)]
        structures = [to_structure(c) for c in crystals]
        batch = jax.tree_util.tree_map(jnp.asarray, stack(crystals))
        cell = jax.vmap(params_to_matrix)(batch.lattice)
        pos = jnp.einsum("bni,bij->bnj", batch.frac, cell) * batch.mask[..., None]
        args = (params, cell, pos, batch.species, batch.mask)
        bonds = [len(s.get_neighbor_list(m3gnet_pes.CUTOFF)[0]) for s in structures]
        cap = n * next(b for b in EDGE_BUCKETS if b * n * BATCH >= sum(bonds))  # the pool holds the batch's bonds
        padded = jax.jit(jax.vmap(m3gnet_pes.energy_forces_stress_cell, in_axes=(None, 0, 0, 0, 0)))
        packed = jax.jit(functools.partial(m3gnet_pes_packed.energy_forces_stress_batch, edge_capacity=cap))
        out = {}
        packed_extra = {"edge_capacity": cap, "bonds_mean": float(np.mean(bonds))}
        for name, fn, extra in (("pes_efs_jax_padded", padded, {"k": m3gnet_pes.DEFAULT_K}),
                                ("pes_efs_jax_packed", packed, packed_extra)):
            compile_s, per_call = time_jax(fn, *args, min_time=2.0)
            out[name] = [np.asarray(x) for x in fn(*args)]
            records.append(record(name, BATCH, per_call, compile_s, sites=n, valid=int(out[name][3].sum()), **extra))
        de = np.nanmax(np.abs(out["pes_efs_jax_padded"][0] - out["pes_efs_jax_packed"][0]))
        df = np.nanmax(np.abs(out["pes_efs_jax_padded"][1] - out["pes_efs_jax_packed"][1]))
        records[-1].update(max_abs_de_vs_padded=float(de), max_abs_df_vs_padded=float(df))
        atoms = [AseAtomsAdaptor.get_atoms(s) for s in structures]

        def host_call(atoms=atoms):
            built = [host.converter.get_graph(a) for a in atoms]
            return host._forward([b[0] for b in built], [b[1] for b in built])

        host_call()
        records.append(record("pes_efs_host", BATCH, time_host(host_call, min_time=2.0), 0.0, sites=n,
                              note="matgl torch, one graph batch, graph building included"))


def bench_relax(records: list, n: int, max_sites: int, max_steps: int) -> None:
    from hgfn_jax.metrics.relax import Relaxer, make_relaxer

    meta = mp.read_meta()
    rng = np.random.default_rng(1)
    rows = rng.choice(np.flatnonzero((meta.nsites.values >= 2) & (meta.nsites.values <= max_sites)), n, replace=False)
    ds = mp.load_mp(n_max=max_sites, rows=np.sort(rows), parse_all=False)
    inputs = [_rattled(ds.get_structure(i), rng) for i in range(n)]

    walls, outs, compiles = {}, {}, {}
    for name, packed in (("relax_jax_padded", False), ("relax_jax_packed", True)):
        jaxr = make_relaxer("m3gnet_jax", max_steps=max_steps, batch_size=BATCH, packed=packed)
        t0 = time.perf_counter()  # warm-up with a 1-step cap: same groups and shapes (the cap is traced): compiles
        make_relaxer("m3gnet_jax", max_steps=1, batch_size=BATCH, packed=packed).relax_many(inputs)
        compiles[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        outs[name] = jaxr.relax_many(inputs)
        walls[name] = time.perf_counter() - t0
    host = Relaxer(max_steps=max_steps, batch_size=BATCH, time_limit_s=600.0)
    t0 = time.perf_counter()
    out_h = host.relax_many(inputs)
    wall_h = time.perf_counter() - t0

    def stats(out):
        return {"converged": float(np.mean([r.converged for r in out])),
                "steps_mean": float(np.mean([r.steps for r in out])),
                "failures": {r.reason: sum(x.reason == r.reason for x in out) for r in out if r.reason}}

    def agree(out_j):
        both = [(a.energy_per_atom, b.energy_per_atom) for a, b in zip(out_j, out_h, strict=True)
                if a.converged and b.converged]
        de = np.abs(np.subtract(*np.asarray(both).T)) if both else np.array([np.nan])
        return {"energy_abs_diff_median": float(np.median(de)), "energy_abs_diff_max": float(np.max(de)),
                "within_5meV": float(np.mean(de < 5e-3)), "pairs": len(both)}

    for name, out_j in outs.items():
        records.append(record(name, n, walls[name], compiles[name], max_sites=max_sites, max_steps=max_steps,
                              wall_s=walls[name], **stats(out_j), **agree(out_j)))
    records.append(record("relax_host", n, wall_h, 0.0, max_sites=max_sites, max_steps=max_steps, wall_s=wall_h,
                          **stats(out_h)))


def main(quick: bool = False, n_relax: int = 32, max_sites: int = 8, max_steps: int = 300,
         skip_efs: bool = False) -> list[dict]:
    """``quick`` (``run_all --quick``): 8 cells."""
    warnings.simplefilter("ignore")
    records: list = []
    if not skip_efs:
        bench_efs(records)
    bench_relax(records, 8 if quick else n_relax, max_sites, max_steps)
    write_results("relax_jax", records)
    return records


def cli(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-relax", type=int, default=32, help="rattled cells to relax")
    ap.add_argument("--max-sites", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--skip-efs", action="store_true")
    args = ap.parse_args(argv)
    main(n_relax=args.n_relax, max_sites=args.max_sites, max_steps=args.max_steps, skip_efs=args.skip_efs)


if __name__ == "__main__":
    cli()
