"""Data-parallel training over devices with ``jax.sharding``: the batch of trajectories is split over a 1-D mesh,
parameters and optimiser state are replicated.

One program for any device count (GSPMD): the training step is the same jitted function; the only difference
is a sharding constraint on the batch of initial states (``shard_batch``), which XLA propagates through the
rollout, the reward and the loss, inserting the all-reduces of the batch means and of the gradients. The
semantics are those of the unsharded program, so a sharded run gives the unsharded run's loss and gradients up
to float reassociation (tested on 4 forced host devices, ``tests/gflownet/test_sharding.py``). Random numbers
do not depend on the sharding (``jax_threefry_partitionable``, on by default in this jax).

Where it helps: several GPUs (or several hosts after ``jax.distributed.initialize()``, whose devices then all
appear in ``jax.devices()``), with ``train.devices = N`` (``python -m experiments.train ... --devices N``). On
one CPU it changes nothing; forcing host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``) is for
testing the partitioning, not for speed.

The off-policy batch (``train.replay`` / ``train.local_search``, ``gflownet.offpolicy``) is split the same way
(fresh and replayed parts each, when their size divides evenly). Not split: a sweep's runs (``vmap``) run
replicated, with the same results; the sweep instead splits its grid (``split_leading``).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"


def data_mesh(devices: int | None) -> Mesh | None:
    """A 1-D mesh over the first ``devices`` devices (``None`` or 1: no mesh, the plain single-device program).

    Raises ``ValueError`` naming what is available when more devices are asked for than exist."""
    n = 1 if devices is None else int(devices)
    if n < 1:
        raise ValueError(f"train.devices={n}: must be >= 1")
    if n == 1:
        return None
    have = jax.devices()
    if n > len(have):
        raise ValueError(f"train.devices={n} but jax sees {len(have)} device(s) ({have[0].platform}); on a CPU, "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={n} forces {n} host devices (testing only)")
    return Mesh(np.asarray(have[:n]), (AXIS,))


def check_divisible(batch: int, mesh: Mesh | None, what: str = "train.batch_size") -> None:
    if mesh is not None and batch % mesh.size:
        raise ValueError(f"{what}={batch} must be a multiple of train.devices={mesh.size} (the batch is split "
                         "evenly over the devices)")


def shard_batch(tree: Any, mesh: Mesh | None) -> Any:
    """``tree`` (leading axis = batch) constrained to be split over the mesh; identity without a mesh. Inside jit."""
    if mesh is None:
        return tree
    spec = NamedSharding(mesh, PartitionSpec(AXIS))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, spec), tree)


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """``tree`` placed on every device of the mesh (parameters, optimiser state, keys); identity without a mesh."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def split_leading(tree: Any, mesh: Mesh | None) -> Any:
    """``tree`` (leading axis divisible by the mesh size) placed split over the mesh: e.g. a sweep's grid axis, so
    independent seeds / hyper-parameters run on different devices. Identity without a mesh."""
    if mesh is None:
        return tree
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(AXIS)))
