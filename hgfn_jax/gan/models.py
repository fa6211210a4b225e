"""PGCGM generator and discriminator (paper Fig. 5) in Flax.

The paper's layer tables (Supplementary Tables S3, S4) are not in our copy; the layer sizes follow the authors'
public generation code (``width = 1.0``), our own Flax implementation. ``width`` scales every channel count
(the default preset trains a narrower model on a CPU).

Generator(Z, E, O): noise -> Dense; elements E [3, 23] -> Conv1D blocks -> Dense; affine O (192 operation slots as
channels of a 4 x 4 image, padding slots zero, masked) -> Conv2D block. [noise, elements] -> transposed
convolutions -> three sets of base sites [3 sets, 3 elements, 3] in (0, 1) (tanh, then (t + 1) / 2);
[noise, affine] -> MLP -> three lengths in (lo, hi) A (tanh rescaled), tied by the group's lattice system (a = b
tetragonal / hexagonal, a = b = c cubic: our choice, so every generated cell is one of its group).
BatchNorm in the generator (``train`` uses batch statistics and updates the running ones).

Discriminator(X, O): crystal matrix [8, 8, 3] -> seven 2x2 convolutions; O -> three 2x2 convolutions;
concatenated -> Dense -> score. No normalisation (WGAN-GP critics must not use batch statistics).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp


def _w(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


class AffineBranch(nn.Module):
    width: float = 1.0
    norm: bool = False

    @nn.compact
    def __call__(self, o, op_mask, train: bool = False):
        x = (o * op_mask[..., None, None]).transpose(0, 2, 3, 1)  # [B, 4, 4, 192]
        for c in (64, 128, 256):
            x = nn.Conv(_w(c, self.width), (2, 2), padding="VALID")(x)
            if self.norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
            x = nn.leaky_relu(x, 0.2)
        return x.reshape(x.shape[0], -1)


class Generator(nn.Module):
    width: float = 1.0
    length_range: tuple[float, float] = (2.0, 20.0)

    @nn.compact
    def __call__(self, z, props, o, op_mask, tie, train: bool = False):
        """``z [B, nz]``, ``props [B, 3, 23]``, ``o [B, 192, 4, 4]``, ``op_mask [B, 192]``, ``tie [B, 3]`` int
        (index of the length each length copies). Returns (sets [B, 3, 3, 3], lengths [B, 3])."""
        bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)  # noqa: E731
        w = self.width
        sp = AffineBranch(w, norm=True)(o, op_mask, train)
        e = props  # [B, length 3, 23 channels]
        for c in (64, 128):
            e = nn.relu(bn()(nn.Conv(_w(c, w), (2,), padding="VALID")(e)))
        e = nn.relu(bn()(nn.Dense(_w(256, w))(e.reshape(e.shape[0], -1))))
        zz = nn.relu(bn()(nn.Dense(_w(256, w))(z)))

        x = jnp.concatenate([zz, e], axis=1)[:, None, None, :]  # [B, 1, 1, 512w]
        for c, k in ((1024, 2), (512, 2), (256, 1), (128, 1), (64, 1)):
            x = nn.relu(bn()(nn.ConvTranspose(_w(c, w), (k, k), padding="VALID")(x)))
        x = jnp.tanh(nn.ConvTranspose(3, (1, 1), padding="VALID")(x))  # [B, 3 sets, 3 elements, 3]
        sets = 0.5 * (x + 1.0)

        y = jnp.concatenate([zz, sp], axis=1)
        for c in (128, 64, 32, 16):
            y = nn.relu(bn()(nn.Dense(_w(c, w))(y)))
        t = jnp.tanh(nn.Dense(3)(y))
        lo, hi = self.length_range
        raw = lo + 0.5 * (t + 1.0) * (hi - lo)
        # Tie lengths of the group's lattice system: each length becomes the mean of its tie group.
        same = (tie[:, :, None] == tie[:, None, :]).astype(raw.dtype)  # [B, 3, 3]
        lengths = jnp.einsum("bij,bj->bi", same, raw) / jnp.sum(same, axis=2)
        return sets, lengths


class Discriminator(nn.Module):
    width: float = 1.0

    @nn.compact
    def __call__(self, x, o, op_mask):
        """``x [B, 8, 8, 3]`` crystal matrix, ``o [B, 192, 4, 4]``, ``op_mask [B, 192]`` -> scores [B]."""
        w = self.width
        h = x
        for c in (16, 32, 64, 96, 128, 192, 256):
            h = nn.leaky_relu(nn.Conv(_w(c, w), (2, 2), padding="VALID")(h), 0.2)
        h = h.reshape(h.shape[0], -1)
        sp = AffineBranch(w)(o, op_mask)
        y = jnp.concatenate([h, sp], axis=1)
        y = nn.leaky_relu(nn.Dense(_w(256, w))(y), 0.2)
        return nn.Dense(1)(y)[:, 0]
