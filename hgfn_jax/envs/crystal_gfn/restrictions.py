"""Sampling-time restrictions of a (trained) Crystal-GFN (paper 001, sec. 6.5).

A :class:`Restrictions` narrows the environment without changing its action space, observation or policy
dimensions, so a policy trained on the full space samples the restricted space without retraining:
``env.restrict(FE_O)`` returns an environment whose masks (space groups, element caps, number of distinct
elements) and lattice box are the restricted ones. Every terminal state it produces satisfies the restriction
and the hard constraints (the masks are recomputed on the host for the restricted space, including which
space groups still admit a valid composition).

Lattice ranges follow the Mila implementation (``starling_fe_restricted_d``): the cube coordinates ``u`` are
mapped onto the restricted box, so the policy's Beta mixtures are pushed forward onto the sub-range (sampling
is not the conditional distribution of the unrestricted model). Space groups whose fixed angles (90 / 120
degrees) fall outside a restricted angle range are excluded.

The four restrictions of sec. 6.5 are provided: ``FE_O`` (A: Fe and O, at most 10 atoms per element),
``LI_MN_O`` (B: ternary Li-Mn-O, <= 16 per element, exactly three elements as in Mila's config), ``CUBIC``
(C: cubic space groups only; Mila's config also listed 194, which is hexagonal, we do not) and ``LATTICE_10_20``
(D: lengths 10-20 Angstrom, angles 75-135 degrees).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Restrictions:
    """Host-side description of a restriction; ``None`` fields keep the environment's setting."""

    elements: tuple[str, ...] | None = None  # allowed subset of the environment's elements
    max_per_element: int | Mapping[str, int] | None = None  # cap for all allowed elements, or per symbol
    min_distinct: int | None = None
    max_distinct: int | None = None
    max_atoms: int | None = None
    spacegroups: tuple[int, ...] | None = None  # allowed subset of the environment's space groups
    crystal_lattice_systems: tuple[str, ...] | None = None  # e.g. ("cubic",): names of spacegroup.py
    lengths: tuple[float, float] | None = None  # Angstrom, sub-range of the environment's
    angles: tuple[float, float] | None = None  # degrees, sub-range of the environment's

    def __post_init__(self):
        for name in ("elements", "spacegroups", "crystal_lattice_systems"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value) if isinstance(value, Sequence) else value)


FE_O = Restrictions(elements=("Fe", "O"), max_per_element=10)
LI_MN_O = Restrictions(elements=("Li", "Mn", "O"), max_per_element=16, min_distinct=3, max_distinct=3)
CUBIC = Restrictions(crystal_lattice_systems=("cubic",))
LATTICE_10_20 = Restrictions(lengths=(10.0, 20.0), angles=(75.0, 135.0))

PAPER_RESTRICTIONS = {"A_Fe-O": FE_O, "B_Li-Mn-O": LI_MN_O, "C_cubic": CUBIC, "D_lattice": LATTICE_10_20}
