"""The JAX M3GNet Eform equals the fixed host-side matgl model (fixes 1 and 2 of ``matgl_fix``) on the shared
cases of ``conftest.py`` (data-set cells of <= 20 sites, skewed cells, high-symmetry groups) and refuses the
graphs it cannot build."""

from __future__ import annotations

import pytest
from energy_model_cases import check_equal_to_host, check_packed, check_refusals, evaluate

from hgfn_jax.models import m3gnet

TOL = 1e-4  # eV/atom


@pytest.fixture(scope="module")
def results(model_dir, energy_cases):
    return evaluate(m3gnet, energy_cases)


def test_m3gnet_jax_equals_fixed_matgl(results):
    check_equal_to_host(results, "M3GNet", TOL)


def test_m3gnet_jax_refuses_graphs_it_cannot_build(results):
    check_refusals(results)


def test_m3gnet_jax_packed_batch_equals_per_crystal(results):
    check_packed(results)
