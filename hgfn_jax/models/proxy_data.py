"""Training data of the Crystal-GFN proxies: the shared Materials Project set reduced to proxy inputs.

Each structure becomes (element counts by Z, space group, six lattice parameters). With ``cell="conventional"``
(default) the cell is spglib's conventional standard cell at ``symprec`` (0.1, the data set's space-group
tolerance) and the space group is spglib's, so the proxy sees the same setting as a Crystal-GFN sample built from
Wyckoff multiplicities; ``"stored"`` keeps the cell of the CIF (mostly primitive) and the loader's space group.
The reduced arrays are cached as npz in ``cache_dir()/proxies``; the split is ``hgfn_jax.data.mp.split``
(80/10/10, seed 0).

The host-side lattice maths here (``lattice_matrix``, ``matrix_to_params``) is float64 numpy with a along x, as
the cached data were built: ``crystal.lattice``'s functions are float32 JAX in pymatgen's orientation, and
spglib's standard cell, hence the training data and the trained proxy, would change in the last bits.

One-off reduction (spglib on 36,737 structures): about 3.9 CPU-s per 1,000 structures (~2.4 CPU-min).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from hgfn_jax.crystal.elements import NUM_ELEMENTS
from hgfn_jax.models.proxy_config import FEATURE_VERSION, TARGETS


@dataclass(frozen=True)
class ProxyData:
    """Proxy inputs and labels of M crystals (numpy)."""

    counts: np.ndarray  # [M, 119] float32 atoms per element (index = Z)
    spacegroup: np.ndarray  # [M] int32 1..230
    lattice: np.ndarray  # [M, 6] float32 a, b, c (A), alpha, beta, gamma (deg)
    formation_energy: np.ndarray  # [M] float32 eV/atom
    band_gap: np.ndarray  # [M] float32 eV

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def target(self, name: str) -> np.ndarray:
        if name not in TARGETS:
            raise ValueError(f"unknown proxy target {name!r}; expected one of {TARGETS}")
        return getattr(self, name)

    def take(self, idx: np.ndarray) -> ProxyData:
        idx = np.asarray(idx)
        return ProxyData(*(np.asarray(getattr(self, f))[idx] for f in self.__dataclass_fields__))


def lattice_matrix(params: np.ndarray) -> np.ndarray:
    """[..., 3, 3] row vectors of cells (a, b, c, alpha, beta, gamma); a along x, b in the xy plane."""
    p = np.asarray(params, dtype=np.float64)
    a, b, c = p[..., 0], p[..., 1], p[..., 2]
    al, be, ga = (np.deg2rad(p[..., i]) for i in (3, 4, 5))
    cx = c * np.cos(be)
    cy = c * (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    cz = np.sqrt(np.maximum(c**2 - cx**2 - cy**2, 0.0))
    zero = np.zeros_like(a)
    rows = [
        np.stack([a, zero, zero], -1),
        np.stack([b * np.cos(ga), b * np.sin(ga), zero], -1),
        np.stack([cx, cy, cz], -1),
    ]
    return np.stack(rows, -2)


def matrix_to_params(m: np.ndarray) -> np.ndarray:
    """[6] (a, b, c, alpha, beta, gamma) of a [3, 3] row-vector lattice matrix."""
    m = np.asarray(m, dtype=np.float64)
    lengths = np.linalg.norm(m, axis=-1)

    def ang(i, j):
        cosv = np.dot(m[i], m[j]) / (lengths[i] * lengths[j])
        return np.rad2deg(np.arccos(np.clip(cosv, -1.0, 1.0)))

    return np.array([*lengths, ang(1, 2), ang(0, 2), ang(0, 1)])


def _conventional_row(args):
    """(params [6], counts [119], space group, ok) of spglib's conventional standard cell of one structure."""
    lat6, frac, species, sg, symprec = args
    import spglib

    cell = (lattice_matrix(lat6), frac, species)
    try:
        ds = spglib.get_symmetry_dataset(cell, symprec=symprec, angle_tolerance=5.0)  # as pymatgen
    except Exception:
        ds = None
    if ds is None:
        counts = np.bincount(species, minlength=NUM_ELEMENTS)
        return lat6, counts, sg, False
    counts = np.bincount(np.asarray(ds.std_types), minlength=NUM_ELEMENTS)
    return matrix_to_params(ds.std_lattice), counts, int(ds.number), True


def _map_in_processes(fn, jobs: list, workers: int) -> list | None:
    """``[fn(j) for j in jobs]`` in ``workers`` spawned processes; None if impossible (then run serially).

    Spawn (never fork a process that runs JAX threads) re-imports ``__main__`` in each worker; when that main
    module is an unguarded script calling this code, the nested call refuses (RuntimeError in the worker) and
    the broken pool makes the parent fall back to the serial path instead of recursing.
    """
    import concurrent.futures as cf
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        raise RuntimeError("proxy data preparation called inside a worker process (unguarded __main__?)")
    try:
        ctx = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            from tqdm.auto import tqdm

            it = pool.map(fn, jobs, chunksize=256)
            return list(tqdm(it, total=len(jobs), desc="proxy data: spglib cells", unit="cell", mininterval=1.0))
    except (cf.process.BrokenProcessPool, RuntimeError, OSError):
        return None


def _load_dataset():
    from hgfn_jax.data import mp

    return mp.load_mp(n_max=mp.MAX_SITES)


def build_proxy_data(
    dataset, cell: str = "conventional", symprec: float = 0.1, workers: int = 1
) -> ProxyData:
    """Reduce an ``MPDataset`` to proxy inputs. ``cell="conventional"`` runs spglib on every structure."""
    species = np.asarray(dataset.species)
    mask = np.asarray(dataset.mask)
    lattice = np.asarray(dataset.lattice, dtype=np.float64)
    sg = np.asarray(dataset.spacegroup, dtype=np.int32)
    fe = np.asarray(dataset.formation_energy, dtype=np.float32)
    bg = np.asarray(dataset.band_gap, dtype=np.float32)
    m = species.shape[0]
    if cell == "stored":
        counts = np.zeros((m, NUM_ELEMENTS), np.float32)
        rows = np.repeat(np.arange(m), species.shape[1])
        np.add.at(counts, (rows, species.reshape(-1)), mask.reshape(-1).astype(np.float32))
        counts[:, 0] = 0.0
        return ProxyData(counts, sg, lattice.astype(np.float32), fe, bg)
    if cell != "conventional":
        raise ValueError(f"cell must be 'conventional' or 'stored', got {cell!r}")
    frac = np.asarray(dataset.frac, dtype=np.float64)
    jobs = (
        (lattice[i], frac[i][mask[i]], species[i][mask[i]].astype(np.int64), int(sg[i]), symprec)
        for i in range(m)
    )
    jobs = list(jobs)
    # spglib's C library prints "ssm_get_exact_positions failed." for cells it cannot symmetrise (dozens on the
    # data set); those are counted in the one warning below instead. Spawned workers inherit the setting.
    os.environ.setdefault("SPGLIB_WARNING", "OFF")
    out = None
    if workers > 1 and len(jobs) >= 512:
        out = _map_in_processes(_conventional_row, jobs, workers)
    if out is None:
        out = [_conventional_row(j) for j in jobs]
    lat = np.stack([o[0] for o in out]).astype(np.float32)
    counts = np.stack([o[1] for o in out]).astype(np.float32)
    counts[:, 0] = 0.0
    sg_out = np.asarray([o[2] for o in out], np.int32)
    failed = sum(not o[3] for o in out)
    if failed:
        import warnings

        warnings.warn(
            f"spglib found no symmetry for {failed} structures: their stored cells are used", stacklevel=2
        )
    return ProxyData(counts, sg_out, lat, fe, bg)


def load_proxy_data(cell: str = "conventional", symprec: float = 0.1, verbose: bool = True) -> ProxyData:
    """The whole shared data set as ``ProxyData`` (npz cache in ``cache_dir()/proxies``, loader row order)."""
    from hgfn_jax import paths
    from hgfn_jax.data import mp

    cache = paths.cache_dir() / "proxies" / f"data-{cell}-sp{symprec:g}-v{FEATURE_VERSION}.npz"
    # the source file's size identifies the data version (as in hgfn_jax.data.mp's own cache)
    signature = np.asarray(
        [FEATURE_VERSION, paths.require_file("data", mp.DATA_FILE).stat().st_size], np.int64
    )
    if cache.exists():
        try:
            with np.load(cache) as z:
                if np.array_equal(z["signature"], signature):
                    return ProxyData(*(z[f] for f in ProxyData.__dataclass_fields__))
        except (OSError, KeyError, ValueError):
            pass  # unreadable or stale: rebuild
    t0 = time.time()
    dataset = _load_dataset()
    t1 = time.time()
    workers = max(1, min(2, os.cpu_count() or 1))
    data = build_proxy_data(dataset, cell=cell, symprec=symprec, workers=workers)
    if verbose:
        print(
            f"proxy data: loaded {len(data)} crystals in {t1 - t0:.1f} s, reduced ({cell} cells) in "
            f"{time.time() - t1:.1f} s -> {cache}"
        )
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, signature=signature, **{f: getattr(data, f) for f in ProxyData.__dataclass_fields__})
    os.replace(tmp, cache)
    return data


class _IndexView:
    """Duck-typed stand-in for an ``MPDataset`` so that ``mp.split`` returns index arrays."""

    def __init__(self, m: int):
        self._m = m

    def __len__(self) -> int:
        return self._m

    def subset(self, index: np.ndarray) -> np.ndarray:
        return np.asarray(index)


def split_indices(m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train/validation/test positions (80/10/10) of ``m`` rows: exactly ``hgfn_jax.data.mp.split``."""
    from hgfn_jax.data import mp

    tr, va, te = mp.split(_IndexView(m), fractions=(0.8, 0.1, 0.1), seed=seed)
    return tr, va, te
