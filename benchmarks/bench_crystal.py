"""Throughput of orbit expansion + minimum-image distance matrix (JAX, jit + vmap) vs pymatgen.

Templates: real Materials Project crystals (shared data set) in their spglib-refined conventional cells with
at most ``N_MAX`` sites, reduced to their asymmetric units (reference atoms + space group + lattice). JAX
expands the orbits (``hgfn_jax.crystal.orbit.expand_orbits``) and computes the [N, N] distance matrix for a
batch (templates tiled to the batch size); pymatgen does the same work per structure
(``Structure.from_spacegroup`` + ``Structure.distance_matrix``). Also timed: the distance matrix alone and
the K = 12 neighbour list.

    python -m benchmarks.bench_crystal [--quick]   ->  benchmarks/results/crystal.json
"""

from __future__ import annotations

import argparse
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import record, time_host, time_jax, write_results
from hgfn_jax.crystal.geometry import distance_matrix, neighbor_list
from hgfn_jax.crystal.orbit import expand_orbits

N_MAX = 40  # padded sites
A_MAX = 8  # reference atoms
N_TEMPLATES = 64


def _templates(n: int = N_TEMPLATES):
    """Asymmetric units of real crystals: frac [T, A, 3], species [T, A], mask [T, A], sg [T], lattice [T, 6],
    n_sites [T] (the conventional cell's site count)."""
    from pymatgen.core import Lattice, Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    from hgfn_jax.data import load_mp

    ds = load_mp(n_max=20, limit=400, parse_all=False)
    out = {"frac": [], "species": [], "mask": [], "sg": [], "lattice": [], "n_sites": [], "structures": []}
    for i in range(len(ds)):
        s = ds.get_structure(i)
        sga = SpacegroupAnalyzer(s, symprec=0.1)
        refined = sga.get_refined_structure()
        if len(refined) > N_MAX:
            continue
        sym = SpacegroupAnalyzer(refined, symprec=0.1).get_symmetrized_structure()
        reps = [sites[0] for sites in sym.equivalent_sites]
        if len(reps) > A_MAX:
            continue
        sg = sga.get_space_group_number()
        params = np.asarray(refined.lattice.parameters)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rebuilt = Structure.from_spacegroup(
                sg, Lattice.from_parameters(*params), [r.specie for r in reps], [r.frac_coords for r in reps]
            )
        if len(rebuilt) != len(refined):  # setting mismatch: skip, the two sides must do the same work
            continue
        frac = np.zeros((A_MAX, 3), np.float32)
        species = np.zeros(A_MAX, np.int32)
        frac[: len(reps)] = [r.frac_coords for r in reps]
        species[: len(reps)] = [r.specie.Z for r in reps]
        out["frac"].append(frac)
        out["species"].append(species)
        out["mask"].append(np.arange(A_MAX) < len(reps))
        out["sg"].append(sg)
        out["lattice"].append(params.astype(np.float32))
        out["n_sites"].append(len(refined))
        out["structures"].append((sg, params, [r.specie for r in reps], [r.frac_coords for r in reps]))
        if len(out["sg"]) == n:
            break
    arrays = {k: np.asarray(v) for k, v in out.items() if k != "structures"}
    return arrays, out["structures"]


def _tile(arrays: dict, batch: int) -> dict:
    idx = np.arange(batch) % len(arrays["sg"])
    return {k: jnp.asarray(v[idx]) for k, v in arrays.items()}


def _orbit_and_distances(frac, species, mask, sg, lattice):
    crystal = expand_orbits(frac, species, mask, sg, N_MAX, lattice=lattice)
    return crystal.mask, distance_matrix(crystal.lattice, crystal.frac), crystal.overflow


def main(quick: bool = False) -> list[dict]:
    from pymatgen.core import Lattice, Structure

    arrays, structures = _templates()
    n_t = len(structures)
    print(
        f"{n_t} templates, {arrays['n_sites'].min()}..{arrays['n_sites'].max()} sites "
        f"(mean {arrays['n_sites'].mean():.1f}), {len(set(arrays['sg'].tolist()))} space groups"
    )
    batches = (1, 16, 256) if quick else (1, 16, 256, 4096)
    min_time = 0.3 if quick else 1.0
    common = {"n_max": N_MAX, "a_max": A_MAX, "templates": n_t, "mean_sites": float(arrays["n_sites"].mean())}
    records = []

    full = jax.jit(jax.vmap(_orbit_and_distances))
    out = full(*(jnp.asarray(arrays[k]) for k in ("frac", "species", "mask", "sg", "lattice")))
    n_real = np.asarray(out[0]).sum(1)
    if not np.array_equal(n_real, arrays["n_sites"]) or np.asarray(out[2]).any():
        raise RuntimeError("orbit expansion disagrees with pymatgen on the template site counts")
    for b in batches:
        t = _tile(arrays, b)
        compile_s, s = time_jax(
            full, t["frac"], t["species"], t["mask"], t["sg"], t["lattice"], min_time=min_time
        )
        records.append(
            record("orbit+distance_matrix", b, s, compile_s, impl="jax", unit="structures", **common)
        )

    dm = jax.jit(jax.vmap(lambda lat, f: distance_matrix(lat, f)))
    frac_full = np.asarray(
        jax.vmap(lambda f, z, m, g: expand_orbits(f, z, m, g, N_MAX).frac)(
            *(jnp.asarray(arrays[k]) for k in ("frac", "species", "mask", "sg"))
        )
    )
    for b in batches:
        idx = np.arange(b) % n_t
        lat, fr = jnp.asarray(arrays["lattice"][idx]), jnp.asarray(frac_full[idx])
        compile_s, s = time_jax(dm, lat, fr, min_time=min_time)
        records.append(record("distance_matrix", b, s, compile_s, impl="jax", unit="structures", **common))

    nl = jax.jit(jax.vmap(lambda c: neighbor_list(c, 12, 6.0, max_images=2)))
    on_cpu = jax.devices()[0].platform == "cpu"
    for b in batches[:3] if on_cpu else batches:  # [4096, N, N * 125] candidates is too much host memory
        t = _tile(arrays, b)
        crystals = jax.vmap(lambda f, z, m, g, lat: expand_orbits(f, z, m, g, N_MAX, lattice=lat))(
            t["frac"], t["species"], t["mask"], t["sg"], t["lattice"]
        )
        compile_s, s = time_jax(nl, crystals, min_time=min_time)
        truncated = float(np.mean(np.asarray(nl(crystals).truncated)))
        records.append(
            record(
                "neighbor_list_k12_r6",
                b,
                s,
                compile_s,
                impl="jax",
                unit="structures",
                truncated_fraction=truncated,
                **common,
            )
        )

    n_host = 16 if quick else n_t

    def pymatgen_all():
        for sg, params, species, coords in structures[:n_host]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = Structure.from_spacegroup(sg, Lattice.from_parameters(*params), species, coords)
            _ = s.distance_matrix

    s = time_host(pymatgen_all, min_time=min_time) / n_host
    records.append(
        record(
            "orbit+distance_matrix",
            1,
            s,
            0.0,
            impl="pymatgen",
            unit="structures",
            structures_timed=n_host,
            **common,
        )
    )
    pm_structures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for sg, params, species, coords in structures[:n_host]:
            pm_structures.append(
                Structure.from_spacegroup(sg, Lattice.from_parameters(*params), species, coords)
            )

    def pymatgen_dm():
        for st in pm_structures:
            st.lattice.get_all_distances(st.frac_coords, st.frac_coords)

    s = time_host(pymatgen_dm, min_time=min_time) / n_host
    records.append(
        record(
            "distance_matrix",
            1,
            s,
            0.0,
            impl="pymatgen",
            unit="structures",
            structures_timed=n_host,
            **common,
        )
    )
    write_results("crystal", records)
    return records


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    main(quick=ap.parse_args().quick)
