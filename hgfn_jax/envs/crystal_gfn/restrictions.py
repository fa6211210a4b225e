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

import numpy as np

from hgfn_jax.crystal import constraints as cons
from hgfn_jax.crystal import spacegroup as sgm
from hgfn_jax.envs.crystal_gfn.validation import nonneg_int, positive_int, validate_range


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


@dataclasses.dataclass(frozen=True)
class ResolvedRestrictions:
    """The environment's settings after a :class:`Restrictions` (host arrays; checked by :func:`resolve`)."""

    element_caps: np.ndarray  # [E] int64: atoms allowed per element (0: element excluded)
    min_distinct: int
    max_distinct: int
    max_atoms: int
    spacegroup_allowed: np.ndarray  # [G] bool: groups kept (restriction, fixed angles in range, orbit fits)
    lengths: tuple[float, float]  # Angstrom
    angles: tuple[float, float]  # degrees


def resolve(
    r: Restrictions | None,
    elements: tuple[str, ...],
    spacegroups: np.ndarray,
    cap: int,
    min_distinct: int,
    max_distinct: int,
    max_atoms: int,
    lengths: tuple[float, float],
    angles: tuple[float, float],
) -> ResolvedRestrictions:
    """Applies ``r`` to the (validated) environment settings; a restriction may only narrow them. Raises one
    ``ValueError`` naming the problem (unknown element or group, a cap above the environment's, no group whose
    smallest orbit fits ``max_atoms``)."""
    r = r or Restrictions()
    n_el = len(elements)
    element_caps = np.full(n_el, cap, np.int64)
    if r.elements is not None:
        unknown = [s for s in r.elements if s not in elements]
        if unknown:
            raise ValueError(f"restricted elements {unknown} are not among the environment's {elements}")
        element_caps[[i for i, s in enumerate(elements) if s not in r.elements]] = 0
    if r.max_per_element is not None:
        if isinstance(r.max_per_element, Mapping):
            for s, c in r.max_per_element.items():
                if s not in elements:
                    raise ValueError(f"cap given for unknown element {s!r}")
                element_caps[elements.index(s)] = min(element_caps[elements.index(s)],
                                                           nonneg_int(f"cap of {s}", c))
        else:
            element_caps = np.minimum(element_caps, positive_int("max_per_element", r.max_per_element))
    if np.any(element_caps > cap):
        raise ValueError(f"a restricted cap exceeds the environment's max_per_element={cap}")
    r_min = min_distinct if r.min_distinct is None else positive_int("min_distinct", r.min_distinct)
    r_max = max_distinct if r.max_distinct is None else positive_int("max_distinct", r.max_distinct)
    r_atoms = max_atoms if r.max_atoms is None else positive_int("max_atoms", r.max_atoms)
    if r_max > max_distinct or r_atoms > max_atoms:
        raise ValueError("a restriction may not enlarge max_distinct or max_atoms")
    if r.max_distinct is None:
        r_max = min(r_max, int(np.sum(element_caps > 0)))
    if not r_min <= r_max <= int(np.sum(element_caps > 0)):
        raise ValueError(
            f"restricted min_distinct={r_min}, max_distinct={r_max} impossible with "
            f"{int(np.sum(element_caps > 0))} allowed elements"
        )
    sg_allowed = np.ones(len(spacegroups), bool)
    if r.spacegroups is not None:
        unknown = [g for g in r.spacegroups if g not in spacegroups]
        if unknown:
            raise ValueError(f"restricted space groups {unknown} are not among the environment's list")
        sg_allowed &= np.isin(spacegroups, np.asarray(r.spacegroups))
    host = sgm.host_tables()
    if r.crystal_lattice_systems is not None:
        names = sgm.CRYSTAL_LATTICE_SYSTEMS
        bad = [c for c in r.crystal_lattice_systems if c not in names]
        if bad:
            raise ValueError(f"unknown crystal-lattice systems {bad}; choose from {names}")
        ids = [names.index(c) for c in r.crystal_lattice_systems]
        sg_allowed &= np.isin(host["crystal_lattice_system"][spacegroups], ids)
    low_len, high_len = lengths if r.lengths is None else validate_range("lengths", r.lengths, *lengths)
    low_ang, high_ang = angles if r.angles is None else validate_range("angles", r.angles, *angles)
    # fixed angles of each lattice system must lie in the (restricted) angle range
    ls = host["lattice_system"][spacegroups]
    fixed_ok = np.all(
        ~cons.FIXED_MASK[ls] | ((cons.FIXED_VALUE[ls] >= low_ang) & (cons.FIXED_VALUE[ls] <= high_ang)), axis=1
    )
    sg_allowed &= fixed_ok
    # a cell cannot hold fewer atoms than its group's smallest orbit (Wyckoff multiplicity): say so up front
    orbit_min = np.array([int(host["wyckoff_mult"][g][host["wyckoff_mask"][g]].min()) for g in spacegroups])
    if sg_allowed.any() and np.all(orbit_min[sg_allowed] > r_atoms):
        g_min = spacegroups[sg_allowed][np.argmin(orbit_min[sg_allowed])]
        raise ValueError(
            f"max_atoms={r_atoms} is below the smallest orbit of every allowed space group (the smallest is "
            f"{int(orbit_min[sg_allowed].min())} sites, group {int(g_min)}): no composition fits; raise "
            "max_atoms or allow other space groups"
        )
    return ResolvedRestrictions(element_caps=element_caps, min_distinct=r_min, max_distinct=r_max, max_atoms=r_atoms,
                                spacegroup_allowed=sg_allowed, lengths=(low_len, high_len), angles=(low_ang, high_ang))
