"""Helpers of the JAX energy-model tests: evaluate a model on the shared cases and check it against the host."""

from __future__ import annotations

import numpy as np


def evaluate(module, cases) -> dict:
    """JAX ``module.energy`` (one batched compile) and the fixed host model on the cases (refusals: JAX only)."""
    import jax
    import jax.numpy as jnp

    from hgfn_jax.crystal.convert import stack
    from hgfn_jax.models.graph import radius_graph
    from hgfn_jax.models.matgl import get_property_model

    structures, crystals, labels, expect = cases
    params = module.load_params()
    batch = jax.tree_util.tree_map(jnp.asarray, stack(crystals))

    def one(p, c):  # the graph's flags from the same compile (XLA shares the neighbour search)
        g = radius_graph(c, module.CUTOFF, module.DEFAULT_K)
        return (*module.energy(p, c), g.overflow, g.n_edges)

    e, valid, overflow, n_edges = jax.jit(jax.vmap(one, in_axes=(None, 0)))(params, batch)
    # Packed batch path with a capacity that holds every edge but those of the last two data-set cells.
    n = int(expect.sum())
    capacity = int(np.cumsum(np.asarray(n_edges))[n - 3])
    e_packed, valid_packed = jax.jit(lambda p, c: module.energy_batch(p, c, edge_capacity=capacity))(params, batch)
    host, host_ok = get_property_model(module.NAME).predict(structures[: int(expect.sum())])
    return {
        "e": np.asarray(e, np.float64),
        "valid": np.asarray(valid),
        "host": host,
        "host_ok": host_ok,
        "labels": labels,
        "expect": expect,
        "overflow": np.asarray(overflow),
        "e_packed": np.asarray(e_packed, np.float64),
        "valid_packed": np.asarray(valid_packed),
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


def check_packed(results: dict, tol: float = 1e-5) -> None:
    """energy_batch equals vmap(energy) where the edges fit; the crystals beyond the capacity are refused."""
    n = int(results["expect"].sum())
    valid, e = results["valid"], results["e"]
    vp, ep = results["valid_packed"], results["e_packed"]
    np.testing.assert_array_equal(vp[: n - 2], valid[: n - 2])
    assert valid[n - 2 : n].all() and not vp[n - 2 :].any()  # did not fit / refusals
    assert np.isnan(ep[~vp]).all()
    np.testing.assert_allclose(ep[: n - 2][vp[: n - 2]], e[: n - 2][vp[: n - 2]], atol=tol, rtol=0)
