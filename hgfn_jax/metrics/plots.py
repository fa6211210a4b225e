"""Plots of an evaluation (matplotlib, Agg backend), written to ``RUN_DIR/eval/*.png`` and linked from report.md.

- ``properties.png``: histograms (density-normalised) of density, minimum interatomic distance and volume per
  atom of the samples against the shared data set (distances: the fixed 2,000-crystal subsample of
  :func:`hgfn_jax.metrics.reference.reference_distance_stats`; density and volume: all crystals); the volume axis
  is logarithmic so that implausible cells (outside 5-100 A^3/atom, shaded) stay visible;
- ``e_hull.png``: energy above the data-set hull of the samples, with the stable (0) and metastable (0.1 eV/atom)
  lines;
- ``match_rate.png``: match rate against the relaxed structure for each tolerance convention, our run next to the
  published rows of paper 000 / 002 (ltol 1.0) and PGCGM (ltol 0.2).
Each plot is skipped (not written) when its data are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def property_plot(props: dict[str, np.ndarray], path: Path) -> Path | None:
    from hgfn_jax.metrics import reference
    from hgfn_jax.metrics.properties import PLAUSIBLE_VOLUME_PER_ATOM

    table = reference.reference_table()
    ref = {"density": table["density"].to_numpy(), "volume_per_atom": table["volume_per_atom"].to_numpy()}
    panels = [("density", "density (g/cm$^3$)"), ("min_distance", "min interatomic distance (A)"),
              ("volume_per_atom", "volume per atom (A$^3$/atom)")]
    if not any(np.isfinite(props[k]).any() for k, _ in panels):
        return None
    if np.isfinite(props["min_distance"]).any():
        ref["min_distance"] = reference.reference_distance_stats()["min_distance"]
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (key, label) in zip(axes, panels, strict=True):
        x = props[key][np.isfinite(props[key])]
        r = np.asarray(ref.get(key, []), float)
        r = r[np.isfinite(r)]
        if key == "volume_per_atom":
            both = np.concatenate([x, r])
            both = both[both > 0]
            bins = np.geomspace(max(both.min(), 1e-2), both.max() * 1.01, 50) if len(both) else 10
            ax.set_xscale("log")
            ax.axvspan(*PLAUSIBLE_VOLUME_PER_ATOM, color="0.9", zorder=0, label="5-100 A$^3$/atom")
        else:
            both = np.concatenate([x, r])
            bins = np.linspace(both.min(), both.max(), 50) if len(both) else 10
        if len(r):
            ax.hist(r, bins=bins, density=True, alpha=0.5, label=f"data set (n={len(r)})")
        if len(x):
            ax.hist(x, bins=bins, density=True, histtype="step", lw=1.8, label=f"samples (n={len(x)})")
        ax.set_xlabel(label)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("probability density")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def e_hull_plot(e_hull: np.ndarray | None, path: Path) -> Path | None:
    if e_hull is None or not np.isfinite(e_hull).any():
        return None
    x = e_hull[np.isfinite(e_hull)]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.hist(np.clip(x, None, np.percentile(x, 99)), bins=50)
    ax.axvline(0.0, color="k", lw=1, label="stable (0)")
    ax.axvline(0.1, color="k", ls="--", lw=1, label="metastable (0.1 eV/atom)")
    ax.set_xlabel("energy above data-set hull (eV/atom, top 1 % clipped)")
    ax.set_ylabel("samples")
    ax.set_title(f"{len(x)} of {len(e_hull)} samples with an energy", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def match_rate_plot(relaxation: dict | None, run_name: str, path: Path) -> Path | None:
    from hgfn_jax.metrics.report import PUBLISHED

    if not relaxation:
        return None
    rows = PUBLISHED["match"]["rows"]
    panels = [("match_rate_chgflownet", 1, "ltol 1.0, stol 1.0, 10 deg (papers 000/002)"),
              ("match_rate_pgcgm", 3, "ltol 0.2, stol 0.2, 0.5 deg (PGCGM, fraction)")]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (key, col, title) in zip(axes, panels, strict=True):
        names = [f"ours\n({run_name})"] + [r[0] for r in rows if r[col] is not None]
        vals = [relaxation.get(key, np.nan)] + [r[col] for r in rows if r[col] is not None]
        ax.bar(range(len(vals)), vals, color=["C3"] + ["C0"] * (len(vals) - 1))
        ax.set_xticks(range(len(vals)), names, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("match rate")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(out_dir: Path, samples, per: dict, metrics: dict, run_name: str) -> list[str]:
    """Every plot whose data exist; returns the file names written (relative to ``out_dir``)."""
    from hgfn_jax.metrics.properties import sample_properties

    out_dir.mkdir(parents=True, exist_ok=True)
    written = [property_plot(sample_properties(samples), out_dir / "properties.png"),
               e_hull_plot(per.get("e_hull"), out_dir / "e_hull.png"),
               match_rate_plot(metrics.get("relaxation"), run_name, out_dir / "match_rate.png")]
    return [p.name for p in written if p is not None]
