"""Throughput of the matgl reward models through the JAX host-callback bridge (structures per second).

For each model (M3GNet Eform, MEGNet Eform, MEGNet band gap) and batch size B, times
``jax.jit(jax.vmap(fn))`` on a batch of B real crystals (cells with <= 40 sites from the CGCNN data set,
cycled; padded to 40 sites). The first call (trace + compile + first host evaluation) is timed apart as
``compile_s``. Each call is ONE host callback that converts B padded crystals to pymatgen structures, checks
them and runs the model batched on the CPU.

    python -m benchmarks.bench_reward_models [--quick]      # quick: B in 1, 8, 64

Writes ``benchmarks/results/reward_models.json``.
"""

from __future__ import annotations

import argparse
import warnings

import jax
import numpy as np
import pandas as pd
import torch
from pymatgen.core import Structure

from benchmarks.common import record, time_jax, write_results
from hgfn_jax import paths
from hgfn_jax.crystal.convert import from_structure, stack
from hgfn_jax.models.host_bridge import make_property_fn

MODELS = ("M3GNet-MP-2018.6.1-Eform", "MEGNet-MP-2018.6.1-Eform", "MEGNet-MP-2019.4.1-BandGap-mfi")
N_PAD = 40
N_DISTINCT = 256  # distinct structures, cycled to fill larger batches


def _structures(n: int) -> list[Structure]:
    data = paths.data_dir()
    meta = pd.read_csv(paths.require_file("data", "cgcnn_mp_36737_meta.csv.gz"), usecols=["nsites"])
    df = pd.read_csv(data / "cgcnn_mp_36737.csv.gz", usecols=["cif"])
    idx = np.random.default_rng(0).choice(np.flatnonzero(meta.nsites.values <= N_PAD), n, replace=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Structure.from_str(c, fmt="cif") for c in df.cif.values[idx]]


def main(quick: bool = False) -> list[dict]:
    batches = (1, 8, 64) if quick else (1, 8, 64, 256, 1024)
    structures = _structures(N_DISTINCT)
    crystals = [from_structure(s, N_PAD) for s in structures]
    mean_sites = float(np.mean([len(s) for s in structures]))
    records = []
    for name in MODELS:
        fn = make_property_fn(name)
        f = jax.jit(jax.vmap(fn))
        for b in batches:
            batch = stack([crystals[i % len(crystals)] for i in range(b)])
            fn.reset_stats()
            compile_s, s_per_call = time_jax(
                f, batch, min_time=1.0 if b < 256 else 1e-9
            )  # big: one timed call
            st = fn.stats()
            records.append(
                record(
                    "reward_model_callback",
                    b,
                    s_per_call,
                    compile_s,
                    model=name,
                    units=fn.units,
                    ms_per_structure=1000.0 * s_per_call / b,
                    host_calls=st["host_calls"],
                    valid_fraction=st["valid"] / max(st["evaluated"], 1),
                    mean_sites=mean_sites,
                    n_pad=N_PAD,
                    host_batch_size=fn.model.batch_size,
                    torch_threads=torch.get_num_threads(),
                )
            )
    write_results("reward_models", records)
    return records


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    main(quick=ap.parse_args().quick)
