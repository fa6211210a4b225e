"""One call that runs every metric on a list of samples: ``evaluate_samples(samples, relaxer=...)``.

Stages (each timed, seconds in ``metrics["timing"]``): validity, uniqueness/novelty, diversity (without
``fingerprints`` only the crystal-system index, no CrystalNN / Magpie), properties,
relaxation (optional), formation energy (M3GNet Eform of the relaxed structure, or of the generated one when no
relaxer is given, or the generator's own prediction for composition-only samples), hull and S.U.N.
"""

from __future__ import annotations

import time

import numpy as np

from hgfn_jax.metrics import diversity, hull, novelty, properties, validity
from hgfn_jax.metrics.samples import Sample, error_counts


def evaluate_samples(samples: list[Sample], relaxer=None, predicted_formation_energy: np.ndarray | None = None,
                     eform_model: str | None = None, fingerprints: bool = True) -> tuple[dict, dict]:
    """(metrics, per-sample arrays). ``predicted_formation_energy``: eV/atom per sample from the generator, used
    when samples have no structure. ``eform_model``: matgl Eform model for structures (default M3GNet)."""
    from hgfn_jax.metrics import relax

    timing: dict[str, float] = {}
    per: dict[str, np.ndarray] = {}
    has_structures = any(s.structure is not None for s in samples)
    out: dict = {"n": len(samples), "n_with_structure": int(sum(s.structure is not None for s in samples)),
                 "input_errors": error_counts(samples)}

    t = time.perf_counter()
    flags = validity.validity_flags(samples, reward_rule=True)
    out["validity"] = validity.validity_metrics(samples, flags)
    out["validity"].pop("errors", None)
    per.update({f"valid_{k}": v for k, v in flags.items()})
    timing["validity"] = time.perf_counter() - t

    t = time.perf_counter()
    out["novelty"], masks = novelty.uniqueness_novelty_metrics(samples, with_structures=has_structures)
    per.update(masks)
    timing["novelty"] = time.perf_counter() - t

    if fingerprints:
        t = time.perf_counter()
        out["diversity"] = diversity.diversity_metrics(samples, structures=has_structures)
        valid = [s for s, ok in zip(samples, flags["valid_cdvae"], strict=True) if ok]
        if has_structures and len(valid) >= 2 and len(valid) < len(samples):
            d = diversity.diversity_metrics(valid, structures=True)
            out["diversity_cdvae_valid_only"] = {k: d[k] for k in ("structure_diversity", "composition_diversity",
                                                                   "composition_diversity_scaled") if k in d}
        timing["diversity"] = time.perf_counter() - t
    else:  # no CrystalNN / Magpie fingerprints; the crystal-system index costs nothing
        out["diversity"] = {"n": len(samples), **diversity.crystal_system_metrics(samples)}

    t = time.perf_counter()
    out["properties"] = properties.property_metrics(samples)
    timing["properties"] = time.perf_counter() - t

    structures = [s.structure for s in samples]
    eform = np.full(len(samples), np.nan)
    if has_structures:
        if relaxer is not None:
            t = time.perf_counter()
            results = relaxer.relax_many(structures)
            timing["relaxation"] = time.perf_counter() - t
            t = time.perf_counter()
            out["relaxation"] = relax.relaxation_metrics(structures, results)
            out["relaxation"]["potential"] = relaxer.name
            timing["match"] = time.perf_counter() - t
            targets = [r.structure for r in results]
        else:
            targets = structures
        t = time.perf_counter()
        eform = relax.formation_energies(targets, eform_model or relax.DEFAULT_EFORM)
        timing["formation_energy"] = time.perf_counter() - t
        out["energy_source"] = (f"{eform_model or relax.DEFAULT_EFORM} on the "
                                f"{'relaxed' if relaxer is not None else 'generated (unrelaxed)'} structures")
    elif predicted_formation_energy is not None:
        eform = np.asarray(predicted_formation_energy, float)
        out["energy_source"] = "the generator's own predicted formation energy (composition-only samples)"
    per["formation_energy"] = eform
    n = max(len(samples), 1)
    ok = np.isfinite(eform)
    out["energy"] = {"formation_energy_mean": float(np.mean(eform[ok])) if ok.any() else float("nan"),
                     "formation_energy_available": float(ok.sum() / n),
                     "pct_negative_formation_energy": float(100.0 * (ok & (eform < 0)).sum() / n)}
    if ok.any():
        t = time.perf_counter()
        e_hull = hull.dataset_hull().e_above_hull_many([s.composition for s in samples], eform)
        timing["hull"] = time.perf_counter() - t
        per["e_hull"] = e_hull
        uniq = masks.get("unique", masks["composition_unique"])
        nov = masks.get("novel", masks["composition_novel"])
        out["stability"] = hull.stability_metrics(e_hull, uniq, nov)
        out["stability"]["sun_level"] = "structure" if "unique" in masks else "composition"
    out["timing"] = {k: round(v, 3) for k, v in timing.items()}
    out["seconds_per_sample"] = {k: round(v / n, 5) for k, v in timing.items()}
    return out, per
