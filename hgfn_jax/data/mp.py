"""The Materials Project data set of CGCNN (``cgcnn_mp_36737.csv.gz``) as padded numpy arrays.

Source files (in :func:`hgfn_jax.paths.data_dir`): ``cgcnn_mp_36737.csv.gz`` (labels + CIF text per row) and
``cgcnn_mp_36737_meta.csv.gz`` (same rows without CIF, plus ``nsites``, ``formula``,
``spacegroup_symprec0.1``).
Row ``r`` of both files is the structure with ``id == r``.

Parsing: CIF text -> pymatgen ``Structure`` (conventional cell as stored, not reduced) -> lattice parameters,
fractional coordinates wrapped to [0, 1) and atomic numbers, sites in file order. The full parse (2 worker
processes) is done once and cached as ``<cache_dir>/mp36737_sites_v1.npz`` in ragged form (all sites of all
structures concatenated + offsets; equivalent to padding at N = 200, the data-set maximum, without the zeros);
:func:`load_mp` pads to the requested ``n_max``. Without that cache, :func:`load_mp` filters rows on the meta
file first and parses only the selected rows (building the full cache automatically when more than
``AUTO_CACHE_ROWS`` rows are needed).

Units: formation energy per atom in eV/atom, band gap in eV, lattice in Angstrom / degrees.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Structure

from hgfn_jax.crystal.convert import parse_cif, to_structure
from hgfn_jax.crystal.elements import MAX_Z, NUM_ELEMENTS, atomic_number
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.paths import cache_dir, require_file

DATA_FILE = "cgcnn_mp_36737.csv.gz"
META_FILE = "cgcnn_mp_36737_meta.csv.gz"
CACHE_NAME = "mp36737_sites_v1.npz"
CACHE_VERSION = 1
MAX_SITES = 200  # largest cell of the data set
AUTO_CACHE_ROWS = 4000  # a request needing more rows than this builds the full cache first
_SERIAL_ROWS = 64  # fewer rows than this are parsed in-process

_ELEMENT_RE = re.compile(r"[A-Z][a-z]?")


@dataclass(frozen=True)
class MPDataset:
    """Padded structures and labels of a selection of the data set (M structures, N = n_max slots)."""

    lattice: np.ndarray  # [M, 6] float32: a, b, c (A), alpha, beta, gamma (deg)
    frac: np.ndarray  # [M, N, 3] float32: fractional coordinates in [0, 1), 0 for padding
    species: np.ndarray  # [M, N] int32: atomic number, 0 for padding
    mask: np.ndarray  # [M, N] bool: real site
    spacegroup: np.ndarray  # [M] int32: space group number (meta file, SpacegroupAnalyzer symprec 0.1)
    formation_energy: np.ndarray  # [M] float32: formation energy per atom, eV/atom
    band_gap: np.ndarray  # [M] float32: band gap, eV
    material_id: np.ndarray  # [M] str: Materials Project id, e.g. 'mp-1000'
    nsites: np.ndarray  # [M] int32: number of sites of the cell (<= N)
    row: np.ndarray  # [M] int32: row (``id``) in the source files

    def __len__(self) -> int:
        return int(self.lattice.shape[0])

    @property
    def n_max(self) -> int:
        return int(self.frac.shape[1])

    def subset(self, index: np.ndarray | Sequence[int]) -> MPDataset:
        """The structures at positions ``index`` (integer array or boolean mask), in that order."""
        index = np.asarray(index)
        return MPDataset(**{name: getattr(self, name)[index] for name in self.__dataclass_fields__})

    def crystals(self) -> Crystal:
        """Batched numpy-backed :class:`Crystal` ([M] leading axis, overflow False)."""
        return Crystal(
            lattice=self.lattice,
            frac=self.frac,
            species=self.species,
            mask=self.mask,
            spacegroup=self.spacegroup,
            overflow=np.zeros(len(self), bool),
        )

    def crystal(self, i: int) -> Crystal:
        """Unbatched numpy-backed :class:`Crystal` of structure ``i``."""
        return Crystal(
            lattice=self.lattice[i],
            frac=self.frac[i],
            species=self.species[i],
            mask=self.mask[i],
            spacegroup=self.spacegroup[i],
            overflow=np.asarray(False),
        )

    def get_structure(self, i: int) -> Structure:
        """pymatgen ``Structure`` of structure ``i`` (rebuilt from the padded arrays)."""
        return to_structure(self.crystal(i))

    def iter_structures(self, indices: Iterable[int] | None = None) -> Iterator[Structure]:
        """pymatgen Structures of ``indices`` (default all), lazily."""
        for i in range(len(self)) if indices is None else indices:
            yield self.get_structure(int(i))


# ----------------------------------------------------------------------------------------------------------
# Reading the source files


def read_meta() -> pd.DataFrame:
    """The meta table (one row per structure, ``id`` == row) plus an ``elements`` column (symbol tuples)."""
    meta = pd.read_csv(require_file("data", META_FILE))
    if not np.array_equal(meta["id"].to_numpy(), np.arange(len(meta))):
        raise ValueError(f"{META_FILE}: column 'id' is not 0..{len(meta) - 1} in order")
    meta["elements"] = [tuple(sorted(set(_ELEMENT_RE.findall(f)))) for f in meta["formula"].astype(str)]
    return meta


def _read_cifs(rows: np.ndarray) -> list[str]:
    """CIF texts of the given rows of the data file."""
    df = pd.read_csv(require_file("data", DATA_FILE), usecols=["id", "cif"])
    if not np.array_equal(df["id"].to_numpy(), np.arange(len(df))):
        raise ValueError(f"{DATA_FILE}: column 'id' is not 0..{len(df) - 1} in order")
    return df["cif"].to_numpy()[rows].tolist()


def _parse_one(cif: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(params [6] float64, frac [n, 3] float32 in [0, 1), Z [n] uint8) of one CIF (worker function)."""
    s = parse_cif(cif)
    if not s.is_ordered:
        raise ValueError("disordered structure in the data set")
    params = np.asarray(s.lattice.parameters, np.float64)
    frac = np.mod(s.frac_coords, 1.0).astype(np.float32)
    frac[frac >= 1.0] = 0.0
    z = np.asarray([site.specie.Z for site in s], np.uint8)
    return params, frac, z


def _parse_many(cifs: list[str], workers: int = 2,
                progress: bool = False) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Parse ``cifs`` (in order) serially or in ``workers`` spawned processes; ``progress`` shows a bar (the
    full data set takes minutes on 2 cores, and a silent first run looks hung)."""
    from tqdm.auto import tqdm

    bar = partial(tqdm, total=len(cifs), desc="parsing data-set CIFs", unit="cif", disable=not progress,
                  mininterval=1.0)
    if len(cifs) < _SERIAL_ROWS or workers <= 1:
        return [_parse_one(c) for c in bar(cifs)]
    ctx = multiprocessing.get_context("spawn")  # never fork a process that runs JAX threads
    chunk = max(1, min(256, len(cifs) // (4 * workers)))
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(bar(pool.map(_parse_one, cifs, chunksize=chunk)))


def _ragged(rows: np.ndarray, parsed: list, nsites_expected: np.ndarray) -> dict[str, np.ndarray]:
    counts = np.asarray([len(p[2]) for p in parsed], np.int64)
    mismatch = np.flatnonzero(counts != nsites_expected)
    if mismatch.size:
        r = int(rows[mismatch[0]])
        raise ValueError(
            f"row {r}: parsed {counts[mismatch[0]]} sites, the meta file says {nsites_expected[mismatch[0]]}"
        )
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return {
        "row": rows.astype(np.int32),
        "offsets": offsets,
        "lattice": np.stack([p[0] for p in parsed]) if parsed else np.zeros((0, 6)),
        "frac": np.concatenate([p[1] for p in parsed]) if parsed else np.zeros((0, 3), np.float32),
        "species": np.concatenate([p[2] for p in parsed]) if parsed else np.zeros((0,), np.uint8),
    }


# ----------------------------------------------------------------------------------------------------------
# Full cache


def cache_path() -> Path:
    return cache_dir() / CACHE_NAME


def _source_signature() -> np.ndarray:
    st = require_file("data", DATA_FILE).stat()
    return np.asarray([CACHE_VERSION, st.st_size], np.int64)


def _load_cache() -> dict[str, np.ndarray] | None:
    path = cache_path()
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            data = {k: z[k] for k in z.files}
    except Exception:
        return None
    if not np.array_equal(data.get("signature"), _source_signature()):
        return None  # stale (other source file or cache version): rebuilt on demand
    return data


def build_cache(
    workers: int = 2,
    force: bool = False,
    verbose: bool = True,
    rows: Sequence[int] | np.ndarray | None = None,
) -> Path:
    """Parse the CIFs of the data file with ``workers`` processes and write the ragged cache (atomic write).

    ``rows=None`` parses every row (the normal, one-off use); a subset of rows writes a partial cache that
    :func:`load_mp` uses only for selections it covers (meant for tests). Returns the cache path; does nothing
    when a valid cache already covers the rows and ``force`` is False.
    """
    path = cache_path()
    meta = read_meta()
    rows = np.arange(len(meta)) if rows is None else np.unique(np.asarray(rows, np.int64))
    existing = _load_cache()
    if not force and existing is not None and np.all(np.isin(rows, existing["row"])):
        return path
    t0 = time.perf_counter()
    cifs = _read_cifs(rows)
    parsed = _parse_many(cifs, workers=workers, progress=verbose)
    data = _ragged(rows, parsed, meta["nsites"].to_numpy()[rows])
    elapsed = time.perf_counter() - t0
    data["signature"] = _source_signature()
    data["parse_seconds"] = np.asarray(elapsed)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, path)
    if verbose:
        print(f"parsed {len(rows)} CIFs with {workers} workers in {elapsed:.1f} s -> {path}")
    return path


# ----------------------------------------------------------------------------------------------------------
# Public loading API


def _as_z_set(elements: Iterable[str | int]) -> set[int]:
    out = set()
    for e in elements:
        if isinstance(e, (int, np.integer)):
            if not 1 <= int(e) <= MAX_Z:
                raise ValueError(f"atomic number must be in 1..{MAX_Z}, got {e}")
            out.add(int(e))
        else:
            out.add(atomic_number(e))
    return out


def _select_rows(
    meta: pd.DataFrame,
    max_sites: int,
    elements: Iterable[str | int] | None,
    spacegroups: Iterable[int] | None,
    n_elements: int | None,
    limit: int | None,
    rows: Sequence[int] | np.ndarray | None,
) -> np.ndarray:
    n_total = len(meta)
    if rows is None:
        cand = np.arange(n_total)
    else:
        cand = np.asarray(rows, dtype=np.int64).reshape(-1)
        if cand.size and (cand.min() < 0 or cand.max() >= n_total):
            raise ValueError(f"rows must lie in 0..{n_total - 1}, got min {cand.min()}, max {cand.max()}")
    keep = np.ones(cand.size, bool)
    if "parse_error" in meta:
        keep &= meta["parse_error"].isna().to_numpy()[cand]
    keep &= meta["nsites"].to_numpy()[cand] <= max_sites
    if spacegroups is not None:
        sgs = np.asarray(sorted({int(s) for s in spacegroups}))
        if sgs.size and (sgs.min() < 1 or sgs.max() > 230):
            raise ValueError(f"space groups must lie in 1..230, got {sgs.tolist()}")
        keep &= np.isin(meta["spacegroup_symprec0.1"].to_numpy()[cand], sgs)
    element_sets = meta["elements"].to_numpy()
    if elements is not None:
        allowed = _as_z_set(elements)
        keep &= np.asarray([all(atomic_number(s) in allowed for s in element_sets[r]) for r in cand], bool)
    if n_elements is not None:
        if n_elements < 1:
            raise ValueError(f"n_elements must be >= 1, got {n_elements}")
        keep &= np.asarray([len(element_sets[r]) == n_elements for r in cand], bool)
    sel = cand[keep]
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        sel = sel[:limit]
    return sel


def _pad(ragged: dict[str, np.ndarray], pos: np.ndarray, n_max: int) -> tuple[np.ndarray, ...]:
    """Pad structures ``pos`` (positions in the ragged arrays) to n_max slots."""
    start = ragged["offsets"][pos]
    count = ragged["offsets"][pos + 1] - start
    if count.size and count.max() > n_max:
        raise ValueError(f"a selected structure has {count.max()} sites, more than n_max={n_max}")
    slot = np.arange(n_max)
    valid = slot[None, :] < count[:, None]
    gather = np.where(valid, start[:, None] + slot[None, :], 0)
    if ragged["species"].size == 0:
        gather = np.zeros_like(gather)
        frac = np.zeros((len(pos), n_max, 3), np.float32)
        species = np.zeros((len(pos), n_max), np.int32)
    else:
        frac = np.where(valid[..., None], ragged["frac"][gather], 0.0).astype(np.float32)
        species = np.where(valid, ragged["species"][gather], 0).astype(np.int32)
    return ragged["lattice"][pos].astype(np.float32), frac, species, valid, count.astype(np.int32)


def load_mp(
    n_max: int = MAX_SITES,
    max_sites: int | None = None,
    elements: Iterable[str | int] | None = None,
    spacegroups: Iterable[int] | None = None,
    n_elements: int | None = None,
    limit: int | None = None,
    rows: Sequence[int] | np.ndarray | None = None,
    parse_all: bool | None = None,
    workers: int = 2,
) -> MPDataset:
    """Load (a filtered selection of) the data set padded to ``n_max`` sites, in file order.

    Filters (all optional, combined with AND; applied on the meta file before any CIF is parsed):
    ``rows`` explicit row ids (kept in the given order); ``max_sites`` keep cells with at most this many sites
    (default and upper bound: ``n_max``; cells larger than ``n_max`` are never truncated, they are left out);
    ``elements`` allowed elements (symbols or Z): every element of the structure must be in the set;
    ``spacegroups`` allowed space-group numbers (meta, symprec 0.1); ``n_elements`` exact number of distinct
    elements (e.g. 3 for ternaries); ``limit`` keep the first ``limit`` matches.

    ``parse_all``: True parses everything once into the cache (:func:`build_cache`), False never does (parses
    only the selected rows when no cache exists), None (default) builds it when more than AUTO_CACHE_ROWS rows
    are needed. ``workers``: processes for parsing.
    """
    if not 1 <= n_max <= MAX_SITES:
        raise ValueError(f"n_max must lie in 1..{MAX_SITES} (largest cell of the data set), got {n_max}")
    if max_sites is None:
        max_sites = n_max
    if max_sites > n_max:
        raise ValueError(f"max_sites={max_sites} exceeds n_max={n_max}: such cells would not fit the padding")
    meta = read_meta()
    sel = _select_rows(meta, max_sites, elements, spacegroups, n_elements, limit, rows)
    cache = _load_cache()
    if cache is not None and not np.all(np.isin(sel, cache["row"])):
        cache = None  # a partial cache that does not cover this selection
    if cache is None and (parse_all or (parse_all is None and sel.size > AUTO_CACHE_ROWS)):
        build_cache(workers=workers, force=True)
        cache = _load_cache()
    if cache is not None:
        pos_of_row = np.full(len(meta), -1, np.int64)
        pos_of_row[cache["row"]] = np.arange(cache["row"].size)
        pos = pos_of_row[sel]
        ragged = cache
    else:
        parsed = _parse_many(_read_cifs(sel), workers=workers)
        ragged = _ragged(sel, parsed, meta["nsites"].to_numpy()[sel])
        pos = np.arange(sel.size)
    lattice, frac, species, mask, nsites = _pad(ragged, pos, n_max)
    return MPDataset(
        lattice=lattice,
        frac=frac,
        species=species,
        mask=mask,
        spacegroup=meta["spacegroup_symprec0.1"].to_numpy()[sel].astype(np.int32),
        formation_energy=meta["formation_energy_per_atom"].to_numpy()[sel].astype(np.float32),
        band_gap=meta["band_gap"].to_numpy()[sel].astype(np.float32),
        material_id=meta["material_id"].to_numpy()[sel].astype(str),
        nsites=nsites,
        row=sel.astype(np.int32),
    )


def split(
    dataset: MPDataset, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0
) -> tuple[MPDataset, MPDataset, MPDataset]:
    """Deterministic random (train, val, test) split: a seeded permutation cut at the rounded fractions."""
    f = np.asarray(fractions, np.float64)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0, atol=1e-6):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {tuple(fractions)}")
    m = len(dataset)
    perm = np.random.default_rng(seed).permutation(m)
    n_train = int(round(f[0] * m))
    n_val = min(int(round(f[1] * m)), m - n_train)
    return (
        dataset.subset(perm[:n_train]),
        dataset.subset(perm[n_train : n_train + n_val]),
        dataset.subset(perm[n_train + n_val :]),
    )


def composition_counts(
    dataset: MPDataset, elements: Sequence[str | int] | None = None, strict: bool = True
) -> np.ndarray:
    """Number of sites of each element per structure (whole cell, not per formula unit).

    ``elements=None``: [M, 119] int32 indexed by Z (column 0 stays 0). Otherwise [M, len(elements)] in the
    given order; with ``strict`` a structure containing an element outside the list raises ValueError.
    """
    m, n = dataset.species.shape
    z = np.where(dataset.mask, dataset.species, 0)
    counts = np.zeros((m, NUM_ELEMENTS), np.int32)
    np.add.at(counts, (np.repeat(np.arange(m), n), z.reshape(-1)), 1)
    counts[:, 0] = 0
    if elements is None:
        return counts
    zs = [e if isinstance(e, (int, np.integer)) else atomic_number(e) for e in elements]
    if len(set(zs)) != len(zs):
        raise ValueError(f"duplicate elements in {list(elements)}")
    out = counts[:, zs]
    if strict:
        outside = counts.sum(axis=1) != out.sum(axis=1)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            extra = sorted(set(np.flatnonzero(counts[i]).tolist()) - set(zs))
            raise ValueError(
                f"structure {i} ({dataset.material_id[i]}) contains elements {extra} outside the given list"
            )
    return out


def get_structure(dataset: MPDataset, i: int) -> Structure:
    """pymatgen Structure of structure ``i`` of ``dataset``."""
    return dataset.get_structure(i)


def iter_structures(dataset: MPDataset, indices: Iterable[int] | None = None) -> Iterator[Structure]:
    """pymatgen Structures of ``dataset`` (all, or ``indices``), lazily."""
    return dataset.iter_structures(indices)


def main() -> None:
    """``python -m hgfn_jax.data``: build the full parse cache (2 processes) and report the time."""
    build_cache(workers=2, force=True)


if __name__ == "__main__":
    main()
