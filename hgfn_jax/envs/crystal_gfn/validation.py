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
