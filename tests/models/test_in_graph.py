"""In-graph property function (``models.in_graph``) against the host bridge it replaces: same values where both
evaluate, same refusals for the bridge's input screens, the JAX model's own refusals marked invalid."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hgfn_jax.crystal.convert import stack
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.models.host_bridge import make_property_fn
from hgfn_jax.models.in_graph import make_jax_property_fn

MEGNET = "MEGNet-MP-2018.6.1-Eform"
CLAMP = (-10.0, 10.0)


def _replace(c: Crystal, **kw) -> Crystal:
    fields = {k: np.array(getattr(c, k)) for k in ("lattice", "frac", "species", "mask", "spacegroup", "overflow")}
    fields.update({k: np.asarray(v) for k, v in kw.items()})
    return Crystal(**fields)


def _screen_cases(crystals: list[Crystal]) -> tuple[list[Crystal], list[str]]:
    """Broken inputs the bridge screens before its model (the reason it reports)."""
    g = crystals[0]
    n = int(np.sum(g.mask))
    assert n >= 2
    frac = np.array(g.frac)
    frac[1] = (frac[0] + np.array([0.01, 0.0, 0.0])) % 1.0
    lat = np.array(g.lattice)
    from pymatgen.core import Lattice

    vpa = Lattice.from_parameters(*lat).volume / n
    dense = (1.9 / vpa) ** (1 / 3)  # 1.9 A^3 per atom: below the 2.0 screen
    out = [
        (_replace(g, frac=frac), "overlapping_atoms"),
        (_replace(g, lattice=np.r_[lat[:3] * dense, lat[3:]].astype(np.float32)), "too_dense"),
        (_replace(g, lattice=np.array([np.nan, 5, 5, 90, 90, 90], np.float32)), "nonfinite_input"),
        (_replace(g, lattice=np.array([5, 5, 5, 90, 90, 179.99], np.float32)), "degenerate_lattice"),
        (_replace(g, species=np.where(np.array(g.mask), 200, 0).astype(np.int32)), "invalid_species"),
        (_replace(g, mask=np.zeros_like(np.array(g.mask))), "empty"),
        (_replace(g, lattice=np.r_[lat[:3] * 400.0, lat[3:]].astype(np.float32)), "huge_cell"),
    ]
    return [c for c, _ in out], [r for _, r in out]


@pytest.fixture(scope="module")
def both(energy_cases):
    _, crystals, labels, _ = energy_cases
    screens, reasons = _screen_cases(crystals)
    batch = jax.tree.map(jnp.asarray, stack(list(crystals) + screens))
    jax_fn = make_jax_property_fn(MEGNET, clamp=CLAMP)
    v_jax, ok_jax, _ = jax.jit(jax.vmap(jax_fn))(batch)
    bridge = make_property_fn(MEGNET, clamp=CLAMP, max_sites=64)
    v_host, ok_host = jax.jit(jax.vmap(bridge))(batch)
    return {"v_jax": np.asarray(v_jax), "ok_jax": np.asarray(ok_jax), "v_host": np.asarray(v_host),
            "ok_host": np.asarray(ok_host), "n_cases": len(crystals), "labels": list(labels) + reasons,
            "stats": bridge.stats()}


def test_values_equal_the_host_bridge_where_both_evaluate(both):
    ok = both["ok_jax"] & both["ok_host"]
    assert ok.sum() >= 55  # the data-set and skewed cells
    np.testing.assert_allclose(both["v_jax"][ok], both["v_host"][ok], atol=1e-4)


def test_every_bridge_screen_is_refused_in_graph(both):
    n = both["n_cases"]
    assert not both["ok_host"][n:].any()  # the bridge refuses each screen case ...
    assert set(both["stats"]["failures"]) >= {"overlapping_atoms", "too_dense", "nonfinite_input",
                                              "degenerate_lattice", "invalid_species", "empty", "huge_cell"}
    for i in range(n, len(both["labels"])):  # ... and so does the in-graph function, with the same value
        assert not both["ok_jax"][i], both["labels"][i]
        assert both["v_jax"][i] == CLAMP[1] == both["v_host"][i]


def test_refusals_agree_with_the_bridge(both):
    """Same valid flag as the bridge on every case (e.g. a cell with no bond within the cutoff is refused by both),
    except the padded graph's capacity refusals (a 20-atom 4.5 A cube, a 1.3 A cell): invalid in-graph, whatever
    the host does with them."""
    n = both["n_cases"]
    labels = both["labels"][:n]
    capacity = np.array([lab in ("dense", "thin") for lab in labels])
    assert not both["ok_jax"][:n][capacity].any()
    differ = [lab for lab, j, h, c in zip(labels, both["ok_jax"][:n], both["ok_host"][:n], capacity, strict=True)
              if j != h and not c]
    assert not differ, differ
    assert (~both["ok_host"][:n] & ~capacity).sum() >= 2  # Am and the overflow flag at least
    assert np.isfinite(both["v_jax"]).all()
    assert (both["v_jax"][~both["ok_jax"]] == CLAMP[1]).all()


def test_bad_settings_fail_before_loading_the_model():
    with pytest.raises(ValueError, match="no in-graph JAX model"):
        make_jax_property_fn("MEGNet-MP-2019.4.1-BandGap-mfi")
    with pytest.raises(ValueError, match="clamp"):
        make_jax_property_fn(MEGNET, clamp=(1.0, -1.0))
