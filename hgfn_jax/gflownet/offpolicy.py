"""The training batch when a replay buffer and / or local search is on (``config.train.replay``,
``config.train.local_search``); the training loop's hook (``gflownet.train.make_train``) calls it instead of the
plain on-policy rollout. With both off (``replay.capacity = 0``, ``local_search.enabled = False``, the default)
:func:`make_batch_source` returns None and the loop is the plain one, unchanged.

The batch of one update, for ``B = train.batch_size`` and ``n_replay = round(replay.fraction * B)``:

1. ``B - n_replay`` fresh trajectories from the (exploring) forward policy, their log-probabilities differentiable
   as in the plain loop;
2. with local search, the same number of SEARCHED trajectories (``gflownet.local_search``: each fresh one improved
   by ``local_search.n_iters`` destroy / rebuild / accept iterations), re-scored under the current parameters;
3. the fresh (and searched) trajectories are written to the buffer, THEN ``n_replay`` are drawn from it (uniform
   or reward-prioritised, ``gflownet.replay``) and re-scored. Inserting first means the buffer is never empty when
   sampled; at the very first update the replayed trajectories are copies of that update's fresh ones.

The objective is applied to the concatenation (``B`` trajectories, ``2 (B - n_replay) + n_replay`` with local
search). The log-rewards (and reward terms) of searched and replayed trajectories come from the search / the
buffer (no second reward call); the reward TERMS the loop logs are those of the fresh and searched trajectories
(the replayed ones were logged when they were fresh; rejected proposals are not logged).

With ``train.devices > 1`` (a mesh, ``gflownet.sharding``) the fresh batch's initial states and the replayed draw
are split over the devices like the plain batch (the searched trajectories inherit the fresh ones' split): each
part whose size is a multiple of the device count is split, a part that is not runs replicated, with the same
results either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from hgfn_jax.gflownet import replay as rb
from hgfn_jax.gflownet.env import Environment, Exploration
from hgfn_jax.gflownet.local_search import ACCEPT_RULES, check_backward_support, local_search
from hgfn_jax.gflownet.policy import Policy
from hgfn_jax.gflownet.rollout import Trajectory, init_states, rollout
from hgfn_jax.gflownet.sharding import shard_batch

REPLAY_DEFAULTS = {"capacity": 0, "fraction": 0.5, "prioritized": False, "beta": 1.0}
LOCAL_SEARCH_DEFAULTS = {"enabled": False, "k": 2, "n_iters": 1, "accept": "greedy"}


def _section(tc, name: str, defaults: dict) -> dict:
    got = tc.get(name, None)
    got = {} if got is None else (got.to_dict() if hasattr(got, "to_dict") else dict(got))
    unknown = set(got) - set(defaults)
    if unknown:
        raise ValueError(f"unknown train.{name} field(s) {sorted(unknown)}; known: {sorted(defaults)}")
    return {**defaults, **got}


def settings(tc, env: Environment | None = None) -> tuple[dict, dict]:
    """``(replay, local_search)`` settings of ``config.train`` with defaults filled in; ValueError on a bad one."""
    rp = _section(tc, "replay", REPLAY_DEFAULTS)
    ls = _section(tc, "local_search", LOCAL_SEARCH_DEFAULTS)
    batch = int(tc.batch_size)
    if int(rp["capacity"]) < 0:
        raise ValueError(f"train.replay.capacity must be >= 0 (0: off), got {rp['capacity']}")
    if int(rp["capacity"]) > 0:
        frac = float(rp["fraction"])
        n_replay = round(frac * batch)
        if not 0.0 <= frac < 1.0 or n_replay >= batch:
            raise ValueError(f"train.replay.fraction must be in [0, 1) and leave at least one fresh trajectory of "
                             f"the batch of {batch}, got {frac}")
        n_insert = (batch - n_replay) * (2 if ls["enabled"] else 1)
        if int(rp["capacity"]) < n_insert:
            raise ValueError(f"train.replay.capacity={rp['capacity']} is smaller than the {n_insert} trajectories "
                             f"one update inserts")
    if ls["enabled"]:
        if ls["accept"] not in ACCEPT_RULES:
            raise ValueError(f"train.local_search.accept must be one of {ACCEPT_RULES}, got {ls['accept']!r}")
        if int(ls["k"]) < 1 or int(ls["n_iters"]) < 1:
            raise ValueError(f"train.local_search needs k >= 1 and n_iters >= 1, got k={ls['k']}, "
                             f"n_iters={ls['n_iters']}")
        if env is not None:
            check_backward_support(env)
    return rp, ls


# source(params, key, buffer) -> (traj, log_r [N], terms (fresh + searched), buffer, metrics)
BatchSource = Callable[[Any, jax.Array, Any], tuple[Trajectory, jnp.ndarray, dict, Any, dict]]


def replayed_count(tc) -> int:
    """How many of an update's trajectories are drawn from the buffer (the LAST rows of the batch)."""
    rp, _ = settings(tc)
    return round(float(rp["fraction"]) * int(tc.batch_size)) if int(rp["capacity"]) else 0


def make_batch_source(tc, env: Environment, policy: Policy, v_reward, explore: Exploration, mesh=None):
    """``(init_buffer, source)`` for ``config.train`` or None when replay and local search are both off.
    ``init_buffer() -> ReplayBuffer | None``; ``mesh``: the data-parallel mesh of ``train.devices`` (or None)."""
    rp, ls = settings(tc, env)
    capacity = int(rp["capacity"])
    if capacity == 0 and not ls["enabled"]:
        return None
    batch = int(tc.batch_size)
    n_replay = replayed_count(tc)
    n_fresh = batch - n_replay
    prioritized, beta = bool(rp["prioritized"]), float(rp["beta"])

    def split(tree, n: int):  # over the mesh when n divides evenly, else replicated (same values)
        return shard_batch(tree, mesh) if mesh is not None and n % mesh.size == 0 else tree

    def init_buffer():
        if not capacity:
            return None

        def example(policy_params):
            traj = rollout(jax.random.PRNGKey(0), env, policy.apply, policy_params, 1, explore, return_states=True)
            return rb.stored_from(traj, jnp.zeros((1,), jnp.float32))

        # the slot shapes of one stored trajectory: an abstract rollout with the policy's abstract parameters
        params_shape = jax.eval_shape(policy.init, jax.random.PRNGKey(0), init_states(env, 2))
        return rb.empty(jax.eval_shape(example, params_shape), capacity)

    def source(params, key, buffer):
        k_roll, k_ls, k_rep = jax.random.split(key, 3)
        start = split(init_states(env, n_fresh), n_fresh) if mesh is not None else None
        traj = rollout(k_roll, env, policy.apply, params["policy"], n_fresh, explore, start=start,
                       return_states=True)
        log_r, terms = v_reward(jax.lax.stop_gradient(traj.final))
        log_r = jax.lax.stop_gradient(log_r)
        fresh = rb.stored_from(traj, log_r)
        trajs, log_rs, metrics = [traj], [log_r], {}
        new = [fresh]
        if ls["enabled"]:
            searched, s_terms, stats = local_search(k_ls, env, policy.apply, params["policy"], fresh, v_reward,
                                                    int(ls["k"]), int(ls["n_iters"]), str(ls["accept"]),
                                                    start_terms=terms)
            terms = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), terms, s_terms)
            trajs.append(rb.rescore(env, policy.apply, params["policy"], searched))
            log_rs.append(searched.log_r)
            new.append(searched)
            metrics.update({"ls/accept_rate": stats.accept_rate, "ls/log_reward_gain": stats.log_r_gain})
        if capacity:
            buffer = rb.insert(buffer, rb.concat(new) if len(new) > 1 else fresh)
            if n_replay:
                replayed = split(rb.sample(k_rep, buffer, n_replay, prioritized, beta), n_replay)
                trajs.append(rb.rescore(env, policy.apply, params["policy"], replayed))
                log_rs.append(replayed.log_r)
            metrics["replay/size"] = buffer.size.astype(jnp.float32)
        out = rb.concat_trajectories(trajs) if len(trajs) > 1 else traj
        return out, jnp.concatenate(log_rs), terms, buffer, metrics

    return init_buffer, source
