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
                     eform_model: str | None = None, fingerprints: bool = True,
                     relax_n: int | None = None) -> tuple[dict, dict]:
    """(metrics, per-sample arrays). ``predicted_formation_energy``: eV/atom per sample from the generator, used
    when samples have no structure. ``eform_model``: matgl Eform model for structures (default M3GNet).
    ``relax_n`` (with a relaxer): relax only the first ``relax_n`` samples (a run's top ones by reward); the
    relaxation, match rate, energy, hull and S.U.N. blocks are then over those (their ``n`` says how many), the
    other blocks over all samples. Relaxation dominates the cost (~5 s per generated cell here), so a short run
    can report every column without relaxing every sample."""
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
        # fingerprints once (over the cores), shared by the all-samples and the CDVAE-valid-only figures
        fps = diversity.structure_fingerprints([s.structure for s in samples]) if has_structures else None
        out["diversity"] = diversity.diversity_metrics(samples, structures=has_structures, structure_fps=fps)
        keep = np.flatnonzero(np.asarray(flags["valid_cdvae"], bool))
        if has_structures and len(keep) >= 2 and len(keep) < len(samples):
            d = diversity.diversity_metrics([samples[i] for i in keep], structures=True,
                                            structure_fps=[fps[i] for i in keep])
            out["diversity_cdvae_valid_only"] = {k: d[k] for k in ("structure_diversity", "composition_diversity",
                                                                   "composition_diversity_scaled") if k in d}
        timing["diversity"] = time.perf_counter() - t
    else:  # no CrystalNN / Magpie fingerprints; the crystal-system index costs nothing
        out["diversity"] = {"n": len(samples), **diversity.crystal_system_metrics(samples)}

    t = time.perf_counter()
    out["properties"] = properties.property_metrics(samples)
    timing["properties"] = time.perf_counter() - t

    m = len(samples) if relaxer is None or relax_n is None else max(0, min(int(relax_n), len(samples)))
    structures = [s.structure for s in samples][:m]  # the samples the energy blocks are over (all but relax_n)
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
        eform[:m] = relax.formation_energies(targets, eform_model or relax.DEFAULT_EFORM)
        timing["formation_energy"] = time.perf_counter() - t
        out["energy_source"] = (f"{eform_model or relax.DEFAULT_EFORM} on the "
                                f"{'relaxed' if relaxer is not None else 'generated (unrelaxed)'} structures")
    elif predicted_formation_energy is not None:
        eform = np.asarray(predicted_formation_energy, float)
        out["energy_source"] = "the generator's own predicted formation energy (composition-only samples)"
    per["formation_energy"] = eform
    eform = eform[:m]
    n = max(m, 1)
    ok = np.isfinite(eform)
    out["energy"] = {"n": m, "formation_energy_mean": float(np.mean(eform[ok])) if ok.any() else float("nan"),
                     "formation_energy_available": float(ok.sum() / n),
                     "pct_negative_formation_energy": float(100.0 * (ok & (eform < 0)).sum() / n)}
    if ok.any():
        t = time.perf_counter()
        e_hull = hull.dataset_hull().e_above_hull_many([s.composition for s in samples[:m]], eform)
        timing["hull"] = time.perf_counter() - t
        per["e_hull"] = np.concatenate([e_hull, np.full(len(samples) - m, np.nan)])
        uniq = np.asarray(masks.get("unique", masks["composition_unique"]))[:m]
        nov = np.asarray(masks.get("novel", masks["composition_novel"]))[:m]
        out["stability"] = hull.stability_metrics(e_hull, uniq, nov)
        out["stability"]["sun_level"] = "structure" if "unique" in masks else "composition"
    out["timing"] = {k: round(v, 3) for k, v in timing.items()}
    per_stage_n = {k: (m if k in ("relaxation", "match", "formation_energy", "hull") else len(samples)) for k in timing}
    out["seconds_per_sample"] = {k: round(v / max(per_stage_n[k], 1), 5) for k, v in timing.items()}
    return out, per
