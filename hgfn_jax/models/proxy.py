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
groups (``crystal.spacegroup.RHOMBOHEDRAL_SPACEGROUPS``) pass hexagonal axes:
``crystal.lattice.rhombohedral_to_hexagonal`` converts a rhombohedral-axes cell (the counts must then be those of
the hexagonal cell, 3x the rhombohedral one).

Invalid inputs
--------------
``Proxy.predict`` (host side) raises ``ValueError`` naming the problem. The pure ``Proxy.apply`` /
``apply_proxy`` are jit/vmap-safe and never raise: for an invalid row (space group outside 1..230, a negative
or non-finite count, no atoms, non-finite lattice, a non-positive length, an angle outside (0, 180) or a
degenerate cell) they return NaN for that row, so a bad input cannot pass as a plausible reward. Features and
input checks: :mod:`hgfn_jax.models.proxy_features`.

Trained weights are cached as one orbax checkpoint under ``paths.cache_dir() / "proxies" / <target>-<config
hash>``. This module only LOADS them (``load_proxy``: a missing checkpoint is an error naming the command that
trains it); training is :mod:`hgfn_jax.models.proxy_train`, and ``experiments.proxies.load_or_train_proxy``
decides, visibly, to train a missing one.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hgfn_jax.crystal import elements as el
from hgfn_jax.crystal.elements import NUM_ELEMENTS
from hgfn_jax.models.proxy_config import (
    TARGET_UNITS,
    TARGETS,
    ProxyConfig,
    ProxyModelConfig,
    default_config,
)
from hgfn_jax.models.proxy_features import (
    NUM_LATTICE_FEATURES,
    NUM_SPACEGROUPS,
    composition_and_lattice_features,
    element_property_table,
    input_validity,
    validate_inputs,
)

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
        zs = jnp.arange(NUM_ELEMENTS)
        e_z = nn.Embed(NUM_ELEMENTS, cfg.z_emb_size, name="z_emb")(zs)
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
    counts = np.zeros((1, NUM_ELEMENTS), np.float32)
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


# ----------------------------------------------------------------------------------------------------------
# Checkpoints (written by hgfn_jax.models.proxy_train.save_checkpoint)
# ----------------------------------------------------------------------------------------------------------

# One orbax checkpoint per proxy: a composite of the variables (``state``, StandardSave) and the config + training
# metrics (``meta``, JsonSave); orbax writes it atomically (temporary folder, renamed when complete).
STATE_ITEM, META_ITEM = "state", "meta"
_LEGACY_META = "proxy.json"  # read-only: checkpoints written before the orbax composite (state/ + proxy.json)


class ProxyNotTrainedError(FileNotFoundError):
    """No trained proxy for a config; the message names the command that trains it."""


def train_command(config: ProxyConfig) -> str:
    """How to train and cache ``config``: the CLI for the named variants, else the Python call."""
    if config.name in ("fast", "paper") and config == default_config(config.target, config.name):
        return f"python -m hgfn_jax.models.proxy_train --target {config.target} --config {config.name}"
    return "hgfn_jax.models.proxy_train.train_and_save(config)"


def checkpoint_exists(path: Path) -> bool:
    """A complete checkpoint at ``path`` (orbax only renames a checkpoint into place once it is complete)."""
    path = Path(path)
    if (path / META_ITEM).is_dir() and (path / STATE_ITEM).is_dir():
        return True
    return (path / _LEGACY_META).is_file() and (path / STATE_ITEM).is_dir()


def load_checkpoint(path: Path) -> Proxy:
    """The ``Proxy`` stored at ``path``."""
    import orbax.checkpoint as ocp

    path = Path(path).resolve()
    if not checkpoint_exists(path):
        raise ProxyNotTrainedError(f"no proxy checkpoint at {path} (expected orbax items {STATE_ITEM}/, {META_ITEM}/)")
    if (path / META_ITEM).is_dir():
        with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
            meta = ckptr.restore(path, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))[META_ITEM]
            config = ProxyConfig.from_dict(meta["config"])
            abstract = _abstract_variables(config)
            restored = ckptr.restore(path, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore(abstract)}))
            variables = restored[STATE_ITEM]
    else:  # legacy layout: orbax StandardCheckpointer at state/, JSON beside it
        meta = json.loads((path / _LEGACY_META).read_text())
        config = ProxyConfig.from_dict(meta["config"])
        with ocp.StandardCheckpointer() as ckptr:
            variables = ckptr.restore(path / STATE_ITEM, _abstract_variables(config))
    return Proxy(config, variables, metrics=meta.get("metrics", {}), path=path)


def _abstract_variables(config: ProxyConfig):
    model = ProxyModel(config.model)
    return jax.eval_shape(lambda: init_variables(model, jax.random.PRNGKey(0)))


def resolve_config(target: str, config: ProxyConfig | str | None = None) -> ProxyConfig:
    """``config`` as a ``ProxyConfig``: a config, a variant name ("fast" | "paper") or None (= "fast")."""
    if target not in TARGETS:
        raise ValueError(f"unknown proxy target {target!r}; expected one of {TARGETS}")
    if config is None or isinstance(config, str):
        config = default_config(target, config or "fast")
    if config.target != target:
        raise ValueError(f"config is for target {config.target!r}, asked for {target!r}")
    return config


def load_proxy(target: str, config: ProxyConfig | str | None = None) -> Proxy:
    """The trained proxy for ``target`` ("formation_energy" | "band_gap") from its cached checkpoint.

    ``config``: a ``ProxyConfig``, a variant name ("fast" | "paper") or None (= "fast"). Loads only: a missing
    checkpoint raises :class:`ProxyNotTrainedError` naming the command that trains it (training is
    ``hgfn_jax.models.proxy_train``; experiments decide visibly whether to train, ``experiments.proxies``).
    """
    config = resolve_config(target, config)
    path = proxy_dir(config)
    if not checkpoint_exists(path):
        raise ProxyNotTrainedError(
            f"no trained {target} proxy at {path} (config {config.name!r}, hash {config.short_hash()}); "
            f"train it with: {train_command(config)}"
        )
    return load_checkpoint(path)
