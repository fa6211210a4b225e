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
