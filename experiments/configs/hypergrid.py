"""Hypergrid toy (Bengio et al. 2021): a sanity check of the shared GFlowNet machinery with an exact target."""

import ml_collections


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.builder = "hypergrid"
    c.seed = 0
    c.env = ml_collections.ConfigDict(dict(ndim=2, side=8))
    c.policy = ml_collections.ConfigDict(dict(hidden=(64, 64)))
    c.train = ml_collections.ConfigDict(
        dict(batch_size=64, lr=3e-3, lr_z=0.1, num_iterations=1500, epsilon=0.1, temperature=1.0,
             steps_per_call=100, checkpoint_every=500, grad_clip=0.0, init_log_z=0.0)
    )
    c.eval = ml_collections.ConfigDict(dict(num_samples=20_000, batch_size=5_000))
    if preset == "paper":
        c.env.ndim, c.env.side = 4, 16
        c.policy.hidden = (256, 256)
        c.train.num_iterations = 20_000
    elif preset == "test":
        c.train.num_iterations = 20
        c.train.steps_per_call = 5
        c.train.checkpoint_every = 10
        c.eval.num_samples = 200
        c.eval.batch_size = 100
    return c
