"""In-graph JAX energy models (MEGNet / M3GNet Eform on matgl's weights): equality with matgl and throughput.

Acceptance check of issue 13 (part 1): on ``--n`` random data-set crystals with <= 40 sites (seed 0), the JAX
formation energy of :mod:`hgfn_jax.models.megnet` / :mod:`hgfn_jax.models.m3gnet` against the fixed host
model (``hgfn_jax.models.matgl``: matgl 4.1.2 + ``matgl_fix``), and structures per second of
``jax.jit(jax.vmap(energy))`` for cells padded to 8 / 20 / 40 sites (each crystal goes to the smallest bucket that
holds it; the compile of each bucket is timed apart), with the host model timed on the same structures.

    python -m benchmarks.energy_models_jax [--n 1000] [--batches 32 256] [--models megnet m3gnet]

Writes ``benchmarks/results/energy_models_jax.json``: per model and bucket records with ``benchmark,
batch, items_per_s, compile_s, device, max_abs_err, n`` (``max_abs_err`` in eV/atom over the ``n`` crystals of
the bucket that both evaluate, per-crystal path; ``n_refused_jax`` / ``n_refused_host`` count the others) for
``vmap(energy)`` (``_vmap_``) at each batch size, for ``energy_batch`` (``_packed_``, default edge capacity;
``_packed_fitted_``, capacity 1.1 x the real edges of the timed batch) at the largest, with
``max_abs_diff_vs_vmap``, a ``..._host`` record per bucket (fixed matgl model on the same structures), and one
``..._all`` record per model: the error over all buckets, the MAE of both against the DFT labels,
and the throughput of that accuracy pass (mixed sizes, batch = the largest of ``--batches``; first call of
each bucket excluded).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import record, time_host, time_jax, write_results
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.data import mp
from hgfn_jax.models import m3gnet, megnet
from hgfn_jax.models.graph import radius_graph
from hgfn_jax.models.matgl import get_property_model

MODELS = {"megnet": megnet, "m3gnet": m3gnet}
BUCKETS = (8, 20, 40)


def _batch(ds: mp.MPDataset, idx: np.ndarray, n_max: int) -> Crystal:
    return Crystal(
        lattice=jnp.asarray(ds.lattice[idx]),
        frac=jnp.asarray(ds.frac[idx, :n_max]),
        species=jnp.asarray(ds.species[idx, :n_max]),
        mask=jnp.asarray(ds.mask[idx, :n_max]),
        spacegroup=jnp.asarray(ds.spacegroup[idx]),
        overflow=jnp.zeros(len(idx), bool),
    )


def _cycle(idx: np.ndarray, size: int) -> np.ndarray:
    return idx[np.arange(size) % len(idx)]


def main(n: int = 1000, batches: tuple[int, ...] = (32, 256), models: tuple[str, ...] = ("megnet", "m3gnet")):
    meta = mp.read_meta()
    rows = np.sort(np.random.default_rng(0).choice(np.flatnonzero(meta.nsites.values <= 40), n, replace=False))
    ds = mp.load_mp(n_max=40, rows=rows)
    structures = [ds.get_structure(i) for i in range(n)]
    bucket_of = np.searchsorted(np.asarray(BUCKETS), ds.nsites)
    records = []
    for key in models:
        module = MODELS[key]
        params = module.load_params()
        host_model = get_property_model(module.NAME)
        fn = jax.jit(jax.vmap(module.energy, in_axes=(None, 0)))
        edge_counts = jax.jit(jax.vmap(lambda c, m=module: radius_graph(c, m.CUTOFF, m.DEFAULT_K).n_edges))
        all_err, all_n, run_s, compile_total = [], 0, 0.0, 0.0
        dft_jax, dft_host = [], []  # |prediction - DFT| where both evaluate
        for b, n_max in enumerate(BUCKETS):
            idx = np.flatnonzero(bucket_of == b)
            if idx.size == 0:
                continue
            chunk = max(batches)
            t0 = time.perf_counter()
            e_jax, ok_jax = [], []
            compile_s = None
            for start in range(0, idx.size, chunk):  # accuracy on every crystal of the bucket, fixed batch shape
                part = _cycle(idx[start : start + chunk], chunk)
                e, ok = fn(params, _batch(ds, part, n_max))
                jax.block_until_ready(e)
                if compile_s is None:
                    compile_s = time.perf_counter() - t0
                m = min(chunk, idx.size - start)
                e_jax.append(np.asarray(e, np.float64)[:m])
                ok_jax.append(np.asarray(ok)[:m])
            run_s += time.perf_counter() - t0 - compile_s
            compile_total += compile_s
            e_jax, ok_jax = np.concatenate(e_jax), np.concatenate(ok_jax)
            sub = [structures[i] for i in idx]
            e_host, ok_host = host_model.predict(sub)
            both = ok_jax & ok_host
            err = np.abs(e_jax - e_host)[both]
            all_err.append(err)
            dft = ds.formation_energy[idx].astype(np.float64)
            dft_jax.append(np.abs(e_jax - dft)[both])
            dft_host.append(np.abs(e_host - dft)[both])
            all_n += int(both.sum())
            stats = {
                "model": module.NAME,
                "n_max": n_max,
                "max_abs_err": float(err.max()) if err.size else float("nan"),
                "n": int(both.sum()),
                "n_refused_jax": int((~ok_jax).sum()),
                "n_refused_host": int((~ok_host).sum()),
                "n_disagree_valid": int((ok_jax != ok_host).sum()),
                "mean_sites": float(ds.nsites[idx].mean()),
            }
            for batch in batches:  # per-crystal path, vmapped
                crystals = _batch(ds, _cycle(idx, batch), n_max)
                c_s, per_call = time_jax(fn, params, crystals, min_time=1.0, max_reps=50)
                records.append(record(f"{key}_eform_jax_vmap_n{n_max}", batch, per_call, c_s, **stats))
            # packed batch path at the largest batch: default capacity, and one fitted to this batch (+10 %)
            batch = max(batches)
            part = _cycle(idx, batch)
            crystals = _batch(ds, part, n_max)
            e_ref, _ = fn(params, crystals)
            real_edges = int(np.sum(np.asarray(edge_counts(crystals))))
            fitted = int(np.ceil(1.1 * real_edges / 256.0)) * 256
            for label, capacity in (("packed", None), ("packed_fitted", fitted)):
                packed = jax.jit(lambda p, c, cap=capacity, m=module: m.energy_batch(p, c, edge_capacity=cap))
                c_s, per_call = time_jax(packed, params, crystals, min_time=1.0, max_reps=50)
                e_p, ok_p = packed(params, crystals)
                cap = batch * n_max * module.EDGES_PER_SITE if capacity is None else capacity
                extra = {
                    "edge_capacity": cap,
                    "real_edges": real_edges,
                    "n_refused_capacity": int(np.sum(~np.asarray(ok_p) & np.isfinite(np.asarray(e_ref)))),
                    "max_abs_diff_vs_vmap": float(np.nanmax(np.abs(np.asarray(e_p) - np.asarray(e_ref)))),
                }
                records.append(record(f"{key}_eform_jax_{label}_n{n_max}", batch, per_call, c_s, **stats, **extra))
            host_batch = sub[: max(batches)]
            per_call = time_host(lambda hb=host_batch, hm=host_model: hm.predict(hb), min_time=1.0, max_reps=5)
            records.append(record(f"{key}_eform_host_n{n_max}", len(host_batch), per_call, 0.0, **stats))
        err = np.concatenate(all_err)
        records.append(
            record(
                f"{key}_eform_jax_all",
                n,
                max(run_s, 1e-9),
                compile_total,
                model=module.NAME,
                max_abs_err=float(err.max()),
                mean_abs_err=float(err.mean()),
                mae_vs_dft_jax=float(np.concatenate(dft_jax).mean()),
                mae_vs_dft_host=float(np.concatenate(dft_host).mean()),
                n=all_n,
                note=f"accuracy pass over all {n} crystals (buckets {BUCKETS}, batch {max(batches)}, compiles apart)",
            )
        )
    write_results("energy_models_jax", records)
    return records


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--models", nargs="+", default=["megnet", "m3gnet"], choices=sorted(MODELS))
    args = parser.parse_args()
    main(args.n, tuple(args.batches), tuple(args.models))
