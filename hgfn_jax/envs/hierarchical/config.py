"""Configuration of the hierarchical and flat crystal environments (``HierarchicalConfig``) and its defaults."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hgfn_jax.crystal.orbit import DEFAULT_TOL

BATTERY_ELEMENTS = ("Li", "Na", "K", "Be", "B", "C", "N", "O", "Si", "P", "S", "Cl")  # paper 000, sec. 5
ALKALI = ("Li", "Na", "K")


def smallest_orbits(groups) -> np.ndarray:
    """``[len(groups)] int``: the smallest Wyckoff multiplicity (sites of the conventional cell) of each group."""
    from hgfn_jax.crystal.spacegroup import host_tables

    host = host_tables()
    return np.array([int(host["wyckoff_mult"][g][host["wyckoff_mask"][g]].min()) for g in np.asarray(groups, int)])


@dataclass(frozen=True)
class HierarchicalConfig:
    num_steps: int = 3  # T: reference atoms = hierarchical steps (3 CHGFlowNet, 2 SHAFT)
    spacegroups: tuple[int, ...] = tuple(range(1, 231))  # allowed groups
    elements: tuple[str, ...] = BATTERY_ELEMENTS  # element set (symbols)
    required_elements: tuple[str, ...] = ALKALI  # at least one of these in every terminal structure
    max_required_kinds: int = 1  # at most this many distinct required elements
    max_distinct_elements: int = 4
    n_max: int = 96  # padded cell size; larger cells are flagged (crystal.overflow)
    length_range: tuple[float, float] = (2.0, 10.0)  # Angstrom
    angle_range: tuple[float, float] = (60.0, 120.0)  # degrees
    init_lattice: tuple[float, ...] = (4.0, 4.0, 4.0, 90.0, 90.0, 90.0)
    learn_backward_group: bool = False
    orbit_tol: float = DEFAULT_TOL  # orbit merge, periodic fractional L1 (crystal.orbit: never fuses sites)
