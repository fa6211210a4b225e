"""Configurations of the Crystal-GFN proxies and their hash, the key of the cached checkpoint.

``ProxyConfig`` (target, architecture ``ProxyModelConfig``, optimisation ``ProxyTrainConfig``, data preparation)
determines a trained proxy; ``short_hash`` (SHA-1 of the config without its name, plus ``FEATURE_VERSION``) names
its checkpoint folder ``<target>-<hash>`` (:func:`hgfn_jax.models.proxy.proxy_dir`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

TARGETS = ("formation_energy", "band_gap")
TARGET_UNITS = {"formation_energy": "eV/atom", "band_gap": "eV"}
# Bump when features, architecture or data preparation change in a way that invalidates cached weights.
FEATURE_VERSION = 1


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
