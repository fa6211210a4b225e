"""Task builders, one per environment family (registered by name for ``config.builder``)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from experiments.registry import register
from hgfn_jax.policies.mlp import make_mlp_policy
from hgfn_jax.train import Task


@register("hypergrid")
def build_hypergrid(config) -> Task:
    from hgfn_jax.envs.toy.hypergrid import HyperGrid, hypergrid_log_reward

    env = HyperGrid(ndim=config.env.ndim, side=config.env.side)

    def log_reward(state):
        return hypergrid_log_reward(state.pos, env.side), {}

    def evaluate(samples, log_r, workdir, **_):
        pos = env.all_terminal_positions()
        target = np.exp(np.asarray([float(hypergrid_log_reward(jnp.asarray(p), env.side)) for p in pos]))
        target /= target.sum()
        idx = np.asarray(env.index(jnp.asarray(samples.pos)))
        emp = np.bincount(idx, minlength=len(target)) / len(idx)
        tv = 0.5 * float(np.abs(emp - target).sum())
        return {"total_variation": tv}

    return Task("hypergrid", env, make_mlp_policy(env, config.policy.hidden), log_reward, evaluate=evaluate)


# Crystal-GFN (paper 001) and CHGFlowNet / SHAFT / the flat baseline (papers 000, 002) register on import.
from experiments import crystal_gfn, hierarchical  # noqa: E402,F401
