"""Evaluate a run directory: ``python -m experiments.evaluate RUN_DIR [--n N] [--relaxer m3gnet|none]``.

Reads the run's samples and writes ``RUN_DIR/eval/metrics.json``, ``per_sample.csv`` and ``report.md``
(``hgfn_jax.metrics``):
- hierarchical / flat runs: ``cifs/rank_XXXXX.cif`` (top-k by reward, P1 cells); the chosen space group of rank k
  comes from ``samples.jsonl`` ranked by ``log_reward`` (the order the CIFs were written in), else spglib
  (symprec 0.1);
- Crystal-GFN runs: ``samples.jsonl`` holds composition, space group and lattice but NO atomic positions, so only
  composition-level metrics are computed (SMACT/charge validity, composition diversity, crystal-system diversity,
  composition uniqueness/novelty, volume per atom, and the hull with the run's own predicted formation energy);
  the report says so.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np


def load_run(run_dir: Path, n: int | None):
    from hgfn_jax.metrics import samples as sm

    records = []
    if (run_dir / "samples.jsonl").exists():
        with (run_dir / "samples.jsonl").open() as f:
            records = [json.loads(line) for line in f if line.strip()]
    cifs = sorted((run_dir / "cifs").glob("*.cif")) if (run_dir / "cifs").is_dir() else []
    notes = []
    if cifs:
        cifs = cifs[:n] if n else cifs
        samples = sm.from_cif_files(cifs)
        ranked = sorted(range(len(records)), key=lambda i: -float(records[i].get("log_reward", 0.0)))
        for s, p in zip(samples, cifs, strict=True):
            m = re.search(r"(\d+)", p.stem)
            k = int(m.group(1)) if m else None
            if k is not None and k < len(ranked) and "spacegroup" in records[ranked[k]]:
                s.spacegroup = int(records[ranked[k]]["spacegroup"])
            elif s.structure is not None:
                try:
                    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

                    s.spacegroup = SpacegroupAnalyzer(s.structure, symprec=0.1).get_space_group_number()
                except Exception:  # noqa: BLE001
                    s.spacegroup = None
        notes.append(f"{len(samples)} structures from {run_dir / 'cifs'} (top-ranked by reward).")
        return samples, None, notes
    if records:
        records = records[:n] if n else records
        samples = [sm.from_record(r, name=str(i)) for i, r in enumerate(records)]
        key = next((k for k in ("formation_energy", "energy") if k in records[0]), None)
        pred = np.array([float(r.get(key, math.nan)) for r in records]) if key else None
        notes.append(f"{len(samples)} composition-only samples from samples.jsonl: the generator gives composition, "
                     "space group and lattice but no atomic positions, so structure metrics (CIF/structure "
                     "validity, structure diversity, relaxation, match rate, structure uniqueness/novelty, "
                     "minD/maxD) are not computed; the hull uses the run's own predicted "
                     f"{key or 'formation energy (absent: no hull)'}.")
        return samples, pred, notes
    raise SystemExit(f"{run_dir}: neither cifs/*.cif nor samples.jsonl found")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=None, help="evaluate the first N samples (default all)")
    ap.add_argument("--relaxer", default="m3gnet", choices=["m3gnet", "tensornet", "none"])
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per structure")
    ap.add_argument("--relax-batch", type=int, default=32, help="structures in flight per relaxation batch")
    ap.add_argument("--mode-threshold", type=float, default=0.0,
                    help="log-reward at or above which a visited state is a mode (visited.jsonl)")
    ap.add_argument("--no-fingerprints", action="store_true", help="skip CrystalNN/Magpie diversity")
    args = ap.parse_args(argv)

    from hgfn_jax.metrics import report
    from hgfn_jax.metrics.suite import evaluate_samples

    run_dir = Path(args.run_dir)
    samples, pred, notes = load_run(run_dir, args.n)
    relaxer = None
    if args.relaxer != "none" and any(s.structure is not None for s in samples):
        from hgfn_jax.metrics.relax import Relaxer

        name = {"m3gnet": "M3GNet-MP-2021.2.8-PES", "tensornet": "TensorNet-MatPES-PBE-v2025.1-PES"}[args.relaxer]
        relaxer = Relaxer(name, max_steps=args.max_steps, time_limit_s=args.time_limit,
                          batch_size=args.relax_batch)
        notes.append(f"Relaxed with {name} (FIRE + FrechetCellFilter, fmax 0.1 eV/A, <= {args.max_steps} steps, "
                     f"<= {args.time_limit:g} s per structure, batches of {args.relax_batch}).")
    elif args.relaxer == "none":
        notes.append("No relaxation (--relaxer none): no match rate; energies are of the generated structures.")
    metrics, per = evaluate_samples(samples, relaxer=relaxer, predicted_formation_energy=pred,
                                    fingerprints=not args.no_fingerprints)
    from hgfn_jax.metrics import cost, modes, plots

    if (run_dir / "summary.json").exists() or (run_dir / "checkpoints").is_dir():
        metrics["cost"] = cost.cost_metrics(run_dir)
    if (run_dir / "visited.jsonl").exists():
        curve = modes.modes_curve(modes.read_visited(run_dir / "visited.jsonl"), args.mode_threshold)
        metrics["modes"] = {k: v.tolist() for k, v in curve.items()} | {"threshold": args.mode_threshold}
    metrics["notes"] = notes
    out = run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    written = plots.write_plots(out, samples, per, metrics, run_dir.name)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    cols = sorted(per)
    with (out / "per_sample.csv").open("w") as f:
        f.write("name," + ",".join(cols) + "\n")
        for i, s in enumerate(samples):
            f.write(s.name + "," + ",".join(str(per[c][i]) for c in cols) + "\n")
    (out / "report.md").write_text(report.render(metrics, run_dir.name, notes, written))
    print(json.dumps({k: metrics[k] for k in ("n", "timing")}, indent=2))
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return metrics


if __name__ == "__main__":
    main()
