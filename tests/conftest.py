"""Shared fixtures: fresh PRNG keys, NaN debugging, and the shared data/model folders."""

from __future__ import annotations

import itertools
import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax
import pytest

from hgfn_jax import paths

_counter = itertools.count()


@pytest.fixture
def rng():
    """A fresh PRNG key per use: call ``rng()`` to get a new key."""
    base = jax.random.PRNGKey(1234)

    def _next():
        return jax.random.fold_in(base, next(_counter))

    return _next


@pytest.fixture
def debug_nans():
    """Turn on jax_debug_nans for one test (any NaN produced under jit raises)."""
    jax.config.update("jax_debug_nans", True)
    try:
        yield
    finally:
        jax.config.update("jax_debug_nans", False)


@pytest.fixture(scope="session")
def data_dir():
    path = paths.data_dir()
    if not (path / "cgcnn_mp_36737.csv.gz").exists():
        pytest.fail(f"shared data set not found at {path}: set HGFN_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def model_dir():
    path = paths.model_dir()
    if not path.is_dir():
        pytest.fail(f"shared model folder not found at {path}: set HGFN_MODEL_DIR")
    return path
