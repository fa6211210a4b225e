"""Rollout throughput of the hierarchical (CHGFlowNet) and flat crystal samplers, energy model excluded.

JAX: one jitted ``rollout`` (policy + sampling + constraints + orbit expansion at every step) per batch size,
compile timed apart; ``states_per_s`` counts the transitions (2T hierarchical, T flat). Policies: ``gcn``
(default: paper 000 GCN on the orbit-reduced graph, T nodes), ``gcn_full`` (the same GCN on the full-cell
graph, N_max nodes; only small batches, it is ~50x slower), ``megnet`` (orbit-reduced MEGNet), ``deepsets``,
and a constant output (environment cost alone). Reference style: the same per-step work done the way the
papers' code does it, on the host: numpy sampling of the group, lattice and atom, then pymatgen
``Structure.from_spacegroup`` and the 4 A neighbour search for the state graph at every step (no network at
all, so it is a lower bound on the reference cost), timed on a few trajectories.

    python -m benchmarks.bench_hierarchical [--quick]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import record, time_jax, write_results
from hgfn_jax.envs.flat import FlatEnv
from hgfn_jax.envs.hierarchical import HierarchicalConfig, HierarchicalEnv
from hgfn_jax.gflownet.env import Exploration
from hgfn_jax.gflownet.rollout import init_states, rollout
from hgfn_jax.policies.hierarchical import make_hierarchical_policy


def _reference_style_trajectory(rng: np.random.Generator, cfg: HierarchicalConfig) -> int:
    """One trajectory with pymatgen per step; returns the number of sites of the final cell."""
    from pymatgen.core import Lattice, Structure

    from hgfn_jax.crystal import constraints as cons

    species, coords = [], []
    n = 0
    for _ in range(cfg.num_steps):
        g = int(rng.choice(cfg.spacegroups))
        lat = np.concatenate([rng.uniform(*cfg.length_range, 3), rng.uniform(*cfg.angle_range, 3)])
        lat = np.asarray(cons.apply_spacegroup_constraints(lat.astype(np.float32), g), float)
        species.append(str(rng.choice(cfg.elements)))
        coords.append(rng.uniform(0, 1, 3))
        s = Structure.from_spacegroup(g, Lattice.from_parameters(*lat), species, coords)
        s.get_all_neighbors(4.0)  # the state graph (k nearest neighbours within 4 A, paper 000 A.3.1)
        n = len(s)
    return n


def main(quick: bool = False):
    records = []
    cfg = HierarchicalConfig(num_steps=3, n_max=64)
    explore = Exploration.make(0.0, 1.0)
    batches = [1, 64, 1024] if quick else [1, 16, 256, 1024, 4096]
    encoder_batches = {
        "gcn": batches,
        "gcn_full": [1, 16] if quick else [1, 16, 64],
        "megnet": [1, 64] if quick else [1, 256, 1024],
        "deepsets": batches,
    }
    for name, env_cls in (("hierarchical", HierarchicalEnv), ("flat", FlatEnv)):
        env = env_cls(cfg)
        for encoder, enc_batches in encoder_batches.items():
            policy = make_hierarchical_policy(env, encoder=encoder, hidden=64)
            params = policy.init(jax.random.PRNGKey(0), init_states(env, 2))
            for batch in enc_batches:
                fn = jax.jit(
                    lambda k, b=batch, e=env, p=policy, w=params: rollout(k, e, p.apply, w, b, explore).final
                )
                compile_s, sec = time_jax(
                    fn, jax.random.PRNGKey(1), min_time=0.5 if quick else 2.0, max_reps=20 if quick else 100
                )
                records.append(
                    record(
                        f"{name}_rollout",
                        batch,
                        sec,
                        compile_s,
                        unit="trajectories",
                        states_per_s=batch * env.max_steps / sec,
                        policy=f"{encoder} hidden 64",
                        encoder=encoder,
                        num_steps=cfg.num_steps,
                        transitions=env.max_steps,
                        n_max=cfg.n_max,
                        energy_model="excluded",
                    )
                )
        # the environment alone (constant policy output: near-uniform choices), to separate env and encoder
        # cost
        zero = lambda p, s, e=env: (
            jnp.zeros((s.num_atoms.shape[0], e.fwd_dim)),
            jnp.zeros((s.num_atoms.shape[0], 0)),
        )
        for batch in batches:
            fn = jax.jit(lambda k, b=batch, e=env, z=zero: rollout(k, e, z, None, b, explore).final)
            compile_s, sec = time_jax(
                fn, jax.random.PRNGKey(1), min_time=0.5 if quick else 2.0, max_reps=20 if quick else 100
            )
            records.append(
                record(
                    f"{name}_rollout",
                    batch,
                    sec,
                    compile_s,
                    unit="trajectories",
                    states_per_s=batch * env.max_steps / sec,
                    policy="none (constant output)",
                    num_steps=cfg.num_steps,
                    transitions=env.max_steps,
                    n_max=cfg.n_max,
                    energy_model="excluded",
                )
            )
    # SHAFT's setting (T = 2, MEGNet policy) at the batches issue 17 names
    env = HierarchicalEnv(HierarchicalConfig(num_steps=2, n_max=cfg.n_max))
    policy = make_hierarchical_policy(env, encoder="megnet", hidden=64)
    params = policy.init(jax.random.PRNGKey(0), init_states(env, 2))
    for batch in [32] if quick else [32, 128]:
        fn = jax.jit(lambda k, b=batch: rollout(k, env, policy.apply, params, b, explore).final)
        compile_s, sec = time_jax(fn, jax.random.PRNGKey(1), min_time=0.5 if quick else 2.0,
                                  max_reps=20 if quick else 100)
        records.append(record("hierarchical_rollout", batch, sec, compile_s, unit="trajectories",
                              states_per_s=batch * env.max_steps / sec, policy="megnet hidden 64", encoder="megnet",
                              num_steps=2, transitions=env.max_steps, n_max=cfg.n_max, energy_model="excluded"))
    rng = np.random.default_rng(0)
    n_traj = 5 if quick else 20
    t0 = time.perf_counter()
    for _ in range(n_traj):
        _reference_style_trajectory(rng, cfg)
    sec = (time.perf_counter() - t0) / n_traj
    records.append(
        record(
            "reference_style_pymatgen",
            1,
            sec,
            0.0,
            unit="trajectories",
            states_per_s=cfg.num_steps / sec,
            policy="none (host numpy sampling)",
            num_steps=cfg.num_steps,
            note="Structure.from_spacegroup + get_all_neighbors(4 A) per step",
        )
    )
    write_results("hierarchical", records)
    return records


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    main(quick=ap.parse_args().quick)
