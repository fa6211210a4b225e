"""Forward throughput of the GNN state encoders (paper 000 GCN, paper 002 MEGNet) in structures/s.

Synthetic random crystals padded to ``N_MAX = 32`` sites (1..32 real sites, random species Z 1..83, random
triclinic-ish lattices with 3.5..9 A lengths and 75..115 degree angles); K = 12 neighbours within 8 A
(paper 000 sec. 4.1). Timed per batch size (1, 64, 1024; quick: 1, 64): graph construction alone
(:func:`hgfn_jax.policies.graph.build_graph`) and the full encoder forward (graph + network), jit-compiled,
compile time apart.

Symmetric cells (``*_sym`` records): what the hierarchical GFlowNet encodes, cells expanded by
``crystal.orbit.expand_orbits_full`` from 3 random reference atoms in a random space group, padded to
``N_MAX_SYM = 64`` sites (cells that overflow keep their first 64 sites). Timed: the full-cell graph and
encoders (``build_graph``, N_MAX_SYM nodes) and the orbit-reduced ones (``build_orbit_graph``, 3 nodes; the
default of the hierarchical policy), batch 1..4096 for the orbit-reduced ones.

    python -m benchmarks.bench_encoders [--quick]   ->  benchmarks/results/encoders.json
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import record, time_jax, write_results
from hgfn_jax.crystal import constraints as cons
from hgfn_jax.crystal.orbit import expand_orbits_full
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.policies.gcn import GCNEncoder
from hgfn_jax.policies.graph import build_graph, build_orbit_graph
from hgfn_jax.policies.megnet import MEGNetEncoder

N_MAX = 32
N_MAX_SYM = 64
NUM_REF = 3
K = 12
CUTOFF = 8.0


def random_crystals(batch: int, n_max: int = N_MAX, seed: int = 0) -> Crystal:
    """[batch] random padded crystals (host numpy -> jnp)."""
    rng = np.random.default_rng(seed)
    n = rng.integers(1, n_max + 1, batch)
    mask = np.arange(n_max)[None, :] < n[:, None]
    lattice = np.concatenate(
        [rng.uniform(3.5, 9.0, (batch, 3)), rng.uniform(75.0, 115.0, (batch, 3))], axis=1
    )
    return Crystal(
        lattice=jnp.asarray(lattice, jnp.float32),
        frac=jnp.asarray(np.where(mask[..., None], rng.random((batch, n_max, 3)), 0.0), jnp.float32),
        species=jnp.asarray(np.where(mask, rng.integers(1, 84, (batch, n_max)), 0), jnp.int32),
        mask=jnp.asarray(mask),
        spacegroup=jnp.ones((batch,), jnp.int32),
        overflow=jnp.zeros((batch,), bool),
    )


def symmetric_crystals(batch: int, n_max: int = N_MAX_SYM, seed: int = 0) -> tuple[Crystal, jnp.ndarray]:
    """[batch] cells expanded from NUM_REF random reference atoms in random space groups, and site_ref."""
    rng = np.random.default_rng(seed)
    groups = jnp.asarray(rng.integers(1, 231, batch), jnp.int32)
    lat = np.concatenate([rng.uniform(2.0, 10.0, (batch, 3)), rng.uniform(60.0, 120.0, (batch, 3))], axis=1)
    lat = jax.vmap(cons.apply_spacegroup_constraints)(jnp.asarray(lat, jnp.float32), groups)
    frac = jnp.asarray(rng.random((batch, NUM_REF, 3)), jnp.float32)
    species = jnp.asarray(rng.integers(1, 84, (batch, NUM_REF)), jnp.int32)
    mask = jnp.ones((batch, NUM_REF), bool)
    out = jax.jit(
        jax.vmap(lambda f, z, m, g, lt: expand_orbits_full(f, z, m, g, n_max, lattice=lt))
    )(frac, species, mask, groups, lat)
    return out.crystal, out.ref_index


def encoders() -> dict:
    return {
        "gcn": GCNEncoder(hidden=64, layers=3, k=K, cutoff=CUTOFF),
        "megnet_set2set": MEGNetEncoder(hidden=64, layers=3, k=K, cutoff=CUTOFF, readout="set2set"),
    }


def main(quick: bool = False) -> list[dict]:
    batches = (1, 64) if quick else (1, 64, 1024)
    min_time = 0.3 if quick else 1.0
    common = {"n_max": N_MAX, "k": K, "cutoff": CUTOFF, "unit": "structures"}
    records = []
    init_batch = random_crystals(2, seed=1)
    models = {}
    for name, module in encoders().items():
        params = jax.jit(module.init)(jax.random.PRNGKey(0), init_batch)
        n_params = int(sum(x.size for x in jax.tree_util.tree_leaves(params)))
        models[name] = (jax.jit(module.apply), params, n_params, module.hidden, module.layers)
    graph_fn = jax.jit(lambda c: build_graph(c, K, CUTOFF))
    for b in batches:
        crystals = random_crystals(b, seed=b)
        mean_sites = float(np.asarray(crystals.num_sites).mean())
        compile_s, s = time_jax(graph_fn, crystals, min_time=min_time)
        records.append(record("graph_build", b, s, compile_s, mean_sites=mean_sites, **common))
        for name, (apply, params, n_params, hidden, layers) in models.items():
            compile_s, s = time_jax(apply, params, crystals, min_time=min_time)
            records.append(
                record(
                    f"encoder_{name}",
                    b,
                    s,
                    compile_s,
                    params=n_params,
                    hidden=hidden,
                    layers=layers,
                    mean_sites=mean_sites,
                    **common,
                )
            )
    # symmetric cells: full-cell vs orbit-reduced graphs and encoders (same modules, same parameters)
    sym_batches = (1, 64) if quick else (1, 64, 1024, 4096)
    full_batches = (1, 64) if quick else (1, 64, 1024)
    common = {"n_max": N_MAX_SYM, "num_ref": NUM_REF, "k": K, "cutoff": CUTOFF, "unit": "structures"}
    init_c, init_r = symmetric_crystals(2, seed=1)
    orbit_fn = lambda c, r: build_orbit_graph(c, r, NUM_REF, K, CUTOFF)  # noqa: E731
    full_fn = lambda c, r: build_graph(c, K, CUTOFF)  # noqa: E731
    sym_models = {}
    for name, module in encoders().items():
        params = jax.jit(module.init)(jax.random.PRNGKey(0), init_c)
        sym_models[name] = (module, params)
    for b in sym_batches:
        crystals, site_ref = symmetric_crystals(b, seed=b)
        mean_sites = float(np.asarray(crystals.num_sites).mean())
        overflow = float(np.asarray(crystals.overflow).mean())
        for graph_kind, gfn in (("orbit", orbit_fn), ("full", full_fn)):
            if graph_kind == "full" and b not in full_batches:
                continue
            tag = "_sym" if graph_kind == "full" else "_orbit"
            compile_s, s = time_jax(jax.jit(gfn), crystals, site_ref, min_time=min_time)
            records.append(
                record(f"graph_build{tag}", b, s, compile_s, mean_sites=mean_sites, overflow=overflow, **common)
            )
            for name, (module, params) in sym_models.items():
                apply = jax.jit(lambda p, c, r, m=module, f=gfn: m.apply(p, f(c, r)))
                compile_s, s = time_jax(apply, params, crystals, site_ref, min_time=min_time)
                records.append(
                    record(
                        f"encoder_{name}{tag}",
                        b,
                        s,
                        compile_s,
                        hidden=module.hidden,
                        layers=module.layers,
                        mean_sites=mean_sites,
                        overflow=overflow,
                        **common,
                    )
                )
    write_results("encoders", records)
    return records


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    main(quick=ap.parse_args().quick)
