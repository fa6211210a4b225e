"""Train and evaluate PGCGM (paper 003): ``python -m experiments.pgcgm [--preset default|paper|test]``.

Same flags and guarantees as ``experiments.train`` (``--workdir``, ``--set key=value``, ``--fresh``,
``--no-progress``; runs resume from the latest checkpoint of ``runs/pgcgm-<preset>``; a work directory trained
with another config is refused). After training: generation of ``eval.num_samples`` structures (timed), cluster
+ merge of the first ``eval.evaluate``, CIFs of the first ``eval.cifs`` under ``cifs/``, the Table 1 metrics in
``summary.json`` / ``report.md`` and a plot of the property distributions in ``plots/``.

Table 1's columns here: ``cif`` = share of generated structures that survive post-processing as a readable CIF
with the intended space group kept (spglib, symprec 0.1: the paper keeps only those); ``distance`` / ``charge``
over those (the paper's denominator) and over all; Wasserstein distances of min / max interatomic distance and
density against the held-out 20 % (the paper's TST set is OQMD v1.5, not available here); diversity = unique
reduced formulas / structures kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def load_data(cfg):
    from hgfn_jax.data import pgcgm as pdata

    data = pdata.load_pgcgm()
    if cfg.data.limit is not None:
        data = data.subset(np.arange(min(int(cfg.data.limit), len(data))))
    return pdata.split_pgcgm(data, float(cfg.data.train_fraction), int(cfg.data.split_seed))


def reference_structures(data, n: int, seed: int = 0):
    """pymatgen structures of up to ``n`` crystals of ``data`` (from their base sites)."""
    from pymatgen.core import Lattice, Structure

    from hgfn_jax.crystal.elements import SYMBOLS

    lat = data.lattice()
    idx = np.random.default_rng(seed).permutation(len(data))[:n]
    return [Structure.from_spacegroup(int(data.spacegroup[i]), Lattice.from_parameters(*lat[i]),
                                      [SYMBOLS[z] for z in data.elements[i]], data.base[i].tolist()) for i in idx]


def _plot(workdir: Path, gen: dict, ref: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, k in zip(axes, ("min_distance", "max_distance", "density"), strict=True):
        for name, d in (("generated", gen), ("held-out", ref)):
            x = d[k][np.isfinite(d[k])]
            if len(x):
                ax.hist(x, bins=40, alpha=0.5, density=True, label=name)
        ax.set_title(k)
    axes[0].legend()
    (workdir / "plots").mkdir(exist_ok=True)
    fig.tight_layout()
    fig.savefig(workdir / "plots" / "properties.png", dpi=100)
    plt.close(fig)


def evaluate(cfg, workdir: Path, state, generate, train, val, progress: bool = True) -> dict:
    import jax

    from hgfn_jax.gan import generate as G
    from hgfn_jax.gan.train import make_tables
    from hgfn_jax.metrics import properties, samples, validity

    ev = cfg.eval
    tables = make_tables()
    sampler = G.make_sampler(generate, tables)
    n, bs = int(ev.num_samples), int(ev.batch_size)
    key = jax.random.fold_in(jax.random.PRNGKey(int(cfg.seed)), 10_000_019)
    gi, el = G.conditions(train, n, int(cfg.seed))
    t0 = time.perf_counter()
    jax.block_until_ready(sampler(state.g_params, state.g_stats, key, gi[:bs], el[:bs]))  # compile
    compile_s = time.perf_counter() - t0
    kept_crystals = None
    t0 = time.perf_counter()
    for i in range(0, n, bs):
        c, _ = sampler(state.g_params, state.g_stats, jax.random.fold_in(key, i), gi[i:i + bs], el[i:i + bs])
        if kept_crystals is None:
            kept_crystals = jax.device_get(c)
    jax.block_until_ready(c)
    gen_s = time.perf_counter() - t0
    m = min(int(ev.evaluate), bs, n)
    first = jax.tree.map(lambda a: a[:m], kept_crystals)
    pairs = G.to_structures(first, float(ev.merge_ratio))
    sg = tables.spacegroups[gi[:m]]
    kept, all_samples = [], []
    for j, (_raw, merged) in enumerate(pairs):
        s = samples.from_structure(merged, name=f"gen_{j:05d}", spacegroup=int(sg[j]))
        all_samples.append(s)
        if s.structure is not None and G.spacegroup_kept(s.structure, int(sg[j])):
            kept.append(s)
    cif_dir = workdir / "cifs"
    cif_dir.mkdir(parents=True, exist_ok=True)
    for s in kept[: int(ev.cifs)]:
        s.structure.to(filename=str(cif_dir / f"{s.name}-{s.spacegroup}.cif"))
    ref = [samples.from_structure(s) for s in reference_structures(val, int(ev.reference))]
    ref_props = properties.sample_properties(ref)
    out: dict = {"generated": n, "generation_seconds": gen_s, "generation_compile_seconds": compile_s,
                 "structures_per_second": n / gen_s, "evaluated": m,
                 "atoms_before_merge_mean": float(np.mean([len(r) for r, _ in pairs if r is not None] or [np.nan])),
                 "atoms_after_merge_mean": float(np.mean([len(s.structure) for s in kept] or [np.nan]))}
    out["cif_kept_frac"] = len(kept) / max(m, 1)
    for name, group in (("kept", kept), ("all", all_samples)):
        if not group:
            continue
        v = validity.validity_metrics(group)
        out[f"validity_{name}"] = {k: v[k] for k in ("distance_pgcgm", "charge_pgcgm", "structure_cdvae",
                                                     "composition_cdvae")}
    if kept:
        pm = properties.property_metrics(kept, reference=dict(ref_props))
        out["wd"] = {k: pm[f"wd_{k}"] for k in ("min_distance", "max_distance", "density")}
        out["diversity"] = len({s.composition.reduced_formula for s in kept}) / len(kept)
        _plot(workdir, properties.sample_properties(kept), ref_props)
    return out


def report(summary: dict, cfg) -> str:
    paper = {"pgcgm": (1.98, 99.54, 57.36, 0.224, 3.664, 2.675, 98.4), "dist": (7.14, 99.47, 61.82, 0.405, 0.520,
             0.765, 96.3), "dist_coor": (6.07, 99.43, 63.34, 0.357, 0.490, 0.791, 97.0)}[cfg.loss.variant]
    v = summary.get("validity_kept", {})
    wd = summary.get("wd", {})
    ours = (100 * summary.get("cif_kept_frac", 0.0), 100 * v.get("distance_pgcgm", np.nan),
            100 * v.get("charge_pgcgm", np.nan), wd.get("min_distance", np.nan), wd.get("max_distance", np.nan),
            wd.get("density", np.nan), 100 * summary.get("diversity", np.nan))
    head = "| | CIFs % | Distance % | Charge % | WD minD | WD maxD | WD density | Diversity % |"
    row = lambda name, xs: f"| {name} | " + " | ".join(f"{x:.3g}" for x in xs) + " |"  # noqa: E731
    return "\n".join([f"# PGCGM ({cfg.loss.variant}, preset {cfg.preset})", "", head, "|---" * 8 + "|",
                      row("paper (500k samples, MIO/TST)", paper),
                      row(f"ours ({summary.get('evaluated')} evaluated)", ours), ""])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", choices=("default", "paper", "test"))
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from experiments.configs import get_config
    from experiments.train import _fail, _one_line, apply_overrides
    from hgfn_jax.paths import MissingResourceError
    from hgfn_jax.rundir.checkpoint import check_resume_config

    try:
        cfg = apply_overrides(get_config("pgcgm", args.preset), args.overrides)
        workdir = Path(args.workdir) if args.workdir else (
            Path(os.environ.get("HGFN_RUNS_DIR", "runs")) / f"pgcgm-{args.preset}")
        if args.fresh and workdir.exists():
            import shutil

            shutil.rmtree(workdir)
        check_resume_config(cfg, workdir)
        from hgfn_jax.gan.train import lambdas_of

        lambdas_of(cfg.loss)
        train, val = load_data(cfg)
    except (ValueError, KeyError, TypeError, MissingResourceError) as exc:
        _fail(_one_line(exc))
    from hgfn_jax.gan.train import train_gan

    out = train_gan(cfg, workdir, train, progress=not args.no_progress)
    summary = dict(out["summary"], train_crystals=len(train), heldout_crystals=len(val))
    if summary["finished"]:
        summary.update(evaluate(cfg, workdir, out["state"], out["generate"], train, val, not args.no_progress))
        (workdir / "report.md").write_text(report(summary, cfg))
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps(summary, indent=2, default=str))
    print(f"run directory: {workdir.resolve()}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
