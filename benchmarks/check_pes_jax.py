"""Equality of the JAX M3GNet PES potential with the fixed host matgl potential on many data-set crystals.

Random cells of <= 40 sites from the CGCNN/MP data set (seed 0), each evaluated as stored (relaxed, near-zero
forces) and rattled (0.1 A Gaussian displacements, +-3 % random cell deformation: forces and stresses of several
eV/A and GPa). JAX: ``vmap(energy_forces_stress)`` at the default capacities (k 80, k3 48), sites padded to
10 / 20 / 40 by size. Host: ``hgfn_jax.models.matgl.load_model("M3GNet-MP-2021.2.8-PES")`` on the same cell
(the Crystal's orientation). Reports the max and 99th-percentile absolute errors of the energy per atom (eV/atom),
forces (eV/A) and stress (GPa), and the cells JAX refuses (graph over capacity).

    python -m benchmarks.check_pes_jax [--n 250]

Writes ``benchmarks/results/pes_jax_equality.json``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from pymatgen.core import Lattice, Structure

from benchmarks.common import RESULTS_DIR, device_name
from hgfn_jax.crystal.convert import from_structure, stack, to_structure
from hgfn_jax.data import mp
from hgfn_jax.models import m3gnet_pes

BUCKETS = (10, 20, 40)
CHUNK = 16


def _rattle(s: Structure, rng) -> Structure:
    lat = Lattice(s.lattice.matrix @ (np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))))
    cart = s.frac_coords @ lat.matrix + rng.normal(0.0, 0.1, (len(s), 3))
    return Structure(lat, s.species, cart, coords_are_cartesian=True)


def main(argv=None) -> dict:
    import json

    from matgl.ext.pymatgen import Structure2Graph

    from hgfn_jax.models.matgl import load_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=250, help="data-set cells (each also rattled)")
    args = ap.parse_args(argv)
    meta = mp.read_meta()
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(np.flatnonzero(meta.nsites.values <= 40), args.n, replace=False))
    ds = mp.load_mp(n_max=40, rows=rows, parse_all=False)
    structures = [ds.get_structure(i) for i in range(len(rows))]
    structures += [_rattle(s, rng) for s in structures]
    kinds = ["data"] * len(rows) + ["rattled"] * len(rows)
    params = m3gnet_pes.load_params()
    fn = jax.jit(jax.vmap(m3gnet_pes.energy_forces_stress, in_axes=(None, 0)))
    model = load_model(m3gnet_pes.NAME)
    conv = Structure2Graph(element_types=tuple(model.model.element_types), cutoff=m3gnet_pes.CUTOFF)
    err = {"e": [], "f": [], "s": []}
    per_kind = {k: {"e": [], "f": [], "s": []} for k in ("data", "rattled")}
    refused, host_s, jax_s = [], 0.0, 0.0
    for lo, hi in zip((0, *BUCKETS[:-1]), BUCKETS, strict=True):
        idx = [i for i, s in enumerate(structures) if lo < len(s) <= hi]
        for c0 in range(0, len(idx), CHUNK):
            part = idx[c0 : c0 + CHUNK]
            crystals = [from_structure(structures[i], hi) for i in part]
            crystals += [crystals[-1]] * (CHUNK - len(part))  # fixed shape: one compile per bucket
            t0 = time.perf_counter()
            e, f, s, valid = (np.asarray(x, np.float64) for x in fn(params, jax.tree_util.tree_map(
                jnp.asarray, stack(crystals))))
            jax_s += time.perf_counter() - t0
            for j, i in enumerate(part):
                st = to_structure(crystals[j])
                n = len(st)
                if not valid[j]:
                    refused.append(f"{ds.material_id[i % len(rows)]} ({kinds[i]}, {n} sites)")
                    continue
                t0 = time.perf_counter()
                g, lat, _ = conv.get_graph(st)
                he, hf, hs, _ = model(g, lat, None)
                host_s += time.perf_counter() - t0
                de = abs(e[j] - float(he.detach())) / n
                df = float(np.abs(f[j, :n] - hf.detach().numpy()).max())
                dss = float(np.abs(s[j] - hs.detach().numpy()).max())
                for d, key in ((de, "e"), (df, "f"), (dss, "s")):
                    err[key].append(d)
                    per_kind[kinds[i]][key].append(d)
        print(f"bucket <= {hi} sites done ({len(idx)} cells)", flush=True)

    def summary(d):
        return {f"{k}_max": float(np.max(v)) for k, v in d.items()} | {
            f"{k}_p99": float(np.percentile(v, 99)) for k, v in d.items()} | {"n": len(d["e"])}

    out = {
        "benchmark": "m3gnet_pes_jax_vs_host",
        "units": {"e": "eV/atom", "f": "eV/A", "s": "GPa"},
        "cells": len(structures),
        "compared": len(err["e"]),
        "refused": refused,
        "all": summary(err),
        "data": summary(per_kind["data"]),
        "rattled": summary(per_kind["rattled"]),
        "device": device_name(),
        "jax_seconds_incl_compile": jax_s,
        "host_seconds": host_s,
    }
    print(json.dumps(out, indent=2))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "pes_jax_equality.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
