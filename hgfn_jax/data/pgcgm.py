"""PGCGM's data (paper 003): ternaries of 20 space groups, one base site per element, as M = (E, B, P, O).

Selection (from the shared data set, meta file first, then pymatgen): three distinct elements, space group
(SpacegroupAnalyzer, symprec 0.1) one of :data:`PGCGM_SPACEGROUPS`; the refined (conventional, idealised) cell
must have exactly one symmetry orbit per element ("one base site per element"), and the masked affine expansion
of the three base sites with the project's operation tables (:func:`affine_tables`) must give back exactly the
refined cell (same sites per element): this rejects any setting mismatch between spglib and the tables.

Representation per crystal (elements ordered by atomic number):
- ``E``: the 3 atomic numbers (properties: :func:`element_properties`, 23 per element, paper Table 6);
- ``B``: base sites [3, 3] (first site of each orbit) and ``K`` self-augmented triples of base-site sets
  [K, 3 sets, 3 elements, 3] drawn as in the paper's "Crystal Symmetry based Self-augmentation" (steps 1-3:
  a random element and one of its sites, then the nearest site of a second random element, then the site of
  the third with the smallest summed distance to both; Cartesian minimum-image distances);
- ``P``: a, b, c (A) and the angles fixed by the crystal system (90, 90, 90 or 90, 90, 120);
- ``O``: the group's operations as 4x4 affine matrices padded to 192 WITH a mask (never averaged unmasked: a
  padded zero matrix would send an atom to the origin).

Parsing ~9k crystals with spglib takes minutes; the result is cached under ``cache_dir()`` (``pgcgm_v1.npz``).
"""

from __future__ import annotations

import concurrent.futures as cf
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hgfn_jax.crystal import spacegroup as sgm
from hgfn_jax.paths import cache_dir

# Paper order: I4/mmm, P6_3/mmc, Immm, Fm-3m, Fd-3m, Pnma, P6/mmm, R-3, R-3m, Pm-3m, R-3c, P-3m1, P4/mmm, Cmcm,
# P4/nmm, F-43m, I-42d, P6_3mc, I4_1/amd, I4/mcm.
PGCGM_SPACEGROUPS = (139, 194, 71, 225, 227, 62, 191, 148, 166, 221, 167, 164, 123, 63, 129, 216, 122, 186,
                     141, 140)
MAX_OPS = sgm.MAX_OPS  # 192
N_AUG_MAX = 32  # triples of base-site sets stored per crystal (the paper draws 32)
CACHE_NAME = "pgcgm_v1.npz"
MAX_Z = 103  # element-property table rows 0..103 (row 0 = padding)

PROPERTY_NAMES = (
    "Z", "X", "row", "group", "atomic_mass", "atomic_radius", "mendeleev_no", "molar_volume",
    "average_ionic_radius", "average_cationic_radius", "average_anionic_radius", "sum_ionic_radii",
    "max_oxidation_state", "min_oxidation_state", "mean_common_oxidation_states", "mean_oxidation_states",
    "is_noble_gas", "is_transition_metal", "is_post_transition_metal", "is_metalloid", "is_alkali",
    "is_alkaline", "is_halogen",
)  # fmt: skip


def _radius(el) -> float:
    r = el.atomic_radius
    if r is None:  # noble gases etc.: pymatgen's calculated radius, then the van der Waals radius
        r = el.atomic_radius_calculated if el.atomic_radius_calculated is not None else el.van_der_waals_radius
    return float(r) if r is not None else np.nan


def _raw_properties() -> np.ndarray:
    from pymatgen.core.periodic_table import Element

    out = np.full((MAX_Z + 1, len(PROPERTY_NAMES)), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in range(1, MAX_Z + 1):
            e = Element.from_Z(z)
            f = lambda v: np.nan if v is None else float(v)  # noqa: E731
            common, known = e.common_oxidation_states, e.oxidation_states
            out[z] = [
                z, f(e.X), e.row, e.group, f(e.atomic_mass), _radius(e), f(e.mendeleev_no), f(e.molar_volume),
                f(e.average_ionic_radius), f(e.average_cationic_radius), f(e.average_anionic_radius),
                float(sum(float(v) for v in e.ionic_radii.values())),
                e.max_oxidation_state if known else 0.0, e.min_oxidation_state if known else 0.0,
                float(np.mean(common)) if common else 0.0, float(np.mean(known)) if known else 0.0,
                e.is_noble_gas, e.is_transition_metal, e.is_post_transition_metal, e.is_metalloid, e.is_alkali,
                e.is_alkaline, e.is_halogen,
            ]  # fmt: skip
    return out


_PROPS: np.ndarray | None = None


def element_properties() -> np.ndarray:
    """``[104, 23]`` float32: the 23 properties of Table 6 for Z = 0..103 (row 0 = padding, zeros), each
    min-max scaled to [0, 1] over Z = 1..103. Source: pymatgen ``Element``.

    Gaps (our fill, documented): atomic radius missing (noble gases, heavy elements) -> pymatgen's calculated
    radius, then the van der Waals radius; no oxidation states / ionic radii (noble gases) -> 0; any property
    still missing (Pauling X of He, Ne, Ar; molar volume of At, Fr, Fm..) -> the scaled value 0 (the table
    minimum). The raw (unscaled) atomic radius is :func:`atomic_radii`.
    """
    global _PROPS
    if _PROPS is None:
        raw = _raw_properties()[1:]
        lo, hi = np.nanmin(raw, axis=0), np.nanmax(raw, axis=0)
        scaled = np.nan_to_num((raw - lo) / np.where(hi > lo, hi - lo, 1.0), nan=0.0)
        _PROPS = np.concatenate([np.zeros((1, raw.shape[1])), scaled]).astype(np.float32)
        _PROPS.setflags(write=False)
    return _PROPS


def atomic_radii() -> np.ndarray:
    """``[104]`` float32 atomic radius (A) per Z (gap fill as in :func:`element_properties`; 0 for padding)."""
    r = _raw_properties()[:, PROPERTY_NAMES.index("atomic_radius")]
    return np.nan_to_num(r, nan=1.5).astype(np.float32)


def affine_tables(groups=PGCGM_SPACEGROUPS) -> tuple[np.ndarray, np.ndarray]:
    """``(O [G, 192, 4, 4] float32, mask [G, 192] bool)``: each group's operations x -> R x + t as affine
    matrices [[R, t], [0, 1]] in the project's tables (pymatgen's setting), padded with ZERO matrices that the
    mask marks as not real. Every average or expansion over operations must use the mask."""
    host = sgm.host_tables()
    g = np.asarray(groups)
    o = np.zeros((len(g), MAX_OPS, 4, 4), np.float32)
    o[:, :, :3, :3] = host["rotations"][g]
    o[:, :, :3, 3] = host["translations"][g]
    o[:, :, 3, 3] = 1.0
    mask = host["op_mask"][g].astype(bool)
    o[~mask] = 0.0
    return o, mask


def fixed_angles(spacegroup: int) -> tuple[float, float, float]:
    """The angles PGCGM fixes per group: (90, 90, 120) for trigonal/hexagonal (hexagonal axes), else 90s."""
    system = sgm.CRYSTAL_SYSTEMS[int(sgm.host_tables()["crystal_system"][int(spacegroup)])]
    return (90.0, 90.0, 120.0) if system in ("trigonal", "hexagonal") else (90.0, 90.0, 90.0)


def unique_images(o: np.ndarray, mask: np.ndarray, site: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """Algorithm 1 for one site on the host: ``[n, 3]`` distinct images (wrapped to [0, 1)) of ``site`` under
    the MASKED operations ``o`` ([192, 4, 4]); duplicates (periodic L-inf distance < tol) are dropped."""
    x = np.append(np.asarray(site, np.float64), 1.0)
    img = np.einsum("kij,j->ki", o[mask].astype(np.float64), x)[:, :3]
    img = img - np.floor(img)
    keep: list[np.ndarray] = []
    for p in img:
        if not any(np.max(np.abs((p - q) - np.round(p - q))) < tol for q in keep):
            keep.append(p)
    return np.asarray(keep)


# --------------------------------------------------------------------------------------------------------------
# Parsing and self-augmentation (host, worker processes)


def _augment(lattice, sites: list[np.ndarray], rng: np.random.Generator, n_aug: int) -> np.ndarray:
    """``[n_aug, 3, 3, 3]``: triples of base-site sets (element order fixed), paper steps 1-3 per set."""
    out = np.zeros((n_aug, 3, 3, 3), np.float32)
    for k in range(n_aug):
        for s in range(3):
            e0, e1, e2 = rng.permutation(3)
            b0 = sites[e0][rng.integers(len(sites[e0]))]
            d1 = lattice.get_all_distances(b0[None], sites[e1])[0]
            b1 = sites[e1][rng.choice(np.flatnonzero(d1 <= d1.min() + 1e-6))]
            d2 = (lattice.get_all_distances(b0[None], sites[e2])[0]
                  + lattice.get_all_distances(b1[None], sites[e2])[0])
            b2 = sites[e2][rng.choice(np.flatnonzero(d2 <= d2.min() + 1e-6))]
            out[k, s, e0], out[k, s, e1], out[k, s, e2] = b0, b1, b2
    return out


def _process(args) -> tuple[str, dict | None]:
    """One crystal -> (status, record). Status 'ok' or the reason it is left out."""
    row, lattice6, frac, species, seed, n_aug = args
    from pymatgen.core import Lattice, Structure
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    s = Structure(Lattice.from_parameters(*lattice6), species.tolist(), frac)
    try:
        sga = SpacegroupAnalyzer(s, symprec=0.1)
        sg = sga.get_space_group_number()
        refined = sga.get_refined_structure()
        ss = SpacegroupAnalyzer(refined, symprec=0.01).get_symmetrized_structure()
    except Exception:  # noqa: BLE001 - spglib failures leave the crystal out
        return "spglib_failed", None
    if sg not in PGCGM_SPACEGROUPS:
        return "other_group", None
    zs = sorted({site.specie.Z for site in refined})
    orbits = {z: [g for g in ss.equivalent_sites if g[0].specie.Z == z] for z in zs}
    if len(zs) != 3 or any(len(v) != 1 for v in orbits.values()):
        return "several_sites_per_element", None
    o, mask = affine_tables((sg,))
    sites = [np.mod(np.array([x.frac_coords for x in orbits[z][0]]), 1.0) for z in zs]
    base = np.stack([p[0] for p in sites])
    for p, b in zip(sites, base, strict=True):  # the masked expansion must give back the refined cell
        img = unique_images(o[0], mask[0], b, tol=1e-3)
        d = img[:, None, :] - p[None, :, :]
        d = np.max(np.abs(d - np.round(d)), axis=-1)
        if len(img) != len(p) or not np.all(d.min(axis=1) < 1e-3):
            return "expansion_mismatch", None
    rng = np.random.default_rng([seed, row])
    aug = _augment(refined.lattice, sites, rng, n_aug)
    abc = np.asarray(refined.lattice.abc, np.float32)
    return "ok", dict(row=row, spacegroup=sg, elements=np.asarray(zs, np.int32), lengths=abc,
                      base=base.astype(np.float32), aug=aug, nsites=len(refined))


@dataclass(frozen=True)
class PGCGMData:
    """The qualifying crystals (M of them) in the representation M = (E, B, P, O)."""

    row: np.ndarray  # [M] int32: row of the shared data set
    spacegroup: np.ndarray  # [M] int32: international number
    group_index: np.ndarray  # [M] int32: index into PGCGM_SPACEGROUPS
    elements: np.ndarray  # [M, 3] int32: atomic numbers, ascending
    lengths: np.ndarray  # [M, 3] float32: a, b, c of the refined conventional cell (A)
    base: np.ndarray  # [M, 3, 3] float32: one base site per element (first site of its orbit)
    aug: np.ndarray  # [M, K, 3, 3, 3] float32: self-augmented triples of base-site sets
    nsites: np.ndarray  # [M] int32: sites of the refined conventional cell
    reasons: dict  # why candidates were left out: {reason: count}

    def __len__(self) -> int:
        return int(self.row.shape[0])

    def subset(self, idx) -> PGCGMData:
        idx = np.asarray(idx)
        f = {k: getattr(self, k)[idx] for k in self.__dataclass_fields__ if k != "reasons"}
        return PGCGMData(**f, reasons=self.reasons)

    def lattice(self) -> np.ndarray:
        """``[M, 6]`` a, b, c and the fixed angles."""
        ang = np.asarray([fixed_angles(g) for g in self.spacegroup], np.float32).reshape(-1, 3)
        return np.concatenate([self.lengths, ang], axis=1)

    def group_counts(self) -> dict[int, int]:
        return {g: int(np.sum(self.spacegroup == g)) for g in PGCGM_SPACEGROUPS}


def build(seed: int = 0, workers: int = 2, limit: int | None = None, progress: bool = True) -> PGCGMData:
    """Parses the candidates (ternaries of the 20 groups, meta file) and returns the qualifying crystals."""
    from tqdm.auto import tqdm

    from hgfn_jax.data.mp import load_mp

    ds = load_mp(n_max=200, n_elements=3, spacegroups=PGCGM_SPACEGROUPS, limit=limit)
    jobs = [(int(ds.row[i]), ds.lattice[i].astype(np.float64), ds.frac[i][ds.mask[i]].astype(np.float64),
             ds.species[i][ds.mask[i]], seed, N_AUG_MAX) for i in range(len(ds))]
    reasons: dict[str, int] = {}
    recs = []
    pool = cf.ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        it = pool.map(_process, jobs, chunksize=16) if pool else map(_process, jobs)
        for status, rec in tqdm(it, total=len(jobs), disable=not progress, desc="pgcgm data"):
            reasons[status] = reasons.get(status, 0) + 1
            if rec is not None:
                recs.append(rec)
    finally:
        if pool:
            pool.shutdown()
    reasons["candidates"] = len(jobs)
    stack = lambda k, dt: np.asarray([r[k] for r in recs], dt)  # noqa: E731
    sg = stack("spacegroup", np.int32)
    gi = np.asarray([PGCGM_SPACEGROUPS.index(g) for g in sg], np.int32)
    return PGCGMData(row=stack("row", np.int32), spacegroup=sg, group_index=gi,
                     elements=stack("elements", np.int32).reshape(-1, 3),
                     lengths=stack("lengths", np.float32).reshape(-1, 3),
                     base=stack("base", np.float32).reshape(-1, 3, 3),
                     aug=stack("aug", np.float32).reshape(-1, N_AUG_MAX, 3, 3, 3),
                     nsites=stack("nsites", np.int32), reasons=reasons)


def cache_path() -> Path:
    return cache_dir() / CACHE_NAME


def load_pgcgm(workers: int = 2, progress: bool = True, rebuild: bool = False) -> PGCGMData:
    """All qualifying crystals (cached after the first build, minutes)."""
    path = cache_path()
    if path.exists() and not rebuild:
        with np.load(path, allow_pickle=False) as z:
            keys = [str(k) for k in z["reason_keys"]]
            reasons = dict(zip(keys, z["reason_counts"].tolist(), strict=True))
            return PGCGMData(**{k: z[k] for k in PGCGMData.__dataclass_fields__ if k != "reasons"},
                             reasons=reasons)
    t = time.perf_counter()
    data = build(workers=workers, progress=progress)
    arrays = {k: getattr(data, k) for k in PGCGMData.__dataclass_fields__ if k != "reasons"}
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays, reason_keys=np.asarray(list(data.reasons)),
                        reason_counts=np.asarray(list(data.reasons.values())))
    tmp.replace(path)
    if progress:
        print(f"pgcgm data: {len(data)} crystals in {time.perf_counter() - t:.0f} s -> {path}")
    return data


def split_pgcgm(data: PGCGMData, train_fraction: float = 0.8, seed: int = 0) -> tuple[PGCGMData, PGCGMData]:
    """80/20 random split of CRYSTALS (augmented copies stay with their crystal) by a fixed seed."""
    perm = np.random.default_rng(seed).permutation(len(data))
    n = int(round(train_fraction * len(data)))
    return data.subset(np.sort(perm[:n])), data.subset(np.sort(perm[n:]))


def main() -> None:
    data = load_pgcgm()
    print("left out:", data.reasons)
    for g, n in data.group_counts().items():
        print(f"{g:4d} {sgm.symbol(g):10s} {n}")
    print("total", len(data))


if __name__ == "__main__":
    main()
