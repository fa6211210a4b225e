"""The battery buffer is sized from the allowed groups, not a fixed 96 (issue 10, sec. 3): one reference atom per
step, each at most the general multiplicity of the largest allowed group (pymatgen's operation count of the
conventional cell as the independent reference); and the overflow share is reported per group."""

import numpy as np
from pymatgen.symmetry.groups import SpaceGroup

from experiments.configs import get_config
from experiments.hierarchical import make_env, overflow_by_group, required_n_max
from hgfn_jax.crystal.types import Crystal


def _order(n: int) -> int:
    return len(SpaceGroup.from_int_number(n).symmetry_ops)


def test_default_buffer_holds_the_largest_cell():
    for exp, steps in (("chgflownet_battery", 3), ("shaft_battery", 2), ("gfn_flat_battery", 3)):
        cfg = get_config(exp, "default")
        assert cfg.env.num_steps == steps
        assert make_env(cfg).n_max == steps * _order(225)  # Fm-3m: 192 sites per general-position atom
    assert required_n_max((1, 2, 14, 62), 3) == 3 * max(_order(g) for g in (1, 2, 14, 62))


def test_overflow_share_per_group():
    n = 5
    crystals = Crystal(lattice=np.zeros((n, 6)), frac=np.zeros((n, 2, 3)), species=np.zeros((n, 2), int),
                       mask=np.ones((n, 2), bool), spacegroup=np.array([225, 225, 1, 225, 1]),
                       overflow=np.array([True, False, False, True, False]))
    out = overflow_by_group(crystals)
    assert out["share"] == 2 / 5
    assert out["share_by_group"] == {1: 0.0, 225: 2 / 3}
