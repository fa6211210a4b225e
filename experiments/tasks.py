"""The task builders, one per environment family: ``BUILDERS[config.builder](config) -> Task``.

A plain dict (no registration by import side effect). The crystal builders import their modules inside the
builder function, so the heavy ones (matgl, the proxies, the space-group tables) load only when their task is
built.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from hgfn_jax.gflownet.train import EvalContext, Task


def build_hypergrid(config) -> Task:
    from hgfn_jax.envs.toy.hypergrid import HyperGrid, hypergrid_enumerable, hypergrid_log_reward
    from hgfn_jax.policies.mlp import make_mlp_policy

    env = HyperGrid(ndim=config.env.ndim, side=config.env.side)

    def log_reward(state):
        return hypergrid_log_reward(state.pos, env.side), {}

    def evaluate(ctx: EvalContext) -> dict:
        pos = env.all_terminal_positions()
        target = np.exp(np.asarray([float(hypergrid_log_reward(jnp.asarray(p), env.side)) for p in pos]))
        target /= target.sum()
        idx = np.asarray(env.index(jnp.asarray(ctx.samples.pos)))
        emp = np.bincount(idx, minlength=len(target)) / len(idx)
        tv = 0.5 * float(np.abs(emp - target).sum())
        return {"total_variation": tv}

    policy = make_mlp_policy(env, config.policy.hidden)
    # every grid point has a reward (that of stopping there): FL-DB's intermediate energies, MDB's R(s)
    return Task("hypergrid", env, policy, log_reward, evaluate=evaluate, terminal_key=lambda s: s.pos,
                enumerable=hypergrid_enumerable(env, policy.apply, log_reward),
                state_log_reward=lambda s: hypergrid_log_reward(s.pos, env.side))


def build_crystal_gfn(config) -> Task:
    """Crystal-GFN (paper 001): ``experiments.crystal_gfn``."""
    from experiments.crystal_gfn import build_crystal_gfn as build

    return build(config)


def build_hierarchical(config) -> Task:
    """CHGFlowNet / SHAFT / the flat baseline (papers 000, 002): ``experiments.hierarchical``."""
    from experiments.hierarchical import build_hierarchical as build

    return build(config)


BUILDERS: dict[str, Callable] = {
    "hypergrid": build_hypergrid,
    "crystal_gfn": build_crystal_gfn,
    "hierarchical": build_hierarchical,
}


# What each builder's task supplies, known BEFORE it is built (building may load data, train a proxy or load an
# energy model: minutes), so that an objective or local search the task cannot support is refused first.
# "state_log_reward": Task.state_log_reward (fldb, mdb); "stop": env.log_pf_stop (mdb); "backward":
# env.is_initial / sample_backward (local search). The library re-checks on the built task (check_train_config);
# tests/experiments keep this table equal to what the built tasks supply.
SUPPLIES: dict[str, frozenset] = {
    "hypergrid": frozenset({"state_log_reward", "stop", "backward"}),
    "crystal_gfn": frozenset(),
    "hierarchical": frozenset({"backward"}),
}


def check_supported(config) -> None:
    """ValueError, one line, when ``config.train`` asks for what ``config.builder``'s task does not supply."""
    from hgfn_jax.gflownet.objectives import objective_from
    from hgfn_jax.gflownet.offpolicy import settings

    objective = objective_from(config.train)
    _, ls = settings(config.train)
    have = SUPPLIES.get(config.builder, frozenset())
    need = {"stop": objective.needs_stop, "state_log_reward": objective.needs_state_reward,
            "backward": bool(ls["enabled"])}
    why = {"state_log_reward": f"train.loss={objective.name!r} needs the task's log-reward at every state "
                               "(Task.state_log_reward), which",
           "stop": f"train.loss={objective.name!r} needs an environment where every state can stop "
                   "(Environment.log_pf_stop), which",
           "backward": "local search needs backward steps (is_initial, sample_backward: "
                       "train.local_search.enabled=False), which"}
    for what, needed in need.items():
        if needed and what not in have:
            raise ValueError(f"{why[what]} the {config.builder!r} task does not supply")


def build_task(config) -> Task:
    """The task ``config.builder`` names, built from ``config``."""
    if config.builder not in BUILDERS:
        raise ValueError(f"unknown task builder {config.builder!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[config.builder](config)
