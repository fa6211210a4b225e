"""Evaluate a run directory: ``python -m experiments.evaluate RUN_DIR [--n N] [--relaxer NAME]``.

Reads the run's samples and writes ``RUN_DIR/eval/metrics.json``, ``per_sample.csv`` and ``report.md``
(``hgfn_jax.metrics``):
- hierarchical / flat runs: ``cifs/rank_XXXXX.cif`` (top-k by reward, P1 cells); the chosen space group of rank k
  comes from ``samples.jsonl`` ranked by ``log_reward`` (the order the CIFs were written in), else spglib
  (symprec 0.1);
- Crystal-GFN runs: ``samples.jsonl`` holds composition, space group and lattice but NO atomic positions, so only
  composition-level metrics are computed (SMACT/charge validity, composition diversity, crystal-system diversity,
  composition uniqueness/novelty, volume per atom, and the hull with the run's own predicted formation energy);
  the report says so.

Training runs end with the same suite (``run_suite``, called by the task's evaluation in
``experiments/hierarchical.py`` and ``experiments/crystal_gfn.py``) with the settings of the config block
``eval.suite``; ``--set eval.suite.enabled=False`` turns it off.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
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


def evaluate_run(run_dir: str | Path, n: int | None = None, relaxer: str = "m3gnet", max_steps: int = 300,
                 time_limit: float = 60.0, relax_batch: int = 32, mode_threshold: float = 0.0,
                 fingerprints: bool = True, relax_n: int | None = None) -> dict:
    """The suite on ``run_dir`` (what the CLI runs): writes ``eval/metrics.json``, ``per_sample.csv``,
    ``report.md`` and the plots, returns the metrics. The arguments are the CLI's flags."""
    from hgfn_jax.metrics import report
    from hgfn_jax.metrics.suite import evaluate_samples

    run_dir = Path(run_dir)
    samples, pred, notes = load_run(run_dir, n)
    relax = None
    if relaxer != "none" and any(s.structure is not None for s in samples):
        from hgfn_jax.metrics.relax import make_relaxer

        relax = make_relaxer(relaxer, max_steps=max_steps, time_limit_s=time_limit, batch_size=relax_batch)
        name = relax.name
        limit = f"<= {time_limit:g} s per structure"  # m3gnet_jax: its share of each chunk's run time
        which = "" if relax_n is None or relax_n >= len(samples) else (
            f"the first {relax_n} of the {len(samples)} samples (relaxation, match rate, energy, hull and S.U.N. "
            f"are over those {relax_n}) ")
        notes.append(f"Relaxed {which}with {name} (FIRE + FrechetCellFilter, fmax 0.1 eV/A, <= {max_steps} steps, "
                     f"{limit}, batches of {relax_batch}).")
    elif relaxer == "none":
        notes.append("No relaxation (--relaxer none): no match rate; energies are of the generated structures.")
    metrics, per = evaluate_samples(samples, relaxer=relax, predicted_formation_energy=pred,
                                    fingerprints=fingerprints, relax_n=relax_n)
    from hgfn_jax.metrics import cost, modes, plots

    if (run_dir / "summary.json").exists() or (run_dir / "checkpoints").is_dir():
        metrics["cost"] = cost.cost_metrics(run_dir)
    if (run_dir / "visited.jsonl").exists():
        curve = modes.modes_curve(modes.read_visited(run_dir / "visited.jsonl"), mode_threshold)
        metrics["modes"] = {k: v.tolist() for k, v in curve.items()} | {"threshold": mode_threshold}
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
    exp = None  # the experiment's own published tables, when the run directory records it (config.json)
    if (run_dir / "config.json").exists():
        try:
            exp = json.loads((run_dir / "config.json").read_text()).get("exp")
        except (OSError, ValueError, AttributeError):
            exp = None
    (out / "report.md").write_text(report.render(metrics, run_dir.name, notes, written, exp=exp))
    return metrics


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=None, help="evaluate the first N samples (default all)")
    ap.add_argument("--relaxer", default="m3gnet", choices=["m3gnet", "m3gnet_jax", "tensornet", "none"])
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per structure")
    ap.add_argument("--relax-batch", type=int, default=32, help="structures in flight per relaxation batch")
    ap.add_argument("--relax-n", type=int, default=None,
                    help="relax only the first N samples; energy, hull and S.U.N. are then over those N")
    ap.add_argument("--mode-threshold", type=float, default=0.0,
                    help="log-reward at or above which a visited state is a mode (visited.jsonl)")
    ap.add_argument("--no-fingerprints", action="store_true", help="skip CrystalNN/Magpie diversity")
    args = ap.parse_args(argv)
    metrics = evaluate_run(args.run_dir, n=args.n, relaxer=args.relaxer, max_steps=args.max_steps,
                           time_limit=args.time_limit, relax_batch=args.relax_batch, relax_n=args.relax_n,
                           mode_threshold=args.mode_threshold, fingerprints=not args.no_fingerprints)
    out = Path(args.run_dir) / "eval"
    print(json.dumps({k: metrics[k] for k in ("n", "timing")}, indent=2))
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return metrics


def run_suite(run_dir: str | Path, suite) -> dict:
    """The suite at the end of a training run, as the CLI runs it, with the settings of the config block
    ``eval.suite`` (``enabled``, ``n``, ``relaxer``, ``max_steps``, ``fingerprints``, ``relax_n`` (relax only the
    first that many), ``mode_threshold``: the
    log-reward of a mode in the modes-vs-states-visited curve of the run's ``visited.jsonl``, default 0).
    Returns the entry merged into the run's summary:
    ``{"eval_suite": {"report", "metrics", "n", "seconds", "settings"}}``, ``{}`` when the block is absent or
    disabled. A failure inside the suite never loses the trained run: it is caught,
    printed as one warning line naming the exception, and returned as ``{"eval_suite": {"error": ...}}``; the
    samples and CIFs written before stay."""
    if suite is None or not suite.get("enabled", False):
        return {}
    run_dir = Path(run_dir)
    settings = {"n": suite.get("n"), "relaxer": suite.get("relaxer", "m3gnet"),
                "max_steps": int(suite.get("max_steps", 300)), "fingerprints": bool(suite.get("fingerprints", True)),
                "mode_threshold": float(suite.get("mode_threshold", 0.0)), "relax_n": suite.get("relax_n", None)}
    t0 = time.perf_counter()
    try:
        metrics = evaluate_run(run_dir, **settings)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - SystemExit: load_run's "no samples" exit
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        cli = (f"python -m experiments.evaluate {run_dir}" + (f" --n {settings['n']}" if settings["n"] else "")
               + f" --relaxer {settings['relaxer']} --max-steps {settings['max_steps']}"
               + ("" if settings["fingerprints"] else " --no-fingerprints")
               + (f" --relax-n {settings['relax_n']}" if settings["relax_n"] is not None else "")
               + f" --mode-threshold {settings['mode_threshold']:g}")
        print(f"warning: evaluation suite failed ({error}); the run's samples and summary are kept; retry with "
              f"{cli}", flush=True)
        return {"eval_suite": {"error": error, "settings": settings}}
    seconds = round(time.perf_counter() - t0, 2)
    print(f"evaluation report: {run_dir / 'eval' / 'report.md'} ({metrics['n']} samples, {seconds:.0f} s)",
          flush=True)
    return {"eval_suite": {"report": "eval/report.md", "metrics": "eval/metrics.json", "n": metrics["n"],
                           "seconds": seconds, "settings": settings}}


if __name__ == "__main__":
    main()
