"""Run in a subprocess by test_sharding.py with 4 forced host devices (XLA_FLAGS must be set before jax loads).

Prints one JSON line: for each experiment, the largest differences between the unsharded and the 4-device run
(loss per step, gradients read from Adam's first moment after step 1, parameters after 3 steps) and how the
sharded programs are partitioned."""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

from experiments.configs import get_config
from experiments.tasks import build_task
from experiments.train import apply_overrides
from hgfn_jax.gflownet.train import make_train


def _max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _max_abs(a) -> float:
    return max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(a))


def _first_moments(opt_state):
    """Adam's mu after one step is (1 - b1) * grad: the gradient, per parameter group."""
    out = {}
    for name, inner in opt_state.inner_states.items():
        for s in jax.tree.leaves(inner, is_leaf=lambda x: hasattr(x, "mu")):
            if hasattr(s, "mu"):
                out[name] = s.mu
    return out


def check(exp: str, overrides: list[str]) -> dict:
    cfg1 = apply_overrides(get_config(exp, "test"), overrides)
    cfg4 = apply_overrides(get_config(exp, "test"), overrides)
    with cfg4.unlocked():
        cfg4.train.devices = 4
    task = build_task(cfg1)
    f1, f4 = make_train(cfg1, task), make_train(cfg4, task)
    ts = f1.init(jax.random.PRNGKey(7))
    chunk1 = jax.jit(f1.run_chunk, static_argnums=1)
    chunk4 = jax.jit(f4.run_chunk, static_argnums=1)
    a1, m1 = chunk1(ts, 1)
    a4, m4 = chunk4(ts, 1)
    b1, n1 = chunk1(ts, 3)
    b4, n4 = chunk4(ts, 3)
    hlo = chunk4.lower(ts, 1).compile().as_text()
    traj = jax.jit(f4.sample, static_argnums=2)(ts.params, jax.random.PRNGKey(1), 8)
    leaf = jax.tree.leaves(traj.final)[0]
    g1, g4 = _first_moments(a1.opt_state), _first_moments(a4.opt_state)
    return {
        "loss_1": np.asarray(n1["loss"]).tolist(), "loss_4": np.asarray(n4["loss"]).tolist(),
        "grad_max_abs": _max_abs(g1), "grad_diff": _max_diff(g1, g4),
        "params_diff_3": _max_diff(b1.params, b4.params), "params_change_3": _max_diff(b1.params, ts.params),
        "first_loss_diff": abs(float(m1["loss"][0]) - float(m4["loss"][0])),
        "all_reduce_in_update": "all-reduce" in hlo,
        "sample_devices": len(leaf.sharding.device_set),
        "sample_replicated": bool(leaf.sharding.is_fully_replicated),
        "n_devices": jax.device_count(),
    }


if __name__ == "__main__":
    cases = {"hypergrid": [], "hypergrid_db": ["train.loss=db"], "crystal_gfn_fe": [],
             # replay + local search: fresh (32) and replayed (32) parts each split over the 4 devices
             "hypergrid_offpolicy": ["train.loss=mdb", "train.replay.capacity=256", "train.replay.fraction=0.5",
                                     "train.local_search.enabled=True"]}
    out = {}
    for name in sys.argv[1:]:
        exp = "hypergrid" if name.startswith("hypergrid") else name
        out[name] = check(exp, cases[name])
    print("RESULT " + json.dumps(out))
