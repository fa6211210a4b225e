"""Property distribution distances (PGCGM Table 1) and plausible cell volumes (Crystal-GFN samples).

- minD / maxD: the smallest / largest distinct-site minimum-image interatomic distance of each structure
  (pymatgen ``distance_matrix``); density in g/cm^3. Wasserstein distances (``scipy.stats.wasserstein_distance``)
  between the samples' values and the reference set's. PGCGM compares with its test set; we compare with the
  shared data set (distances on a fixed 2,000-crystal subsample, densities on all 36,737).
- volume per atom (A^3/atom): fraction of samples inside the fixed plausible range 5-100 A^3/atom and inside the
  data set's own 0.1-99.9 percentile range. Works for composition-only samples (lattice + atom count).
Samples without the quantity are left out of the Wasserstein distances (counted as ``*_n``) and count as
implausible in the volume fractions.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from hgfn_jax.metrics.reference import distance_extrema
from hgfn_jax.metrics.samples import Sample

PLAUSIBLE_VOLUME_PER_ATOM = (5.0, 100.0)  # A^3/atom


def sample_properties(samples: list[Sample]) -> dict[str, np.ndarray]:
    n = len(samples)
    mind, maxd, dens, vpa = (np.full(n, np.nan) for _ in range(4))
    for i, s in enumerate(samples):
        if s.structure is not None:
            try:
                mind[i], maxd[i] = distance_extrema(s.structure)
                dens[i] = float(s.structure.density)
            except Exception:  # noqa: BLE001
                pass
        v, na = s.volume, s.n_atoms
        if v is not None and na:
            vpa[i] = v / na
            if s.structure is None and s.composition is not None:
                dens[i] = float(s.composition.weight) / v * 1.66053906660
    return {"min_distance": mind, "max_distance": maxd, "density": dens, "volume_per_atom": vpa}


def _wd(x: np.ndarray, ref: np.ndarray) -> float:
    x, ref = x[np.isfinite(x)], ref[np.isfinite(ref)]
    return float(wasserstein_distance(x, ref)) if len(x) and len(ref) else float("nan")


def property_metrics(samples: list[Sample], reference: dict[str, np.ndarray] | None = None) -> dict:
    """Wasserstein distances against the reference set and the volume-per-atom plausibility fractions."""
    from hgfn_jax.metrics import reference as refmod

    props = sample_properties(samples)
    if reference is None:
        table = refmod.reference_table()
        reference = {"density": table["density"].to_numpy(), "volume_per_atom": table["volume_per_atom"].to_numpy()}
        if any(s.structure is not None for s in samples):  # distances need parsed reference cells (cached)
            dist = refmod.reference_distance_stats()
            reference.update(min_distance=dist["min_distance"], max_distance=dist["max_distance"])
        else:
            reference.update(min_distance=np.array([]), max_distance=np.array([]))
    n = max(len(samples), 1)
    out: dict = {}
    for k in ("min_distance", "max_distance", "density"):
        out[f"wd_{k}"] = _wd(props[k], np.asarray(reference[k], float))
        out[f"{k}_n"] = int(np.isfinite(props[k]).sum())
        out[f"{k}_mean"] = float(np.nanmean(props[k])) if out[f"{k}_n"] else float("nan")
    vpa = props["volume_per_atom"]
    lo, hi = PLAUSIBLE_VOLUME_PER_ATOM
    ref_vpa = np.asarray(reference["volume_per_atom"], float)
    rlo, rhi = np.nanpercentile(ref_vpa, [0.1, 99.9])
    ok = np.isfinite(vpa)
    out["volume_per_atom_median"] = float(np.median(vpa[ok])) if ok.any() else float("nan")
    out["plausible_volume_frac"] = float((ok & (vpa >= lo) & (vpa <= hi)).sum() / n)
    out["dataset_range_volume_frac"] = float((ok & (vpa >= rlo) & (vpa <= rhi)).sum() / n)
    out["dataset_volume_range"] = [float(rlo), float(rhi)]
    out["wd_volume_per_atom"] = _wd(vpa, ref_vpa)
    return out
