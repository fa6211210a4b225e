"""Data sets as padded numpy arrays (see :mod:`hgfn_jax.data.mp` for the Materials Project / CGCNN set)."""

from hgfn_jax.data.mp import (
    MPDataset,
    build_cache,
    composition_counts,
    get_structure,
    iter_structures,
    load_mp,
    split,
)

__all__ = [
    "MPDataset",
    "build_cache",
    "composition_counts",
    "get_structure",
    "iter_structures",
    "load_mp",
    "split",
]
