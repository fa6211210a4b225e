"""Training diagnostics: how far the forward policy is from its target, and what it says about log Z.

Two kinds, both pure JAX (jit / vmap them):

- **Exact, for enumerable environments** (:class:`EnumerableTarget`): the EXACT terminal distribution of the
  on-policy P_F (no exploration, temperature 1), computed over the DAG rather than sampled, and its total variation
  to R / Z (``TV = L1 / 2``). The environment supplies the exact distribution (it knows its DAG) and the task hands
  it over as ``Task.enumerable``: for the hypergrid, ``envs.toy.hypergrid.hypergrid_terminal_distribution``
  (dynamic programming over the grid) and ``hypergrid_enumerable`` (the library's layering keeps environments out
  of ``gflownet``, so they live with the environment).
- **Estimates of log Z, for every environment**, from the log importance weights of trajectories
  ``w(tau) = log R(x) + log P_B(tau | x) - log P_F(tau)``:

  - ``log_z_elbo = mean w`` over on-policy trajectories tau ~ P_F: a LOWER bound in expectation (Jensen:
    ``E_PF[w] = log Z - KL(P_F(tau) || P_B(tau | x) R(x) / Z) <= log Z``), equal to log Z iff P_F matches the target
    trajectory distribution;
  - ``log_z_is = log mean exp w`` over the same trajectories: the importance-sampling estimate. ``mean exp w`` is
    unbiased for Z, so its log is biased low for finite batches (by Jensen) and consistent as the batch grows;
  - ``log_z_eubo = mean w`` over trajectories drawn from the TARGET (x ~ R / Z, then a backward walk with P_B): an
    UPPER bound in expectation (``log Z + KL(target || P_F) >= log Z``). Needs samples of R / Z, so it exists only
    for enumerable targets.

  The gaps ``eubo - elbo`` (a symmetrised KL) and ``log_z_is - log_z_elbo`` shrink to 0 as the sampler is trained.
  All three assume trajectories that terminate (``env.max_steps`` right); a trajectory cut short has no reward.

``make_diagnostics(task, n)`` bundles them into one jitted ``(params, key) -> {name: scalar}``; the training loop
logs it into ``metrics.csv`` every ``train.diagnostics_every`` iterations (columns ``diag/*``; 0 = off).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from hgfn_jax.gflownet.env import ON_POLICY, Environment
from hgfn_jax.gflownet.policy import PolicyApply
from hgfn_jax.gflownet.rollout import rollout


@dataclass(frozen=True)
class EnumerableTarget:
    """An environment whose terminal states can be listed: ``terminal_states`` (PyTree ``[N, ...]``, terminal
    states as the rollout ends in them), their ``log_reward`` ``[N]``, and ``terminal_distribution(policy_params)
    -> [N]``, the exact probability that the on-policy P_F terminates at each of them (same order)."""

    terminal_states: Any
    log_reward: jnp.ndarray
    terminal_distribution: Callable[[Any], jnp.ndarray]

    @property
    def log_z(self) -> jnp.ndarray:
        return jax.nn.logsumexp(self.log_reward)

    @property
    def target(self) -> jnp.ndarray:  # [N] R / Z
        return jax.nn.softmax(self.log_reward)


def total_variation(p: jnp.ndarray, q: jnp.ndarray) -> jnp.ndarray:
    """``0.5 * sum |p - q|`` (half the L1 distance)."""
    return 0.5 * jnp.sum(jnp.abs(p - q))


# ---- log Z estimates ------------------------------------------------------------------------------------------


def log_weights_on_policy(key, env: Environment, policy_apply: PolicyApply, params, v_log_reward,
                          n: int) -> jnp.ndarray:
    """``[n]`` ``log R(x) + log P_B(tau | x) - log P_F(tau)`` of ``n`` on-policy trajectories (``n`` static)."""
    traj = rollout(key, env, policy_apply, params, n, ON_POLICY)
    log_r, _ = v_log_reward(traj.final)
    return log_r + traj.sum_log_pb - traj.sum_log_pf


def log_z_from_weights(w: jnp.ndarray) -> dict:
    """``{"log_z_elbo": mean w, "log_z_is": log mean exp w}`` (see the module docstring)."""
    return {"log_z_elbo": jnp.mean(w), "log_z_is": jax.nn.logsumexp(w) - jnp.log(w.shape[0])}


def log_weights_from_target(key, env: Environment, policy_apply: PolicyApply, params, target: EnumerableTarget,
                            n: int) -> jnp.ndarray:
    """``[n]`` the same log weights for trajectories of the TARGET: ``x ~ R / Z`` from the enumeration, then a
    backward walk to ``s_0`` with P_B (``gflownet.local_search.backward_walk``; the environment needs backward
    steps). Their mean is the EUBO."""
    from hgfn_jax.gflownet.local_search import backward_walk

    k_x, k_b = jax.random.split(key)
    idx = jax.random.categorical(k_x, target.log_reward, shape=(n,))
    x = jax.tree.map(lambda a: a[idx], target.terminal_states)
    bw = backward_walk(k_b, env, policy_apply, params, x)
    n_t = bw.live.shape[1]
    flat = lambda a: jnp.reshape(a, (n * n_t,) + a.shape[2:])  # noqa: E731
    prev = jax.tree.map(flat, bw.prev)
    fwd, _ = policy_apply(params, prev)
    lpf = env.log_pf_batch(fwd, prev, jax.tree.map(flat, bw.actions)).reshape(n, n_t)
    lpf = jnp.sum(jnp.where(bw.live, lpf, 0.0), axis=1)
    return target.log_reward[idx] + jnp.sum(bw.log_pb, axis=1) - lpf


def diagnostics(key, task, params, n: int, v_log_reward=None) -> dict:
    """All diagnostics ``task`` supports, as ``{name: [] float32}``: ``log_z_elbo``, ``log_z_is`` (every task;
    ``n`` on-policy trajectories) and, with ``task.enumerable``, ``tv`` (exact), ``log_z_eubo`` (``n`` target
    trajectories) and ``log_z_true``. ``params`` is the training state's ``{"policy": ..., "log_z": ...}``."""
    env, apply = task.env, task.policy.apply
    v_log_reward = jax.vmap(task.log_reward) if v_log_reward is None else v_log_reward
    k_on, k_target = jax.random.split(key)
    out = log_z_from_weights(log_weights_on_policy(k_on, env, apply, params["policy"], v_log_reward, n))
    target = getattr(task, "enumerable", None)
    if target is not None:
        out["tv"] = total_variation(target.terminal_distribution(params["policy"]), target.target)
        out["log_z_true"] = target.log_z
        from hgfn_jax.gflownet.local_search import supports_backward

        if supports_backward(env):
            out["log_z_eubo"] = jnp.mean(log_weights_from_target(k_target, env, apply, params["policy"], target, n))
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def make_diagnostics(task, n: int) -> Callable[[Any, jax.Array], dict]:
    """``jit((params, key) -> {name: scalar})`` of :func:`diagnostics` with ``n`` trajectories per estimate."""
    return jax.jit(lambda params, key: diagnostics(key, task, params, n))
