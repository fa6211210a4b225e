"""Where data, models and caches live.

Data and pretrained models are read-only inputs that never enter the repository. Their folders come from
``HGFN_DATA_DIR`` / ``HGFN_MODEL_DIR``; by default ``../shared/data`` and ``../shared/models`` next to the
project root (or next to the current directory). Caches (parsed data, trained proxies) go to ``HGFN_CACHE_DIR``,
by default ``<project root>/.cache``.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

_SOURCES = {
    "data": (
        "HGFN_DATA_DIR",
        "cgcnn_mp_36737.csv.gz (36,737 Materials Project crystals, the CGCNN data set: "
        "https://github.com/txie-93/cgcnn) and bond_distance_stats.json.gz (CHGFlowNet release)",
    ),
    "models": (
        "HGFN_MODEL_DIR",
        "pretrained matgl model folders (https://github.com/materialsvirtuallab/matgl, pretrained_models/)",
    ),
}


class MissingResourceError(FileNotFoundError):
    """A data file or model folder that the project needs is not where the settings say."""


def _candidates(kind: str) -> list[Path]:
    return [PROJECT_ROOT.parent / "shared" / kind, Path.cwd().parent / "shared" / kind]


def _resolve(kind: str) -> Path:
    env, _ = _SOURCES[kind]
    value = os.environ.get(env)
    if value:
        return Path(value).expanduser().resolve()
    for cand in _candidates(kind):
        if cand.is_dir():
            return cand.resolve()
    return _candidates(kind)[0]


def data_dir() -> Path:
    """Folder holding the shared data set (``HGFN_DATA_DIR``, default ``../shared/data``)."""
    return _resolve("data")


def model_dir() -> Path:
    """Folder holding pretrained matgl model folders (``HGFN_MODEL_DIR``, default ``../shared/models``)."""
    return _resolve("models")


def cache_dir() -> Path:
    """Writable cache folder (``HGFN_CACHE_DIR``, default ``<project>/.cache``); created on demand."""
    path = Path(os.environ.get("HGFN_CACHE_DIR", PROJECT_ROOT / ".cache")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def require_file(kind: str, name: str) -> Path:
    """Path of ``name`` inside the data/models folder, or a clear error saying what is missing and where from."""
    base = _resolve(kind)
    path = base / name
    if not path.exists():
        env, source = _SOURCES[kind]
        raise MissingResourceError(
            f"missing {kind} resource {name!r}: looked for {path}. Set {env} to the folder that holds it "
            f"(default ../shared/{kind} beside the project). Public source: {source}."
        )
    return path


def model_folder(name: str, model_dir: str | Path | None = None) -> Path | None:
    """The local folder of pretrained model ``name``: ``<model_dir or model_dir()>/<name>``.

    Returns None only when no local folder is set at all (no ``model_dir``, no ``HGFN_MODEL_DIR``, no default
    ``../shared/models``): then, and only then, a loader may fetch the model by name from a hub. With a
    local-folder setting a missing folder raises :class:`MissingResourceError` at once (no hub lookup: on an
    offline machine that takes minutes of retries before failing). Cheap: nothing heavy is imported.
    """
    explicit = model_dir is not None or bool(os.environ.get("HGFN_MODEL_DIR"))
    base = Path(model_dir).expanduser() if model_dir is not None else _resolve("models")
    folder = base / name
    if folder.is_dir():
        return folder
    if explicit or base.is_dir():
        setting = "model_dir" if model_dir is not None else ("HGFN_MODEL_DIR" if explicit else "the default")
        raise MissingResourceError(
            f"matgl model {name!r} not found: no folder {folder} (models folder from {setting}). Set "
            f"HGFN_MODEL_DIR to the folder that holds {name}/ (default ../shared/models), or pass model_dir. "
            f"Public source: {_SOURCES['models'][1]}."
        )
    return None

