"""MLP policies over ``env.encode(state)`` (Crystal-GFN uses 3 x 256 forward and backward MLPs, paper 001 App. B)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hgfn_jax.gflownet.env import Environment
from hgfn_jax.gflownet.policy import Policy


class MLP(nn.Module):
    hidden: Sequence[int]
    out_dim: int
    zero_init_last: bool = True  # start from the uniform policy over valid actions

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.leaky_relu(nn.Dense(width)(x))
        init = nn.initializers.zeros if self.zero_init_last else nn.initializers.lecun_normal()
        return nn.Dense(self.out_dim, kernel_init=init)(x)


def make_mlp_policy(env: Environment, hidden: Sequence[int] = (256, 256, 256), learn_backward: bool = True) -> Policy:
    """Separate forward and backward MLPs on ``env.encode``. With ``learn_backward=False`` (or ``bwd_dim == 0``)
    the backward output is all zeros (the environment then defines a fixed P_B, e.g. uniform over parents)."""
    fwd_net = MLP(tuple(hidden), env.fwd_dim)
    use_bwd = learn_backward and env.bwd_dim > 0
    bwd_net = MLP(tuple(hidden), env.bwd_dim) if use_bwd else None
    encode = jax.vmap(env.encode)

    def init(key, states):
        obs = encode(states)
        k1, k2 = jax.random.split(key)
        params = {"fwd": fwd_net.init(k1, obs)}
        if use_bwd:
            params["bwd"] = bwd_net.init(k2, obs)
        return params

    def apply(params, states):
        obs = encode(states)
        fwd = fwd_net.apply(params["fwd"], obs)
        if use_bwd:
            bwd = bwd_net.apply(params["bwd"], obs)
        else:
            bwd = jnp.zeros((obs.shape[0], env.bwd_dim), jnp.float32)
        return fwd, bwd

    return Policy(init=init, apply=apply)
