"""Back-and-forth local search over terminal states (LS-GFN, Kim et al. 2024, "Local Search GFlowNets", ICLR).

One iteration, for every trajectory ``tau`` of a batch (terminal state ``x``, reward ``R(x)``):

1. destroy: walk backward from ``x`` with the backward policy P_B, ``k`` steps (stopping early at ``s_0``), to a
   state ``s``: ``k = K`` under ``"greedy"`` (the paper), ``k ~ Uniform{1..K}`` under ``"mh"`` (below). The walk
   is continued to ``s_0`` so that the candidate below is a complete trajectory: its prefix ``s_0 -> s`` is the
   reverse of that P_B walk;
2. rebuild: roll out the forward policy P_F (on-policy, no exploration) from ``s`` to a terminal ``x'``;
3. accept ``x'`` (and its trajectory ``s_0 -> s -> x'``) or keep ``tau``:

   - ``"greedy"`` (the paper's deterministic filtering): accept iff ``R(x') > R(x)``. A hill climb: the chain
     piles up on local maxima of R, so the SEARCHED states are biased towards high reward by design; they are not
     distributed as R / Z. The GFlowNet trained on them is not biased at its optimum: TB / DB / SubTB are
     off-policy objectives whose fixed point (P_F's terminal distribution = R / Z) holds under any training
     distribution of full support, and the fresh on-policy samples keep the support full. Greedy search changes
     which trajectories the loss sees (more high-reward ones: faster mode discovery), not what the loss converges
     to.
   - ``"mh"``: Metropolis-Hastings with the LS-GFN acceptance ratio

         A = min(1, [R(x') P_B(x' -> s) P_F(s -> x) q(m)] / [R(x) P_B(x -> s) P_F(s -> x') q(k)]),

     the products over the destroyed (``x -> s``, ``k`` steps) and rebuilt (``s -> x'``, ``m`` steps)
     transitions, both policies evaluated with the current parameters, and ``q(j)`` the probability that the
     destroy step stops after exactly ``j`` steps at ``s``: ``1/K`` (``j <= K``), or ``(K - j + 1)/K`` when ``s``
     is ``s_0`` (the walk stopped early). A rebuild of ``m > K`` steps cannot be undone by one destroy step and is
     rejected. This is MH on (x, backward path, forward path) with the path swap as its involution, so its
     stationary distribution over x is R / Z for any fixed P_F, P_B (tested against a reward table).
     Why ``k`` is random here: with the paper's fixed ``K`` the reverse move exists only for rebuilds of exactly
     ``K`` steps, so the chain keeps the trajectory length; on a graded DAG with variable lengths (the hypergrid:
     length = coordinate sum + 1) it then never leaves the level set it starts in and is not ergodic (the test of
     the chain found this). The paper's tasks have fixed lengths, where both agree.

The training loop trains on the batch's fresh trajectories together with the searched ones (``gflownet.offpolicy``).

Backward steps are not part of the base :class:`~hgfn_jax.gflownet.env.Environment` contract (the rollout only
needs ``log_pb``). Local search needs two more pure methods of one unbatched state:

- ``is_initial(state) -> [] bool``: ``state`` is ``s_0`` (has no parent);
- ``sample_backward(key, bwd_out, state) -> (prev_state, action)``: a parent drawn from P_B(. | state) (the same
  distribution ``log_pb(bwd_out, state, action, prev_state)`` scores) and the forward action that leads from
  it to ``state`` (``step(prev_state, action) == state``). Only called where ``is_initial`` is False.

:func:`check_backward_support` raises naming the environment when they are missing (the hypergrid, the hierarchical
and the flat crystal environments have them: ``envs.hierarchical.backward``; Crystal-GFN does not).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from hgfn_jax.gflownet.env import ON_POLICY, Environment, tree_where
from hgfn_jax.gflownet.policy import PolicyApply
from hgfn_jax.gflownet.replay import Stored
from hgfn_jax.gflownet.rollout import rollout

ACCEPT_RULES = ("greedy", "mh")


def supports_backward(env: Environment) -> bool:
    return callable(getattr(env, "sample_backward", None)) and callable(getattr(env, "is_initial", None))


def check_backward_support(env: Environment) -> None:
    if not supports_backward(env):
        raise ValueError(f"local search needs backward steps, which environment {type(env).__name__} does not "
                         f"provide: it must define is_initial(state) and sample_backward(key, bwd_out, state) -> "
                         f"(prev_state, action) (see hgfn_jax.gflownet.local_search); set "
                         f"train.local_search.enabled=False")


class BackwardWalk(NamedTuple):
    prev: Any  # PyTree [B, T, ...]: the state reached by backward step j (the parent of the state before it)
    actions: Any  # PyTree [B, T, ...]: the forward action prev_j -> cur_j
    live: jnp.ndarray  # [B, T] bool: step j happened (cur_j was not s_0)
    log_pb: jnp.ndarray  # [B, T] float32: log P_B of step j (0 where not live)

    @property
    def length(self) -> jnp.ndarray:  # [B] int32
        return jnp.sum(self.live, axis=1).astype(jnp.int32)


def backward_walk(key: jax.Array, env: Environment, policy_apply: PolicyApply, params, x) -> BackwardWalk:
    """Walks every terminal state of ``x`` (PyTree ``[B, ...]``) back to ``s_0`` with P_B (``env.max_steps``
    steps at most; steps from ``s_0`` are masked)."""
    check_backward_support(env)
    n_b = jax.tree.leaves(x)[0].shape[0]
    v_initial = jax.vmap(env.is_initial)
    v_back = jax.vmap(env.sample_backward)

    def body(cur, key_t):
        live = ~v_initial(cur)
        _, bwd = policy_apply(params, cur)
        prev, act = v_back(jax.random.split(key_t, n_b), bwd, cur)
        lpb = env.log_pb_batch(bwd, cur, act, prev)
        prev = tree_where(live, prev, cur)
        act = tree_where(live, act, jax.tree.map(jnp.zeros_like, act))
        return prev, (prev, act, live, jnp.where(live, lpb, 0.0).astype(jnp.float32))

    _, (prev, act, live, lpb) = jax.lax.scan(body, x, jax.random.split(key, env.max_steps))
    swap = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731
    return BackwardWalk(jax.tree.map(swap, prev), jax.tree.map(swap, act), swap(live), swap(lpb))


def _take(x, idx):
    """``x [B, T, ...]`` gathered at ``idx [B, T]`` along the time axis."""
    idx = jnp.reshape(idx, idx.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, idx, axis=1)


def _at(x, idx):
    """``x [B, T, ...]`` at one time ``idx [B]`` per item -> ``[B, ...]``."""
    return _take(x, idx[:, None])[:, 0]


class SearchStats(NamedTuple):
    accept_rate: jnp.ndarray  # [] mean over the batch and iterations
    log_r_gain: jnp.ndarray  # [] mean log R(final) - log R(start)


def local_search(key: jax.Array, env: Environment, policy_apply: PolicyApply, params, start: Stored,
                 v_log_reward, k: int, n_iters: int, accept: str = "greedy", start_terms: dict | None = None,
                 return_history: bool = False):
    """``n_iters`` destroy / rebuild / accept iterations on every trajectory of ``start`` (see the module
    docstring). ``v_log_reward(states [B]) -> (log_r [B], terms)``. Returns ``(Stored, SearchStats)``, with
    ``start_terms`` (the reward terms of ``start``) ``(Stored, terms of the result, SearchStats)``, plus with
    ``return_history`` the proposals of every iteration (terminal states ``[n_iters, B, ...]``, their log-rewards
    and the accept flags) for measurements. No gradient flows (the searched trajectories are re-scored for
    training)."""
    check_backward_support(env)
    if accept not in ACCEPT_RULES:
        raise ValueError(f"train.local_search.accept must be one of {ACCEPT_RULES}, got {accept!r}")
    if k < 1 or n_iters < 0:
        raise ValueError(f"local search needs k >= 1 and n_iters >= 0, got k={k}, n_iters={n_iters}")
    params = jax.lax.stop_gradient(params)
    n_b, n_t = start.step_mask.shape
    t_idx = jnp.arange(n_t, dtype=jnp.int32)[None, :]

    def one(carry, key_i):
        cur, cur_terms = carry
        k_b, k_f, k_u, k_k = jax.random.split(key_i, 4)
        bw = backward_walk(k_b, env, policy_apply, params, cur.final)
        n_walk = bw.length  # L
        if accept == "greedy":  # the paper's fixed K
            kk = jnp.minimum(k, n_walk)
        else:  # k ~ U{1..K}, stopped early at s_0 (see the module docstring)
            kk = jnp.minimum(jax.random.randint(k_k, (n_b,), 1, k + 1), n_walk)
        s = _at_tree(bw.prev, kk - 1)
        s_initial = kk == n_walk
        destroyed = t_idx < kk[:, None]
        lpb_destroy = jnp.sum(jnp.where(destroyed, bw.log_pb, 0.0), axis=1)
        # P_F of the destroyed transitions in the forward direction (s -> x), one batched policy call
        flat = lambda a: jnp.reshape(a, (n_b * n_t,) + a.shape[2:])  # noqa: E731
        fwd, _ = policy_apply(params, jax.tree.map(flat, bw.prev))
        lpf_steps = env.log_pf_batch(fwd, jax.tree.map(flat, bw.prev), jax.tree.map(flat, bw.actions))
        lpf_destroy = jnp.sum(jnp.where(destroyed, jnp.reshape(lpf_steps, (n_b, n_t)), 0.0), axis=1)

        fw = rollout(k_f, env, policy_apply, params, n_b, ON_POLICY, start=s, return_states=True)
        m = fw.length
        log_r_new, terms_new = v_log_reward(fw.final)
        if accept == "greedy":
            ok = log_r_new > cur.log_r
        else:
            # the reverse move destroys exactly m steps: P(k = m) = 1/K, or P(k >= m) = (K - m + 1)/K when the walk
            # stops at s = s_0; the forward move's selection probability likewise (the 1/K cancel)
            reversible = m <= k
            log_sel = jnp.where(s_initial, jnp.log(jnp.maximum(k - m + 1, 1).astype(jnp.float32))
                                - jnp.log((k - kk + 1).astype(jnp.float32)), 0.0)
            log_a = (log_r_new + fw.sum_log_pb + lpf_destroy + log_sel) - (cur.log_r + lpb_destroy + fw.sum_log_pf)
            ok = reversible & (jnp.log(jax.random.uniform(k_u, (n_b,))) < log_a)
        ok = ok & fw.done

        # the candidate trajectory s_0 -> s (reversed backward walk) -> x' (rebuild)
        d = (n_walk - kk)[:, None]
        from_walk = t_idx < d
        i_walk = jnp.clip(n_walk[:, None] - 1 - t_idx, 0, n_t - 1)
        i_fw = jnp.clip(t_idx - d, 0, n_t - 1)
        pick = lambda w, f: jax.tree.map(  # noqa: E731
            lambda a, b: jnp.where(jnp.reshape(from_walk, from_walk.shape + (1,) * (a.ndim - 2)),
                                   _take(a, i_walk), _take(b, i_fw)), w, f)
        cand = Stored(states=pick(bw.prev, fw.states), final=fw.final, actions=pick(bw.actions, fw.actions),
                      step_mask=t_idx < (d + m[:, None]), done=fw.done, log_r=log_r_new.astype(jnp.float32))
        nxt = tree_where(ok, cand, cur)
        nxt_terms = None if cur_terms is None else tree_where(ok, terms_new, cur_terms)
        return (nxt, nxt_terms), (ok, fw.final, log_r_new)

    (end, end_terms), (oks, proposals, prop_log_r) = jax.lax.scan(one, (start, start_terms),
                                                                  jax.random.split(key, n_iters))
    stats = SearchStats(accept_rate=jnp.mean(oks.astype(jnp.float32)) if n_iters else jnp.float32(0.0),
                        log_r_gain=jnp.mean(end.log_r - start.log_r))
    out = (end, stats) if start_terms is None else (end, end_terms, stats)
    return out + ((proposals, prop_log_r, oks),) if return_history else out


def _at_tree(tree, idx):
    return jax.tree.map(lambda x: _at(x, jnp.clip(idx, 0, x.shape[1] - 1)), tree)
