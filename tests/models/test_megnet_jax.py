"""The JAX MEGNet Eform equals the fixed host-side matgl model; it never reports a number for a graph it got wrong.

Reference: ``hgfn_jax.models.matgl`` (matgl 4.1.2 + ``matgl_fix``), evaluated on the pymatgen structures
parsed from the CIFs, while the JAX model reads the padded arrays of the data-set cache (lattice parameters in
the project's orientation): the comparison also covers rotation and padding. One batched compile for all cases
(see ``energy_model_cases.py``).
"""

from __future__ import annotations

import numpy as np
import pytest
from energy_model_cases import check_equal_to_host, check_packed, check_refusals, evaluate

from hgfn_jax.models import convert, megnet

TOL = 1e-4  # eV/atom


@pytest.fixture(scope="module")
def results(model_dir, energy_cases):
    return evaluate(megnet, energy_cases)


def test_megnet_jax_equals_fixed_matgl(results):
    check_equal_to_host(results, "MEGNet", TOL)


def test_megnet_jax_refuses_graphs_it_cannot_build(results):
    check_refusals(results)


def test_megnet_jax_packed_batch_equals_per_crystal(results):
    check_packed(results)


def test_jax_weights_cache_is_guarded(tmp_path, monkeypatch, model_dir):
    """A cached conversion whose fingerprint is not the validated one is refused like the host checkpoint."""
    from hgfn_jax.models.matgl_fix import MatglCompatibilityError

    arrays = convert.checkpoint_arrays(megnet.NAME)
    monkeypatch.setenv("HGFN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("HGFN_MATGL_SKIP_CHECKS", raising=False)
    path = convert.cache_file(megnet.NAME, model_dir / megnet.NAME)
    path.parent.mkdir(parents=True)
    tampered = dict(arrays)
    tampered["_meta.weights_fingerprint"] = np.asarray("0" * 64)
    np.savez(path, **tampered)
    convert._load.cache_clear()
    try:
        with pytest.raises(MatglCompatibilityError, match="fingerprint"):
            convert.checkpoint_arrays(megnet.NAME)
    finally:
        convert._load.cache_clear()
    assert str(arrays["_meta.weights_fingerprint"]) == (
        "afc355829645d51a785c3df739d74fcdd4970a1fd1037df775ff7c0da4860891"
    )
