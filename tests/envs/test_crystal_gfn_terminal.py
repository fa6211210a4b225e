"""The Crystal-GFN terminal record (``terminal_info``): its ``lattice`` is the cell the atom counts describe.

The R groups are sampled on rhombohedral axes (paper 001) while the counts follow the Wyckoff multiplicities of
the hexagonal-axes conventional cell (3x the volume). References: pymatgen's ``Lattice`` for the obverse
transformation (hexagonal vectors = P @ rhombohedral vectors, P = [[1,-1,0],[0,1,-1],[1,1,1]]) and pyxtal, whose
multiplicities (and random crystals built from our counts) use the hexagonal cell.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from pymatgen.core import Lattice

from hgfn_jax.envs.crystal_gfn import CrystalGFN
from hgfn_jax.gflownet.env import Exploration
from hgfn_jax.gflownet.rollout import rollout

P_OBVERSE = np.array([[1, -1, 0], [0, 1, -1], [1, 1, 1]])


def test_terminal_lattice_is_the_cell_of_the_counts():
    env = CrystalGFN(elements=("Li", "Mn", "O", "F"), spacegroups=(148, 166, 167, 225, 194), max_per_element=6,
                     max_atoms=24, angles=(50.0, 110.0))
    zero = lambda p, s: (jnp.zeros((s.stage.shape[0], env.fwd_dim)), jnp.zeros((s.stage.shape[0], env.bwd_dim)))
    final = jax.jit(lambda k: rollout(k, env, zero, None, 300, Exploration.make(1.0, 1.0)))(
        jax.random.PRNGKey(3)).final
    info = jax.device_get(jax.vmap(env.terminal_info)(final))
    groups = info["spacegroup"]
    r_rows = np.isin(groups, (148, 166, 167))
    assert r_rows.sum() > 50 and (~r_rows).sum() > 50
    for i in np.nonzero(r_rows)[0]:
        a_r, al = info["lattice_sampled"][i][[0, 3]]
        np.testing.assert_allclose(info["lattice_sampled"][i], [a_r] * 3 + [al] * 3, rtol=1e-6)
        rhomb = Lattice.from_parameters(a_r, a_r, a_r, al, al, al)
        hexa = Lattice(P_OBVERSE @ rhomb.matrix)
        np.testing.assert_allclose(info["lattice"][i], hexa.parameters, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(hexa.volume, 3 * rhomb.volume, rtol=1e-6)
    for i in np.nonzero(~r_rows)[0]:
        np.testing.assert_array_equal(info["lattice"][i], info["lattice_sampled"][i])


def test_pyxtal_builds_the_counts_in_the_hexagonal_cell():
    """pyxtal places our R-group counts in a hexagonal-axes cell: the record's lattice is in the same setting."""
    from pyxtal import pyxtal

    env = CrystalGFN(elements=("Li", "Mn", "O", "F"), spacegroups=(166,), max_per_element=6, max_atoms=24,
                     angles=(50.0, 110.0))
    zero = lambda p, s: (jnp.zeros((s.stage.shape[0], env.fwd_dim)), jnp.zeros((s.stage.shape[0], env.bwd_dim)))
    final = jax.jit(lambda k: rollout(k, env, zero, None, 20, Exploration.make(1.0, 1.0)))(
        jax.random.PRNGKey(4)).final
    info = jax.device_get(jax.vmap(env.terminal_info)(final))
    built = 0
    for i in range(5):
        species = [env.elements[e] for e in np.nonzero(info["counts"][i])[0]]
        numbers = [int(n) for n in info["counts"][i] if n > 0]
        c = pyxtal()
        try:
            c.from_random(3, 166, species, numbers)
        except Exception:  # pyxtal may fail to place atoms at random; the setting check needs only some
            continue
        para = c.lattice.get_para(degree=True)
        np.testing.assert_allclose(para[3:], [90.0, 90.0, 120.0], atol=1e-6)  # hexagonal axes
        assert len(c.to_pymatgen()) == sum(numbers)  # the counts fill that cell
        np.testing.assert_allclose(info["lattice"][i][3:], [90.0, 90.0, 120.0], atol=1e-3)
        built += 1
    assert built >= 2
