"""Argument checks of the Crystal-GFN environment and its restrictions: one clear ``ValueError`` naming the
argument, raised on construction (before any table is built or anything is compiled)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hgfn_jax.crystal import elements as elm
from hgfn_jax.crystal import spacegroup as sgm


def validate_elements(elements: Sequence[str]) -> tuple[str, ...]:
    if isinstance(elements, str) or len(elements) == 0:
        raise ValueError(f"elements must be a non-empty sequence of symbols, got {elements!r}")
    out = []
    for s in elements:
        try:
            elm.atomic_number(s)
        except ValueError:
            raise ValueError(f"unknown element symbol {s!r}") from None
        out.append(str(s))
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate elements in {out}")
    return tuple(out)


def validate_spacegroups(groups: Sequence[int]) -> np.ndarray:
    if len(groups) == 0:
        raise ValueError("spacegroups must be a non-empty sequence of international numbers 1..230")
    out = [sgm.validate_spacegroup(g) for g in groups]
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate space groups in {out}")
    return np.asarray(sorted(out), np.int32)


def positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def nonneg_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    return int(v)


def validate_range(name: str, rng, lo: float, hi: float) -> tuple[float, float]:
    a, b = (float(x) for x in rng)
    if not (lo <= a < b <= hi) or (lo == 0.0 and a <= 0.0):
        raise ValueError(f"{name} range must satisfy {lo} < low < high <= {hi}, got ({a}, {b})")
    return a, b


def validate_sizes(n_el: int, max_per_element, max_atoms, min_distinct, max_distinct, lengths, angles, min_incr,
                   n_comp, beta_min, beta_max) -> tuple[int, int, int, int, tuple[float, float], tuple[float, float]]:
    """The environment's size and range arguments, checked: ``(cap, max_atoms, min_distinct, max_distinct,
    lengths, angles)``; ``max_distinct`` above the number of elements ``n_el`` is lowered to it (it does not bind)."""
    cap = positive_int("max_per_element", max_per_element)
    max_atoms = positive_int("max_atoms", max_atoms)
    min_distinct = positive_int("min_distinct", min_distinct)
    max_distinct = min(positive_int("max_distinct", max_distinct), n_el)
    if not min_distinct <= max_distinct <= n_el:
        raise ValueError(
            f"need 1 <= min_distinct <= max_distinct <= number of elements ({n_el}), "
            f"got min_distinct={min_distinct}, max_distinct={max_distinct}"
        )
    if max_atoms < min_distinct:
        raise ValueError(f"max_atoms={max_atoms} cannot hold min_distinct={min_distinct} elements")
    lengths = validate_range("lengths", lengths, 0.0, np.inf)
    angles = validate_range("angles", angles, 0.0, 180.0)
    if not 0.0 < min_incr < 1.0:
        raise ValueError(f"min_incr must be in (0, 1), got {min_incr}")
    if n_comp < 1 or not 0.0 < beta_min or not 0.0 < beta_max:
        raise ValueError(f"need n_comp >= 1 and positive beta_min/beta_max, got {n_comp}, {beta_min}, {beta_max}")
    return cap, max_atoms, min_distinct, max_distinct, lengths, angles
