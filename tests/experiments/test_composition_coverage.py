"""The chain-mask coverage measurement (experiments/composition_coverage.py): its reachability DP against a
brute force over element orderings, and a property of the chain mask it must reproduce on the real rule."""

import itertools

import numpy as np
import pytest

from experiments.composition_coverage import coverage, reachable
from hgfn_jax.envs.crystal_gfn import CrystalGFN


def _brute_force(valid: dict[int, bool], k: int) -> bool:
    """Some ordering of the k elements whose every prefix (as a subset bitmask) is valid."""
    for order in itertools.permutations(range(k)):
        m, ok = 0, True
        for b in order:
            m |= 1 << b
            ok &= valid[m]
        if ok:
            return True
    return False


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_reachable_matches_brute_force(k):
    rng = np.random.default_rng(k)
    for _ in range(200):
        valid = {m: bool(rng.random() < 0.6) for m in range(1, 1 << k)}
        assert reachable(valid, k) == _brute_force(valid, k)


def test_coverage_on_a_small_space():
    # chain mode: a first element is allowed iff a second can complete it, so EVERY valid 2-element composition
    # is reachable; larger ones need not be
    env = CrystalGFN(spacegroups=(1, 2, 14, 225), elements=("Li", "O", "Fe", "Mn", "S", "Cl"),
                     composition_mode="chain")
    out = coverage(env, n_groups=12, per_group=4, seed=0)
    assert out["sampled_valid"] == sum(v["sampled"] for v in out["by_num_elements"].values()) > 0
    assert 0.0 <= out["reachable_frac"] <= 1.0
    assert out["by_num_elements"][2]["sampled"] > 0 and out["by_num_elements"][2]["frac"] == 1.0
