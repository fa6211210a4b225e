"""Throughput (structures/s) of the JAX reward terms and composite rewards, batch 1 .. 1024.

Terms: CHGFlowNet bond-distance preference (eqs. 11-13), density Gaussian (eq. 14), SMACT composition validity
(JAX), SHAFT bond-length score (eq. 7), and the composite CHGFlowNet (eq. 15) / SHAFT (eq. 8) rewards with a
JAX stand-in energy (a per-element lookup, no model). Inputs: random crystals padded to N = 20 with 4-12 real
sites (the costs do not depend on the values). Compile time is recorded apart. Also records SMACT's own host
time per composition for comparison. Writes ``benchmarks/results/reward_terms.json``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import record, time_jax, write_results
from hgfn_jax.crystal import chemistry as chem
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.data.bond_stats import load_bond_table
from hgfn_jax.rewards import composite, physics

N_MAX = 20
SPECIES = np.array([3, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 20, 22, 25, 26, 27, 28, 29, 30, 34, 38, 56])


def random_crystals(batch: int, seed: int = 0) -> Crystal:
    rs = np.random.default_rng(seed)
    n = rs.integers(4, 13, batch)
    mask = np.arange(N_MAX)[None, :] < n[:, None]
    lattice = np.concatenate([rs.uniform(4.0, 9.0, (batch, 3)), rs.uniform(75.0, 105.0, (batch, 3))], axis=1)
    return Crystal(
        lattice=jnp.asarray(lattice, jnp.float32),
        frac=jnp.asarray(rs.uniform(0, 1, (batch, N_MAX, 3)), jnp.float32),
        species=jnp.asarray(np.where(mask, rs.choice(SPECIES, (batch, N_MAX)), 0), jnp.int32),
        mask=jnp.asarray(mask),
        spacegroup=jnp.ones(batch, jnp.int32),
        overflow=jnp.zeros(batch, bool),
    )


def main(quick: bool = False) -> list[dict]:
    table = load_bond_table()
    tables = chem.smact_tables()
    e_table = jnp.asarray(np.linspace(-3.0, 1.0, 119), jnp.float32)

    def energy_fn(c: Crystal):
        z = jnp.where(c.mask, c.species, 0)
        return jnp.sum(e_table[z] * c.mask) / jnp.maximum(jnp.sum(c.mask), 1), jnp.bool_(True)

    fns = {
        "bond_term": lambda c: physics.bond_term(c, table).r_bond,
        "density_term": lambda c: physics.density_term(c).r_density,
        "composition_smact": lambda c: chem.smact_valid_crystal(c, tables)[0],
        "shaft_bond_term": lambda c: physics.shaft_bond_term(c, table).r_bond,
        "chgflownet_reward": lambda c: composite.make_chgflownet_reward(energy_fn=energy_fn)(c)[0],
        "shaft_reward": lambda c: composite.make_shaft_reward(energy_fn=energy_fn)(c)[0],
    }
    batches = [1, 16, 256] if quick else [1, 16, 256, 1024]
    min_time = 0.5 if quick else 2.0
    records = []
    for name, fn in fns.items():
        jitted = jax.jit(jax.vmap(fn))
        for batch in batches:
            crystals = random_crystals(batch)
            compile_s, sec = time_jax(jitted, crystals, min_time=min_time, max_reps=200)
            records.append(record(name, batch, sec, compile_s, unit="structures", n_max=N_MAX))
    # SMACT itself on the host, per composition (the reference the JAX version reproduces)
    crystals = random_crystals(256, seed=1)
    comps = [
        {
            int(z): int(k)
            for z, k in zip(*np.unique(np.asarray(s)[np.asarray(m)], return_counts=True), strict=True)
        }
        for s, m in zip(crystals.species, crystals.mask, strict=True)
    ]
    from hgfn_jax.crystal.elements import SYMBOLS

    t0 = time.perf_counter()
    for d in comps:
        chem.smact_valid({SYMBOLS[z]: k for z, k in d.items()})
    sec = (time.perf_counter() - t0) / len(comps)
    records.append(
        record("composition_smact_host", 1, sec, 0.0, unit="structures", note="smact_validity, host")
    )
    write_results("reward_terms", records)
    return records


if __name__ == "__main__":
    main()
