"""Generation: the trained generator -> base sites -> full cells (Algorithm 1) -> merged pymatgen structures.

Algorithm 1 (unique full coordinates from base sites) is the project's jitted orbit expansion
(``hgfn_jax.crystal.orbit.expand_orbits``: masked operations, images of one base site merged within 1e-5
fractional, images of different base sites never merged), applied to the FIRST of the three generated sets,
with the group's fixed angles. Cells hold up to ``N_MAX = 3 * 192`` sites, so no generated cell overflows.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal.orbit import expand_orbits
from hgfn_jax.crystal.types import Crystal

N_MAX = 3 * 192


def expand(sets0: jnp.ndarray, species: jnp.ndarray, spacegroup: jnp.ndarray, lattice: jnp.ndarray,
           n_max: int = N_MAX) -> Crystal:
    """Batched: ``sets0 [B, 3, 3]`` base sites, ``species [B, 3]``, ``spacegroup [B]``, ``lattice [B, 6]`` ->
    padded cells ``Crystal`` with leading ``[B]``."""
    mask = jnp.ones(species.shape, bool)
    return jax.vmap(lambda f, s, m, g, lat: expand_orbits(f, s, m, g, n_max, lattice=lat))(
        sets0, species, mask, spacegroup, lattice)


def make_sampler(generate, tables, n_max: int = N_MAX):
    """``sample(g_params, g_stats, key, group_index [B], elements [B, 3]) -> (Crystal [B], sets [B, 3, 3, 3])``,
    jitted; ``generate`` from :func:`hgfn_jax.gan.train.make_gan_train`."""
    sg_t, ang_t = jnp.asarray(tables.spacegroups), jnp.asarray(tables.angles)

    @jax.jit
    def sample(g_params, g_stats, key, gi, el):
        sets, lengths = generate(g_params, g_stats, key, gi, el)
        lattice = jnp.concatenate([lengths, ang_t[gi]], axis=1)
        return expand(sets[:, 0], el, sg_t[gi], lattice, n_max), sets

    return sample


def to_structures(crystals: Crystal, merge_ratio: float | None = 0.5):
    """Host: batched numpy ``Crystal`` -> list of (structure before merging, merged structure or None)."""
    from hgfn_jax.crystal.convert import to_structure, unstack
    from hgfn_jax.gan.postprocess import merge_same_element

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in unstack(jax.device_get(crystals)):
            try:
                s = to_structure(c)
            except ValueError:
                out.append((None, None))
                continue
            out.append((s, merge_same_element(s, merge_ratio) if merge_ratio else s))
    return out


def spacegroup_kept(structure, spacegroup: int, symprec: float = 0.1) -> bool:
    """Whether spglib finds ``spacegroup`` for the structure (the paper keeps only such merged structures)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        return int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number()) == int(spacegroup)
    except Exception:  # noqa: BLE001 - spglib failure: not kept
        return False


def conditions(data, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(group_index [n], elements [n, 3])`` drawn (with replacement) from the crystals of ``data``."""
    idx = np.random.default_rng(seed).integers(0, len(data), n)
    return data.group_index[idx].astype(np.int32), data.elements[idx].astype(np.int32)
