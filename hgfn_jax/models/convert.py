"""matgl checkpoints -> numpy arrays for the JAX energy models, converted once and cached.

The checkpoint folders (``hgfn_jax.paths.model_dir()``, default ``../shared/models``) are read with
:func:`hgfn_jax.models.matgl_fix.read_checkpoint` (strict loading, key renames), and the weights must carry the
content fingerprint recorded in ``matgl_fix.CHECKPOINTS`` (the semantics the JAX models reproduce were checked
on exactly those weights); ``matgl_fix.check_matgl_compatibility`` runs as well. Either guard failing raises
``MatglCompatibilityError`` (``HGFN_MATGL_SKIP_CHECKS=1``: warn only), as on the host.

The converted arrays go to ``<cache_dir>/jax_energy_models/<name>.<sha256 of the folder's files>.v<N>.npz``
(never into the repository). A cached file is used without importing torch or matgl; it stores the weights
fingerprint it was converted from, which is checked against ``matgl_fix.CHECKPOINTS`` again on every load.

Array keys are the torch state-dict keys without the ``model.`` prefix (torch layout: Linear weights are
[out, in]), plus ``_meta.*``: ``z_to_index`` [119] int32 (position of element Z in the model's element list,
-1 if unsupported), ``target_mean`` / ``target_std`` (the data standardisation: E = out * std + mean),
``element_refs`` (PES potentials: per-element energy offsets in the model's element order, eV),
``weights_fingerprint``, ``config`` (JSON of the model's init arguments) and, for M3GNet, the spherical-Bessel
roots and normalisations matgl derives at init (``rbf_*`` of the bond expansion, ``sbf_*`` of the three-body
basis).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from hgfn_jax import paths

CONVERT_VERSION = 2
SUPPORTED = ("MEGNet-MP-2018.6.1-Eform", "M3GNet-MP-2018.6.1-Eform", "M3GNet-MP-2021.2.8-PES")
_FILES = ("model.json", "model.pt", "state.pt")


def _folder(name: str, model_dir: str | Path | None) -> Path:
    folder = paths.model_folder(name, model_dir)
    if folder is None:
        raise paths.MissingResourceError(
            f"matgl model {name!r} not found: no local models folder ({paths.model_dir()}); the JAX energy "
            "models read the checkpoint from a folder (set HGFN_MODEL_DIR, default ../shared/models)"
        )
    return folder


def files_sha256(folder: Path) -> str:
    """SHA-256 over the bytes of ``model.json``, ``model.pt`` and ``state.pt`` (the cache key)."""
    h = hashlib.sha256()
    for f in _FILES:
        path = folder / f
        if not path.is_file():
            raise FileNotFoundError(f"matgl model folder {folder} lacks {f}")
        h.update(f.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def cache_file(name: str, folder: Path) -> Path:
    return paths.cache_dir() / "jax_energy_models" / f"{name}.{files_sha256(folder)[:24]}.v{CONVERT_VERSION}.npz"


def _check_fingerprint(name: str, fingerprint: str, where: Path) -> None:
    from hgfn_jax.models import matgl_fix  # imports torch and matgl: only when a guard must run

    expected = matgl_fix.CHECKPOINTS[name].weights_sha256
    if fingerprint != expected:
        matgl_fix._fail(
            f"checkpoint {name} ({where}) has weights fingerprint {fingerprint[:16]}..., the JAX model was "
            f"validated on {expected[:16]}... (a different or re-trained model)"
        )


def _convert(name: str, folder: Path) -> dict[str, np.ndarray]:
    from hgfn_jax.models import matgl_fix

    matgl_fix.check_matgl_compatibility()
    model, fingerprint = matgl_fix.read_checkpoint(folder)
    _check_fingerprint(name, fingerprint, folder)
    inner = model.model
    potential = hasattr(model, "element_refs")  # matgl ``Potential`` (PES): data_std / data_mean / element refs
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if not key.startswith("model."):
            continue
        arrays[key[len("model.") :]] = np.asarray(value, np.float32 if value.dtype.kind == "f" else value.dtype)
    from pymatgen.core import Element

    z_to_index = np.full(119, -1, np.int32)
    for i, symbol in enumerate(inner.element_types):
        z_to_index[Element(symbol).Z] = i
    spec = json.loads((folder / "model.json").read_text())
    config = spec["kwargs"]["model"]["init_args"]
    config = {k: v for k, v in config.items() if k != "element_types"}
    config["@class"] = spec["kwargs"]["model"]["@class"]
    config["cutoff"] = float(inner.cutoff)
    if hasattr(inner, "threebody_cutoff"):
        config["threebody_cutoff"] = float(inner.threebody_cutoff)
    arrays["_meta.z_to_index"] = z_to_index
    # Spherical-Bessel constants (M3GNet): matgl derives them (not in the state dict); taken from its buffers.
    for key, module in (
        ("rbf", getattr(inner, "bond_expansion", None)),
        ("sbf", getattr(inner, "basis_expansion", None)),
    ):
        sbf = getattr(module, "rbf" if key == "rbf" else "sbf", None)
        if sbf is not None and hasattr(sbf, "roots_slice"):
            arrays[f"_meta.{key}_roots"] = sbf.roots_slice.detach().cpu().numpy().astype(np.float32)
            arrays[f"_meta.{key}_inv_norm"] = sbf.inv_norm.detach().cpu().numpy().astype(np.float32)
    if potential:  # E = data_std * model(g) + data_mean + sum_atoms element_refs[type] (``Potential.forward``)
        arrays["_meta.target_mean"] = np.asarray(float(model.data_mean), np.float64)
        arrays["_meta.target_std"] = np.asarray(float(model.data_std), np.float64)
        refs = model.element_refs.property_offset.detach().cpu().numpy().astype(np.float64)
        arrays["_meta.element_refs"] = refs
    else:
        arrays["_meta.target_mean"] = np.asarray(float(model.transformer.mean), np.float64)
        arrays["_meta.target_std"] = np.asarray(float(model.transformer.std), np.float64)
    arrays["_meta.weights_fingerprint"] = np.asarray(fingerprint)
    arrays["_meta.config"] = np.asarray(json.dumps(config, sort_keys=True))
    return arrays


@functools.cache
def _load(name: str, folder: str) -> dict[str, np.ndarray]:
    path = cache_file(name, Path(folder))
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        _check_fingerprint(name, str(arrays["_meta.weights_fingerprint"]), path)
        return arrays
    arrays = _convert(name, Path(folder))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return arrays


def checkpoint_arrays(name: str, model_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """The numpy arrays of checkpoint ``name`` (see module docstring), converted on first use and cached.

    Raises ``KeyError`` for a model without a JAX implementation, ``MissingResourceError`` if the folder is
    missing and ``MatglCompatibilityError`` if the weights are not the validated ones.
    """
    if name not in SUPPORTED:
        raise KeyError(f"no JAX implementation of matgl model {name!r}; supported: {list(SUPPORTED)}")
    return _load(name, str(_folder(name, model_dir).resolve()))


def config_of(arrays: dict[str, np.ndarray]) -> dict:
    return json.loads(str(arrays["_meta.config"]))


def check_config(arrays: dict[str, np.ndarray], expected: dict, name: str) -> None:
    """ValueError naming every init argument of the checkpoint's ``model.json`` that differs from ``expected``
    (the architecture the JAX implementation reproduces)."""
    config = config_of(arrays)
    differs = {k: (config.get(k), v) for k, v in expected.items() if config.get(k) != v}
    if differs:
        raise ValueError(f"{name}: checkpoint config differs from the JAX implementation: {differs}")


def linear(arrays: dict[str, np.ndarray], prefix: str, bias: bool = True) -> dict[str, np.ndarray]:
    """A torch ``Linear`` as ``{"w": [in, out], "b": [out]}`` (no ``b`` without bias)."""
    out = {"w": np.ascontiguousarray(arrays[f"{prefix}.weight"].T)}
    if bias:
        out["b"] = arrays[f"{prefix}.bias"]
    return out


def mlp(arrays: dict[str, np.ndarray], prefix: str, n_layers: int, stride: int = 2) -> list[dict]:
    """The Linear layers of a matgl ``MLP`` (``layers.0``, ``layers.2``, ...: activations sit in between)."""
    return [linear(arrays, f"{prefix}.{stride * i}") for i in range(n_layers)]


def lstm(arrays: dict[str, np.ndarray], prefix: str, n_layers: int) -> list[dict]:
    """A torch ``LSTM`` per layer: ``w_ih`` [in, 4H], ``w_hh`` [H, 4H], ``b`` [4H] (gates i, f, g, o)."""
    return [
        {
            "w_ih": np.ascontiguousarray(arrays[f"{prefix}.weight_ih_l{i}"].T),
            "w_hh": np.ascontiguousarray(arrays[f"{prefix}.weight_hh_l{i}"].T),
            "b": arrays[f"{prefix}.bias_ih_l{i}"] + arrays[f"{prefix}.bias_hh_l{i}"],
        }
        for i in range(n_layers)
    ]


@functools.cache
def cached_params(name: str, model_dir: str | None, from_arrays) -> dict:
    """``from_arrays(checkpoint_arrays(name, model_dir))``, once per process (each model module passes its own
    ``params_from_arrays``)."""
    return from_arrays(checkpoint_arrays(name, model_dir))
