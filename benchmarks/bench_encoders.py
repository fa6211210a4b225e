"""Forward throughput of the GNN state encoders (paper 000 GCN, paper 002 MEGNet) in structures/s.

Synthetic random crystals padded to ``N_MAX = 32`` sites (1..32 real sites, random species Z 1..83, random
triclinic-ish lattices with 3.5..9 A lengths and 75..115 degree angles); K = 12 neighbours within 8 A
(paper 000 sec. 4.1). Timed per batch size (1, 64, 1024; quick: 1, 64): graph construction alone
(:func:`hgfn_jax.policies.graph.build_graph`) and the full encoder forward (graph + network), jit-compiled,
compile time apart.

    python -m benchmarks.bench_encoders [--quick]   ->  benchmarks/results/encoders.json
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import record, time_jax, write_results
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.policies.gcn import GCNEncoder
from hgfn_jax.policies.graph import build_graph
from hgfn_jax.policies.megnet import MEGNetEncoder

N_MAX = 32
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
    write_results("encoders", records)
    return records


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    main(quick=ap.parse_args().quick)
