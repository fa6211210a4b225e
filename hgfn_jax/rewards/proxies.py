"""Crystal-GFN proxy MLPs for formation energy and band gap (paper 001, Sec. 5.4 and Appendix D).

The proxy predicts a property from the crystal's *high-level* description, the output of Crystal-GFN:
composition, space group and lattice parameters (no atomic positions). As in Appendix D the input is the
concatenation of three representations that feed a prediction MLP:

- composition: every element gets a PhAST-like embedding, the concatenation of (1) its static physical
  properties (``element_property_table``, standardised over the elements) projected by a small MLP and
  (2) learned embeddings of its atomic number, period and group. A per-element MLP ``phi`` maps the
  embedding table, and the crystal's composition embedding pools ``phi`` with the atom *fractions*
  ``x_z = n_z / N`` as weights (weighted mean and weighted standard deviation, a deep-set / Magpie-style
  pooling; the paper's exact aggregation formula was lost in extraction);
- space group: a learned lookup table (231 rows, row 0 unused);
- lattice: the six parameters ``a, b, c`` (Angstrom) and ``alpha, beta, gamma`` (degrees) plus two derived
  scalars, ``log(V / N)`` (volume per atom, A^3) and ``log N`` (atoms in the cell), standardised with the
  training-set statistics and passed through a small MLP.

Conventions and units
---------------------
- ``counts_z [..., 119] float32``: number of atoms of each element in the cell, indexed by atomic number Z
  (index 0 is padding and is ignored). Counts, not fractions: the model normalises them itself, so the
  composition part is intensive (the same for any supercell) and the cell size enters only through
  ``log N``, ``log(V/N)`` and the lattice lengths.
- ``spacegroup [...] int32``: international number 1..230.
- ``lattice [..., 6] float32``: ``a, b, c`` in Angstrom, ``alpha, beta, gamma`` in degrees.
- Output ``[...] float32`` in original units: eV/atom (formation energy) or eV (band gap). The band-gap
  proxy (``nonneg=True``) clamps its output at 0 (band gaps are non-negative; clamping can only lower the
  absolute error). The training cells are spglib's conventional standard cells (hexagonal axes for
  rhombohedral groups), the setting of the International Tables used by pyxtal's Wyckoff multiplicities.

Coverage: the training data hold 87 elements (Z = 1..94 without Ne, Ar, Po, At, Rn, Fr, Ra) and 212 space
groups; other elements / groups get untrained embeddings and their predictions are extrapolations. For the R
groups (``RHOMBOHEDRAL_SPACEGROUPS``) pass hexagonal axes: ``rhombohedral_to_hexagonal`` converts a
rhombohedral-axes cell (the counts must then be those of the hexagonal cell, 3x the rhombohedral one).

Invalid inputs
--------------
``Proxy.predict`` (host side) raises ``ValueError`` naming the problem. The pure ``Proxy.apply`` /
``apply_proxy`` are jit/vmap-safe and never raise: for an invalid row (space group outside 1..230, a negative
or non-finite count, no atoms, non-finite lattice, a non-positive length, an angle outside (0, 180) or a
degenerate cell) they return NaN for that row, so a bad input cannot pass as a plausible reward.

Trained weights are cached with orbax under ``paths.cache_dir() / "proxies" / <target>-<config hash>``; see
``load_proxy`` and ``hgfn_jax.rewards.proxy_train``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal import elements as el
from hgfn_jax.crystal.lattice import rhombohedral_to_hexagonal  # noqa: F401  (re-export)

NUM_Z = el.NUM_ELEMENTS  # 119: index = atomic number, 0 = padding
NUM_SPACEGROUPS = 230
NUM_LATTICE_FEATURES = 8  # a, b, c, alpha, beta, gamma, log(V/N), log N
TARGETS = ("formation_energy", "band_gap")
TARGET_UNITS = {"formation_energy": "eV/atom", "band_gap": "eV"}
# Bump when features, architecture or data preparation change in a way that invalidates cached weights.
FEATURE_VERSION = 1

# ----------------------------------------------------------------------------------------------------------
# Element property table
# ----------------------------------------------------------------------------------------------------------

ELEMENT_PROPERTIES = (
    "log_atomic_mass",  # log(g/mol)
    "electronegativity",  # Pauling
    "atomic_radius",  # empirical, Angstrom
    "atomic_radius_calculated",  # Angstrom
    "van_der_waals_radius",  # Angstrom
    "average_ionic_radius",  # Angstrom
    "first_ionization_energy",  # eV
    "electron_affinity",  # eV
    "log_molar_volume",  # log(cm^3/mol)
    "log_melting_point",  # log(K)
    "mendeleev_number",
    "valence_s",  # electrons in the outer s shell
    "valence_p",  # electrons in the outer p shell
    "valence_d",  # electrons in the (n-1) d shell
    "valence_f",  # electrons in the (n-2) f shell
)


MAX_PROPERTY_Z = 103  # physical properties are used up to lawrencium


def _safe(fn: Callable[[], Any]) -> float:
    try:
        v = fn()
        return float("nan") if v is None else float(v)
    except Exception:  # pymatgen raises assorted errors for missing data
        return float("nan")


def _valence(elem) -> tuple[float, float, float, float]:
    try:
        shells = elem.full_electronic_structure
    except Exception:
        return (float("nan"),) * 4
    n_max = max(n for n, _, _ in shells)
    occ = {(n, l): float(o) for n, l, o in shells}
    return (
        occ.get((n_max, "s"), 0.0),
        occ.get((n_max, "p"), 0.0),
        occ.get((n_max - 1, "d"), 0.0),
        occ.get((n_max - 2, "f"), 0.0),
    )


@functools.lru_cache(maxsize=1)
def element_property_table() -> np.ndarray:
    """[119, P] float32 standardised physical properties of the elements (``ELEMENT_PROPERTIES``), row = Z.

    Built from pymatgen's element data for Z = 1..103 (heavier elements get all zeros: their tabulated values
    are unreliable). Each column is standardised over the elements that have the value; missing values
    become 0 (the column mean) and row 0 (padding) is all zeros. Logs are natural logs.
    """
    from pymatgen.core.periodic_table import Element

    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in range(1, NUM_Z):
            e = Element.from_Z(z)
            mass = _safe(lambda e=e: e.atomic_mass)
            mv = _safe(lambda e=e: e.molar_volume)
            mp = _safe(lambda e=e: e.melting_point)
            rows.append(
                [
                    np.log(mass) if mass > 0 else np.nan,
                    _safe(lambda e=e: e.X),
                    _safe(lambda e=e: e.atomic_radius),
                    _safe(lambda e=e: e.atomic_radius_calculated),
                    _safe(lambda e=e: e.van_der_waals_radius),
                    _safe(lambda e=e: e.average_ionic_radius),
                    _safe(lambda e=e: e.ionization_energy),
                    _safe(lambda e=e: e.electron_affinity),
                    np.log(mv) if mv > 0 else np.nan,
                    np.log(mp) if mp > 0 else np.nan,
                    _safe(lambda e=e: e.mendeleev_no),
                    *_valence(e),
                ]
            )
    raw = np.asarray(rows, dtype=np.float64)
    raw[MAX_PROPERTY_Z:] = np.nan  # Z > 103: pymatgen's values are estimates or wrong (e.g. Ds IE = 65 eV)
    mean = np.nanmean(raw, axis=0)
    std = np.nanstd(raw, axis=0)
    std = np.where(std > 0, std, 1.0)
    table = np.nan_to_num((raw - mean) / std, nan=0.0)
    out = np.zeros((NUM_Z, len(ELEMENT_PROPERTIES)), np.float32)
    out[1:] = table
    out.setflags(write=False)
    return out


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyModelConfig:
    """Architecture hyper-parameters (names follow Table 1 of paper 001 where they exist)."""

    properties_proj_size: int = 64  # projection of the physical properties
    z_emb_size: int = 64  # learned embedding of the atomic number
    period_emb_size: int = 16
    group_emb_size: int = 16
    comp_hidden: int = 128  # width of the per-element MLP phi applied before pooling
    comp_layers: int = 2
    sg_emb_size: int = 64
    lat_hidden_channels: int = 64
    lat_num_layers: int = 1
    hidden_channels: int = 256  # final MLP
    num_layers: int = 3
    nonneg: bool = False  # clamp the output at 0 (band gap)


@dataclass(frozen=True)
class ProxyTrainConfig:
    """Optimisation settings. ``max_train`` trains on the first rows of the training split (tests only)."""

    epochs: int = 60
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    loss: str = "l1"  # "l1" | "huber" | "mse" on the standardised target
    seed: int = 0  # init / shuffling seed (the data split always uses seed 0)
    split_seed: int = 0
    max_train: int | None = None
    patience: int | None = None  # early stopping on the validation MAE (epochs); None = run all epochs


@dataclass(frozen=True)
class ProxyConfig:
    """Everything that determines a trained proxy: target, architecture, training and data preparation."""

    target: str = "formation_energy"
    model: ProxyModelConfig = field(default_factory=ProxyModelConfig)
    train: ProxyTrainConfig = field(default_factory=ProxyTrainConfig)
    cell: str = "conventional"  # "conventional" (spglib standard cell) | "stored" (cell as in the CIF)
    symprec: float = 0.1
    name: str = "fast"

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ValueError(f"unknown proxy target {self.target!r}; expected one of {TARGETS}")
        if self.cell not in ("conventional", "stored"):
            raise ValueError(f"cell must be 'conventional' or 'stored', got {self.cell!r}")
        if self.train.loss not in ("l1", "huber", "mse"):
            raise ValueError(f"unknown loss {self.train.loss!r}; expected 'l1', 'huber' or 'mse'")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["feature_version"] = FEATURE_VERSION
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> ProxyConfig:
        d = dict(d)
        d.pop("feature_version", None)
        return cls(
            target=d["target"],
            model=ProxyModelConfig(**d["model"]),
            train=ProxyTrainConfig(**d["train"]),
            cell=d["cell"],
            symprec=d["symprec"],
            name=d.get("name", "custom"),
        )

    def short_hash(self) -> str:
        """10 hex digits of the SHA-1 of the config (name excluded) and ``FEATURE_VERSION``."""
        d = self.to_dict()
        d.pop("name")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def default_config(target: str, variant: str = "fast") -> ProxyConfig:
    """Named configurations: ``fast`` (default, a few minutes on 2 CPU cores) or ``paper`` (Table 1 sizes).

    The ``paper`` variant uses the widths of Table 1 of paper 001 (FE: 5 x 576, BG: 7 x 1856) with their
    learning rates and batch sizes, and 100 (FE) / 150 (BG) epochs with early stopping (patience 11 / 9).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown proxy target {target!r}; expected one of {TARGETS}")
    bg = target == "band_gap"
    if variant == "fast":
        return ProxyConfig(target=target, model=ProxyModelConfig(nonneg=bg), name="fast")
    if variant == "paper":
        if bg:
            model = ProxyModelConfig(
                properties_proj_size=384, z_emb_size=384, period_emb_size=160, group_emb_size=160,
                comp_hidden=384, comp_layers=2, sg_emb_size=416, lat_hidden_channels=448, lat_num_layers=3,
                hidden_channels=1856, num_layers=7, nonneg=True,
            )  # fmt: skip
            train = ProxyTrainConfig(epochs=150, batch_size=192, lr=1.8e-3, patience=9)
        else:
            model = ProxyModelConfig(
                properties_proj_size=64, z_emb_size=128, period_emb_size=256, group_emb_size=16,
                comp_hidden=256, comp_layers=2, sg_emb_size=128, lat_hidden_channels=284, lat_num_layers=1,
                hidden_channels=576, num_layers=5,
            )  # fmt: skip
            train = ProxyTrainConfig(epochs=100, batch_size=448, lr=1.7e-3, patience=11)
        return ProxyConfig(target=target, model=model, train=train, name="paper")
    raise ValueError(f"unknown proxy config variant {variant!r}; expected 'fast' or 'paper'")


# ----------------------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------------------


def cell_volume(lattice: jnp.ndarray) -> jnp.ndarray:
    """[...] volume (A^3) of cells given as ``[..., 6]`` (a, b, c, alpha, beta, gamma in degrees).

    ``V = abc sqrt(1 - cos^2 a - cos^2 b - cos^2 g + 2 cos a cos b cos g)``; 0 for degenerate angle triples.
    """
    a, b, c = lattice[..., 0], lattice[..., 1], lattice[..., 2]
    ca, cb, cg = (jnp.cos(jnp.deg2rad(lattice[..., i])) for i in (3, 4, 5))
    s = 1.0 - ca**2 - cb**2 - cg**2 + 2.0 * ca * cb * cg
    return a * b * c * jnp.sqrt(jnp.maximum(s, 0.0))


RHOMBOHEDRAL_SPACEGROUPS = (146, 148, 155, 160, 161, 166, 167)  # R-centred trigonal groups
# rhombohedral_to_hexagonal lives with the other cell maths (hgfn_jax.crystal.lattice); re-exported here


def input_validity(counts_z: jnp.ndarray, spacegroup: jnp.ndarray, lattice: jnp.ndarray) -> jnp.ndarray:
    """[...] bool: the row is a valid proxy input (see module docstring, "Invalid inputs")."""
    counts = counts_z[..., 1:]
    ok_counts = jnp.all(jnp.isfinite(counts) & (counts >= 0), axis=-1) & (jnp.sum(counts, axis=-1) > 0)
    ok_sg = (spacegroup >= 1) & (spacegroup <= NUM_SPACEGROUPS)
    lengths, angles = lattice[..., :3], lattice[..., 3:]
    ok_lat = (
        jnp.all(jnp.isfinite(lattice), axis=-1)
        & jnp.all(lengths > 0, axis=-1)
        & jnp.all((angles > 0) & (angles < 180), axis=-1)
    )
    ok_vol = cell_volume(jnp.where(jnp.isfinite(lattice), lattice, 1.0)) > 0
    return ok_counts & ok_sg & ok_lat & ok_vol


def composition_and_lattice_features(
    counts_z: jnp.ndarray, lattice: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Atom fractions ``[..., 119]`` (index 0 zeroed) and raw lattice features ``[..., 8]``.

    Lattice features: a, b, c (A), alpha, beta, gamma (deg), log(V/N) (V/N in A^3/atom), log N. Safe (finite)
    for invalid rows: those are masked to NaN at the output by ``ProxyModel``.
    """
    counts = jnp.maximum(jnp.nan_to_num(counts_z.astype(jnp.float32)), 0.0)
    counts = counts.at[..., 0].set(0.0)
    total = jnp.sum(counts, axis=-1, keepdims=True)
    frac = counts / jnp.maximum(total, 1e-6)
    n = jnp.maximum(total[..., 0], 1e-6)
    lat = jnp.nan_to_num(lattice.astype(jnp.float32))
    vol = jnp.maximum(cell_volume(lat), 1e-6)
    feats = jnp.concatenate([lat, jnp.log(vol / n)[..., None], jnp.log(n)[..., None]], axis=-1)
    return frac, feats


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Dense layers with SiLU between them (and after the last one iff ``final_act``)."""

    features: tuple[int, ...]
    final_act: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for i, f in enumerate(self.features):
            x = nn.Dense(f)(x)
            if i < len(self.features) - 1 or self.final_act:
                x = nn.silu(x)
        return x


class ProxyModel(nn.Module):
    """The Crystal-GFN proxy MLP (Appendix D of paper 001). Shape-polymorphic over leading batch axes.

    Variables: ``params`` (trainable) and ``consts`` (element tables and the standardisation statistics of
    the lattice features and of the target, filled in by the training code and saved with the weights).

    ``__call__(counts_z, spacegroup, lattice, raw=False)``: with ``raw=True`` the standardised head output
    (the training target scale, no clamping, no validity mask); otherwise the prediction in original units,
    clamped at 0 if ``config.nonneg``, NaN for invalid rows.
    """

    config: ProxyModelConfig

    @nn.compact
    def __call__(
        self, counts_z: jnp.ndarray, spacegroup: jnp.ndarray, lattice: jnp.ndarray, raw: bool = False
    ) -> jnp.ndarray:
        cfg = self.config
        props = self.variable("consts", "elem_props", lambda: jnp.asarray(element_property_table())).value
        period = self.variable("consts", "period", lambda: jnp.asarray(el.PERIOD, jnp.int32)).value
        group = self.variable("consts", "group", lambda: jnp.asarray(el.GROUP, jnp.int32)).value
        lat_mean = self.variable("consts", "lat_mean", lambda: jnp.zeros(NUM_LATTICE_FEATURES)).value
        lat_std = self.variable("consts", "lat_std", lambda: jnp.ones(NUM_LATTICE_FEATURES)).value
        y_mean = self.variable("consts", "y_mean", lambda: jnp.zeros(())).value
        y_std = self.variable("consts", "y_std", lambda: jnp.ones(())).value

        # Element embedding table [119, d] (PhAST-like): projected properties + Z, period, group lookups.
        e_props = MLP((cfg.properties_proj_size, cfg.properties_proj_size), name="props_mlp")(props)
        zs = jnp.arange(NUM_Z)
        e_z = nn.Embed(NUM_Z, cfg.z_emb_size, name="z_emb")(zs)
        e_p = nn.Embed(8, cfg.period_emb_size, name="period_emb")(period)
        e_g = nn.Embed(19, cfg.group_emb_size, name="group_emb")(group)
        table = jnp.concatenate([e_props, e_z, e_p, e_g], axis=-1)
        phi = MLP((cfg.comp_hidden,) * cfg.comp_layers, name="comp_mlp")(table)  # [119, dc]

        frac, lat_raw = composition_and_lattice_features(counts_z, lattice)
        mean = frac @ phi
        var = jnp.maximum(frac @ (phi * phi) - mean * mean, 0.0)
        h_comp = jnp.concatenate([mean, jnp.sqrt(var + 1e-6)], axis=-1)

        sg = jnp.clip(spacegroup.astype(jnp.int32), 0, NUM_SPACEGROUPS)
        h_sg = nn.Embed(NUM_SPACEGROUPS + 1, cfg.sg_emb_size, name="sg_emb")(sg)

        lat = (lat_raw - lat_mean) / lat_std
        h_lat = MLP((cfg.lat_hidden_channels,) * cfg.lat_num_layers, name="lat_mlp")(lat)

        h = jnp.concatenate([h_comp, h_sg, h_lat], axis=-1)
        h = MLP((cfg.hidden_channels,) * cfg.num_layers, name="head")(h)
        out = nn.Dense(1, name="out")(h)[..., 0]
        if raw:
            return out
        y = out * y_std + y_mean
        if cfg.nonneg:
            y = jnp.maximum(y, 0.0)
        return jnp.where(input_validity(counts_z, spacegroup, lattice), y, jnp.nan)


@functools.lru_cache(maxsize=8)
def _jitted_init(config: ProxyModelConfig) -> Callable:
    model = ProxyModel(config)
    counts = np.zeros((1, NUM_Z), np.float32)
    counts[0, 8] = 1.0
    lattice = np.array([[3.0, 3.0, 3.0, 90.0, 90.0, 90.0]], np.float32)
    return jax.jit(lambda key: model.init(key, counts, np.ones((1,), np.int32), lattice))


def init_variables(model: ProxyModel, key: jax.Array) -> dict:
    """Fresh ``{"params", "consts"}`` for ``model`` (consts hold identity standardisation until trained)."""
    variables = _jitted_init(model.config)(key)  # one compile per config (eager init dispatches op by op)
    return {k: dict(v) for k, v in variables.items()}


def apply_proxy(
    model: ProxyModel,
    variables: Mapping,
    counts_z: jnp.ndarray,
    spacegroup: jnp.ndarray,
    lattice: jnp.ndarray,
) -> jnp.ndarray:
    """Raw pure apply: prediction in original units (see ``ProxyModel``); jit/vmap-safe, never raises."""
    return model.apply(variables, counts_z, spacegroup, lattice)


# ----------------------------------------------------------------------------------------------------------
# Host-side validation and the Proxy object
# ----------------------------------------------------------------------------------------------------------


def validate_inputs(counts_z, spacegroup, lattice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check concrete inputs at the Python boundary; return them as float32/int32/float32 numpy arrays.

    Raises ``ValueError`` naming the first problem: wrong shapes, a space group outside 1..230 or not an
    integer, negative or non-finite counts, a row without atoms, a count at index 0 (padding, not an element),
    non-finite lattice, non-positive lengths, angles outside (0, 180) degrees, or an angle triple that gives
    no cell. Non-integer counts are accepted (the model only uses fractions and the total N).
    """
    counts = np.asarray(counts_z, dtype=np.float64)
    sg = np.asarray(spacegroup)
    lat = np.asarray(lattice, dtype=np.float64)
    if counts.ndim < 1 or counts.shape[-1] != NUM_Z:
        raise ValueError(
            f"counts_z must have shape [..., {NUM_Z}] (index = atomic number), got {counts.shape}"
        )
    batch = counts.shape[:-1]
    if sg.shape != batch:
        raise ValueError(
            f"spacegroup must have shape {batch} to match counts_z {counts.shape}, got {sg.shape}"
        )
    if lat.shape != batch + (6,):
        raise ValueError(
            f"lattice must have shape {batch + (6,)} (a, b, c, alpha, beta, gamma), got {lat.shape}"
        )
    if not np.issubdtype(sg.dtype, np.integer):
        if not np.all(np.isfinite(sg)) or np.any(np.asarray(sg, np.float64) % 1 != 0):
            raise ValueError(f"spacegroup must hold integers 1..{NUM_SPACEGROUPS}, got {sg}")
    sgi = np.asarray(sg, dtype=np.int64)
    bad = (sgi < 1) | (sgi > NUM_SPACEGROUPS)
    if np.any(bad):
        raise ValueError(f"spacegroup must be in 1..{NUM_SPACEGROUPS}, got {sgi[bad].ravel()[:5].tolist()}")
    if not np.all(np.isfinite(counts)):
        raise ValueError("counts_z contains non-finite values")
    if np.any(counts < 0):
        zs = np.unique(np.nonzero(counts < 0)[-1])
        raise ValueError(f"counts_z must be non-negative; negative counts for Z = {zs[:10].tolist()}")
    if np.any(counts[..., 0] != 0):
        raise ValueError("counts_z[..., 0] must be 0: index 0 is padding (the index is the atomic number Z)")
    if np.any(counts.sum(-1) <= 0):
        raise ValueError("counts_z has a row with no atoms (all counts are 0)")
    if not np.all(np.isfinite(lat)):
        raise ValueError("lattice contains non-finite values")
    if np.any(lat[..., :3] <= 0):
        raise ValueError(
            f"lattice lengths a, b, c must be > 0 Angstrom, got {lat[..., :3].reshape(-1, 3)[:3]}"
        )
    ang = lat[..., 3:]
    if np.any((ang <= 0) | (ang >= 180)):
        raise ValueError(f"lattice angles must be in (0, 180) degrees, got {ang.reshape(-1, 3)[:3].tolist()}")
    cosines = np.cos(np.deg2rad(ang))
    ca, cb, cg = cosines[..., 0], cosines[..., 1], cosines[..., 2]
    if np.any(1.0 - ca**2 - cb**2 - cg**2 + 2.0 * ca * cb * cg <= 0):
        raise ValueError("lattice angles do not form a cell (zero volume): check alpha, beta, gamma")
    return counts.astype(np.float32), sgi.astype(np.int32), lat.astype(np.float32)


class Proxy:
    """A trained proxy: ``apply(counts_z, spacegroup, lattice) -> [...]`` in eV/atom (FE) or eV (band gap).

    - ``apply``: pure, jit/vmap-safe closure over the weights (NaN for invalid rows, never raises);
    - ``apply_fn(variables, counts_z, spacegroup, lattice)``: the same with the weights as an argument
      (pass ``proxy.variables``; better for large models inside jit, avoids baking weights as constants);
    - ``predict(...)``: checked host entry point (``validate_inputs``, then a jitted ``apply``).
    Attributes: ``target``, ``config`` (ProxyConfig), ``model``, ``variables``, ``params``, ``metrics``
    (validation/test MAE etc. from training, may be empty), ``path`` (checkpoint folder or None).
    """

    def __init__(
        self,
        config: ProxyConfig,
        variables: Mapping,
        metrics: Mapping | None = None,
        path: Path | None = None,
    ):
        self.config = config
        self.target = config.target
        self.units = TARGET_UNITS[config.target]
        self.model = ProxyModel(config.model)
        self.variables = variables
        self.metrics = dict(metrics or {})
        self.path = path
        self.apply_fn = functools.partial(apply_proxy, self.model)
        self.apply = functools.partial(apply_proxy, self.model, variables)
        self._jitted = jax.jit(self.apply)

    @property
    def params(self) -> Mapping:
        return self.variables["params"]

    def predict(self, counts_z, spacegroup, lattice) -> np.ndarray:
        """Validated prediction for concrete inputs (any leading batch shape); ValueError on bad input."""
        c, s, lat = validate_inputs(counts_z, spacegroup, lattice)
        return np.asarray(self._jitted(c, s, lat))

    __call__ = predict

    def __repr__(self) -> str:
        return f"Proxy(target={self.target!r}, config={self.config.name!r}, metrics={self.metrics})"


def proxy_dir(config: ProxyConfig) -> Path:
    """Checkpoint folder of a config: ``cache_dir()/proxies/<target>-<short hash>``."""
    from hgfn_jax import paths

    return paths.cache_dir() / "proxies" / f"{config.target}-{config.short_hash()}"


def load_proxy(
    target: str, config: ProxyConfig | str | None = None, train_if_missing: bool = True, verbose: bool = True
) -> Proxy:
    """The trained proxy for ``target`` ("formation_energy" | "band_gap").

    ``config``: a ``ProxyConfig``, a variant name ("fast" | "paper") or None (= "fast"). Loads the orbax
    checkpoint from ``proxy_dir(config)``; if it is absent, trains it on the shared data set (seed-0 split)
    and saves it there (``train_if_missing=False`` raises FileNotFoundError instead).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown proxy target {target!r}; expected one of {TARGETS}")
    if config is None or isinstance(config, str):
        config = default_config(target, config or "fast")
    if config.target != target:
        raise ValueError(f"config is for target {config.target!r}, asked for {target!r}")
    from hgfn_jax.rewards import proxy_train

    path = proxy_dir(config)
    if proxy_train.checkpoint_exists(path):
        return proxy_train.load_checkpoint(path)
    if not train_if_missing:
        raise FileNotFoundError(
            f"no trained {target} proxy at {path} (config {config.name}); train it with "
            f"python -m hgfn_jax.rewards.proxy_train --target {target}"
        )
    return proxy_train.train_and_save(config, verbose=verbose)
