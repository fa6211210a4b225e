"""Diversity: CrystalNN structure fingerprints, Magpie composition fingerprints, crystal-system Shannon index.

Fingerprints (matminer, as CDVAE ``scripts/compute_metrics.py`` and paper 000 A.3.4):
- structure: ``CrystalNNFingerprint.from_preset("ops")`` of every site, averaged over the sites (61 numbers);
- composition: ``ElementProperty.from_preset("magpie")`` (132 numbers).

Diversity = mean pairwise Euclidean distance between the fingerprints of the samples (``scipy pdist`` mean).
Conventions:
- ``structure_diversity``: raw CrystalNN fingerprints (CDVAE, papers 000/002 Table 2: 0.4-1.0);
- ``composition_diversity``: RAW Magpie fingerprints (papers 000/002 Table 2 report 148-3206, the scale of raw
  Magpie features such as melting temperatures in K);
- ``composition_diversity_scaled``: CDVAE's convention, features standardised (x - mean) / std with NaN -> 0.
  CDVAE's means/stds were fitted on MP-20; we fit them on a fixed 5,000-crystal subsample of the shared data set
  (cached), so the values are close to, not identical with, CDVAE's (~12-13 on MP-20).
CDVAE computes both over the samples valid by its validity check; :func:`diversity_metrics` takes whichever
subset it is given. A sample whose fingerprint fails (CrystalNN raises) is left out and counted.

Crystal-system Shannon index (papers 000/002 "crystal family diversity"): H = -sum p log2 p over the SEVEN
crystal systems of the samples' space groups (triclinic, monoclinic, orthorhombic, tetragonal, trigonal,
hexagonal, cubic), in bits. The papers' 2.47-2.62 exceed ln 6 = 1.79 (nats over 6 families) and log2 6 = 2.585
(bits over 6 families), so only the 7 systems in bits (max log2 7 = 2.807) reach them
(``tests/metrics/test_diversity.py`` checks the bounds).
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from pymatgen.core import Composition, Structure
from scipy.spatial.distance import pdist

from hgfn_jax.metrics.samples import Sample

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
_SYSTEM_START = (1, 3, 16, 75, 143, 168, 195)  # first space group of each crystal system


def crystal_system(spacegroup: int) -> int:
    """0..6 index into CRYSTAL_SYSTEMS of a space group 1..230."""
    g = int(spacegroup)
    if not 1 <= g <= 230:
        raise ValueError(f"space group must be 1..230, got {g}")
    return int(np.searchsorted(_SYSTEM_START, g, side="right") - 1)


def shannon(labels: Sequence, base: float = 2.0) -> float:
    """Shannon index -sum p log p of the label frequencies, in log ``base`` (0 for no labels)."""
    counts = np.array(list(Counter(labels).values()), float)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / math.log(base))


def crystal_system_diversity(spacegroups: Sequence[int]) -> float:
    """Papers' crystal-family diversity: Shannon index in bits over the 7 crystal systems."""
    return shannon([crystal_system(g) for g in spacegroups], base=2.0)


@functools.cache
def _featurizers():
    from matminer.featurizers.composition.composite import ElementProperty
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    return CrystalNNFingerprint.from_preset("ops"), ElementProperty.from_preset("magpie")


# spglib tolerance (Angstrom) of the orbit reduction. Measured (tests/metrics/test_novelty_diversity.py and the
# issue-12 notes): 1e-3 merges sites of data-set crystals that are only nearly equivalent (their fingerprints differ
# by up to 1.2e-4 from the all-sites mean on 40 random data-set crystals), 1e-5 keeps the mean within 1e-6 of the
# all-sites one there (except in the bcc order parameter, see structure_fingerprint) while still finding the
# symmetry of float32-built generated cells (positions off by ~1e-6 A).
FINGERPRINT_SYMPREC = 1e-5


def _orbit_sites(s: Structure, symprec: float) -> tuple[np.ndarray, np.ndarray]:
    """(one representative site per symmetry orbit, orbit sizes); every site alone if spglib fails.
    ``angle_tolerance=-1``: spglib judges the lattice by ``symprec`` too (pymatgen's default 5 degrees would accept
    operations of a lattice that is only nearly symmetric)."""
    if symprec > 0:
        try:
            from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

            sga = SpacegroupAnalyzer(s, symprec=symprec, angle_tolerance=-1)
            eq = np.asarray(sga.get_symmetry_dataset().equivalent_atoms)
            if len(eq) == len(s):
                reps, counts = np.unique(eq, return_counts=True)
                return reps, counts
        except Exception:  # noqa: BLE001
            pass
    return np.arange(len(s)), np.ones(len(s), int)


def structure_fingerprint(s: Structure | None, symprec: float = FINGERPRINT_SYMPREC) -> np.ndarray | None:
    """Site-averaged CrystalNN fingerprint, or None when it cannot be computed.

    Symmetry-equivalent sites have identical fingerprints, so with ``symprec > 0`` one site per orbit (spglib,
    tight tolerance) is featurised and weighted by its orbit size: the same mean at a fraction of the cost for
    symmetric cells (``symprec=0`` featurises every site, as CDVAE does). Measured on the 2-core CPU: 2.5-2.9x
    faster on 40 random data-set crystals (17 sites on average), 9-19x on 40 generated cells of an untrained
    CHGFlowNet run (27 sites, 3 orbits on average); no gain on P1 cells (rattled structures: spglib adds 4 ms a
    structure, <1 %). The structure diversity of those sets moved by 1e-8 and 2e-9.

    Exactness: the all-sites mean is itself defined only up to the spread of the fingerprints of equivalent sites,
    which pymatgen's "bcc" order parameter (``body-centered cubic CN_8``) makes nonzero: it switches sign at angles
    of exactly 90 degrees and depends on the neighbours' order, so equivalent sites of an exactly symmetric cell
    can differ there by up to ~3e-4 by round-off (even in cells symmetric to 1e-9 A). The orbit-weighted mean
    differs from the all-sites mean by at most that spread in that one feature (measured up to 1.4e-4 on 100
    data-set crystals and 8e-5 on 40 generated cells) and by < 1e-6 in the other 60.
    """
    if s is None:
        return None
    cnn, _ = _featurizers()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reps, counts = _orbit_sites(s, symprec)
            fps = np.array([cnn.featurize(s, int(i)) for i in reps], float)
            fp = (fps * counts[:, None]).sum(axis=0) / counts.sum()
    except Exception:  # noqa: BLE001 - CDVAE also treats a failing fingerprint as missing
        return None
    return fp if np.all(np.isfinite(fp)) else None


@functools.lru_cache(maxsize=100000)
def _magpie(reduced: str) -> tuple[float, ...]:
    _, ep = _featurizers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(float(x) for x in ep.featurize(Composition(reduced)))


def composition_fingerprint(comp: Composition | None) -> np.ndarray | None:
    """Magpie fingerprint (132 numbers, NaN kept) of the composition, or None."""
    if comp is None:
        return None
    try:
        return np.array(_magpie(comp.reduced_formula), float)
    except Exception:  # noqa: BLE001
        return None


def mean_pairwise_distance(fps: Sequence[np.ndarray]) -> float:
    """Mean Euclidean distance over all unordered pairs (NaN with fewer than two fingerprints)."""
    x = np.asarray(list(fps), float)
    if len(x) < 2:
        return float("nan")
    return float(pdist(x).mean())


def magpie_scaler(n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(means, stds) of the Magpie features over a fixed random subsample of the shared data set (cached)."""
    from hgfn_jax.paths import cache_dir

    path = cache_dir() / f"metrics_magpie_scaler_n{n}_s{seed}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["means"], z["stds"]
    from hgfn_jax.metrics.reference import reference_table

    table = reference_table()
    rows = np.random.default_rng(seed).choice(len(table), size=min(n, len(table)), replace=False)
    x = np.array([_magpie(table["reduced_formula"].iloc[int(r)]) for r in rows], float)
    return _save_scaler(path, x)


def _save_scaler(path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        means, stds = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    means = np.where(np.isnan(means), 0.0, means)
    stds = np.where(np.isnan(stds) | (stds == 0), 1.0, stds)
    np.savez(path, means=means, stds=stds)
    return means, stds


def scale_magpie(fps: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """CDVAE's StandardScaler transform: (x - mean) / std, NaN -> 0."""
    z = (np.asarray(fps, float) - means) / stds
    return np.where(np.isnan(z), 0.0, z)


# Below this many structures the fingerprints are computed in this process (a spawned worker pays ~3-5 s of
# imports). CrystalNN is pure Python (~0.1-1 s per generated cell here), so a 1,000-structure evaluation spends
# most of its non-relaxation time in it; the workers split that over the cores.
PARALLEL_MIN = 64


def _default_workers() -> int:
    return int(os.environ.get("HGFN_EVAL_WORKERS", os.cpu_count() or 1))


def structure_fingerprints(structures: Sequence[Structure | None], symprec: float = FINGERPRINT_SYMPREC,
                           workers: int | None = None, parallel_min: int = PARALLEL_MIN) -> list[np.ndarray | None]:
    """:func:`structure_fingerprint` of every structure, in order, over ``workers`` processes (default: the
    cores, or ``HGFN_EVAL_WORKERS``) when there are at least ``parallel_min`` of them. The workers are spawned,
    never forked (the caller may hold JAX / torch threads), and run the same function, so the values are those of
    the serial loop (tested)."""
    workers = _default_workers() if workers is None else int(workers)
    structures = list(structures)
    if workers <= 1 or len(structures) < max(parallel_min, 2):
        return [structure_fingerprint(s, symprec) for s in structures]
    chunk = max(1, len(structures) // (4 * workers))
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as ex:
        return list(ex.map(functools.partial(structure_fingerprint, symprec=symprec), structures, chunksize=chunk))


def diversity_metrics(samples: list[Sample], structures: bool = True, scaled: bool = True,
                      structure_fps: Sequence[np.ndarray | None] | None = None) -> dict:
    """Structure / composition diversity and crystal-system Shannon index of ``samples``. ``structure_fps``:
    their structure fingerprints if already computed (one per sample, None where missing), e.g. by
    :func:`structure_fingerprints` once for the samples and again for a subset of them."""
    out: dict = {"n": len(samples)}
    comp_fps = [composition_fingerprint(s.composition) for s in samples]
    comp_ok = [f for f in comp_fps if f is not None]
    out["composition_fingerprint_failed"] = len(comp_fps) - len(comp_ok)
    raw = [np.where(np.isnan(f), 0.0, f) for f in comp_ok]
    out["composition_diversity"] = mean_pairwise_distance(raw)
    if scaled and comp_ok:
        means, stds = magpie_scaler()
        out["composition_diversity_scaled"] = mean_pairwise_distance(scale_magpie(np.array(comp_ok), means, stds))
    if structures:
        if structure_fps is None:
            structure_fps = structure_fingerprints([s.structure for s in samples])
        if len(structure_fps) != len(samples):
            raise ValueError(f"structure_fps: {len(structure_fps)} fingerprints for {len(samples)} samples")
        ok = [f for f, s in zip(structure_fps, samples, strict=True) if f is not None and s.structure is not None]
        out["structure_fingerprint_failed"] = len(samples) - len(ok)
        out["structure_diversity"] = mean_pairwise_distance(ok)
    return out | crystal_system_metrics(samples)


def crystal_system_metrics(samples: list[Sample]) -> dict:
    """Crystal-system Shannon index (bits) and counts of the samples' chosen groups (no fingerprints: cheap)."""
    groups = [s.spacegroup for s in samples if s.spacegroup is not None]
    return {"crystal_system_diversity_bits": crystal_system_diversity(groups) if groups else float("nan"),
            "crystal_system_counts": {CRYSTAL_SYSTEMS[k]: v for k, v in
                                      sorted(Counter(crystal_system(g) for g in groups).items())}}
