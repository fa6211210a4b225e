"""Helpers of the JAX energy-model tests: evaluate a model on the shared cases and check it against the host."""

from __future__ import annotations

import numpy as np


def evaluate(module, cases) -> dict:
    """JAX ``module.energy`` (one batched compile) and the fixed host model on the cases (refusals: JAX only)."""
    import jax
    import jax.numpy as jnp

    from hgfn_jax.crystal.convert import stack
    from hgfn_jax.models.graph import radius_graph
    from hgfn_jax.rewards.energy_models import get_property_model

    structures, crystals, labels, expect = cases
    params = module.load_params()
    batch = jax.tree_util.tree_map(jnp.asarray, stack(crystals))

    def one(p, c):  # the graph's overflow flag from the same compile (XLA shares the neighbour search)
        return (*module.energy(p, c), radius_graph(c, module.CUTOFF, module.DEFAULT_K).overflow)

    e, valid, overflow = jax.jit(jax.vmap(one, in_axes=(None, 0)))(params, batch)
    host, host_ok = get_property_model(module.NAME).predict(structures[: int(expect.sum())])
    return {
        "e": np.asarray(e, np.float64),
        "valid": np.asarray(valid),
        "host": host,
        "host_ok": host_ok,
        "labels": labels,
        "expect": expect,
        "overflow": np.asarray(overflow),
    }


def check_equal_to_host(results: dict, name: str, tol: float) -> None:
    n = int(results["expect"].sum())
    e, valid, host = results["e"][:n], results["valid"][:n], results["host"]
    ok = results["host_ok"]
    assert ok.sum() >= n - 2  # the host refuses cells without any bond within the cutoff (no_bonds), as JAX must
    np.testing.assert_array_equal(valid, ok, err_msg=str(results["labels"]))
    err = np.abs(e - host)[ok]
    print(f"{name} JAX vs matgl: {ok.sum()} cells, max |diff| {err.max():.2e} eV/atom")
    worst = np.asarray(results["labels"][:n])[ok][int(np.argmax(err))]
    assert err.max() < tol, f"max |JAX - matgl| = {err.max():.2e} eV/atom at {worst}"
    # the skewed cells are the same crystals: same energy as the originals
    np.testing.assert_allclose(e[n - 4 :], e[:4], atol=tol)


def check_refusals(results: dict) -> None:
    n = int(results["expect"].sum())
    valid, e = results["valid"][n:], results["e"][n:]
    assert not valid.any(), dict(zip(results["labels"][n:], valid, strict=True))
    assert np.isnan(e).all()
    overflow = results["overflow"]
    assert overflow[n] and overflow[n + 1]  # dense: capacity; thin: window and capacity
    assert not overflow[:n].any()
