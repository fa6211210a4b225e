"""The one cell-validity rule (crystal.lattice.valid_cell) against float64 numpy on random and hand-made cells."""

from __future__ import annotations

import jax
import numpy as np

from hgfn_jax.crystal import lattice as L


def _nv2_float64(p: np.ndarray) -> np.ndarray:
    c = np.cos(np.deg2rad(p[:, 3:].astype(np.float64)))
    return 1 - (c**2).sum(1) + 2 * c.prod(1)


def test_valid_cell_matches_float64_away_from_the_boundary():
    r = np.random.default_rng(0)
    p = np.concatenate([r.uniform(0.5, 50, (20000, 3)), r.uniform(30, 170, (20000, 3))], 1).astype(np.float32)
    nv2 = _nv2_float64(p)
    clear = np.abs(nv2) > 1e-5  # float32 rounding of the direct expression is ~1e-7
    for exact in (True, False):
        for tol in (0.0, 1e-3, 0.1):
            got = np.asarray(jax.jit(lambda x, e=exact, t=tol: L.valid_cell(x, t, exact=e))(p))
            want = (nv2 > 0) & (nv2 >= tol * tol)
            sel = clear & (np.abs(nv2 - tol * tol) > 1e-5)
            np.testing.assert_array_equal(got[sel], want[sel])
    assert (~clear).sum() < 50 and 0.1 < (nv2 <= 0).mean() < 0.9  # both kinds of cells occur


def test_invalid_inputs_and_is_degenerate():
    bad = np.array([[np.nan, 1, 1, 90, 90, 90], [0, 1, 1, 90, 90, 90], [-1, 1, 1, 90, 90, 90], [1, 1, 1, 0, 90, 90],
                    [1, 1, 1, 180, 90, 90], [1, 1, 1, 90, np.inf, 90], [1, 1, 1, 60, 60, 120],  # flat: V = 0
                    [1, 1, 1, 100, 100, 170]], np.float32)  # impossible: alpha + beta + gamma > 360
    for exact in (True, False):
        assert not np.asarray(L.valid_cell(bad, 0.0, exact=exact)).any()
    cube = np.array([2, 3, 4, 90, 90, 90], np.float32)
    assert bool(L.valid_cell(cube)) and not bool(L.is_degenerate(cube))
    flat = np.array([2, 3, 4, 89.99, 0.05, 90], np.float32)  # V / abc ~ 9e-4 < 1e-3: degenerate, but a cell
    assert bool(L.is_degenerate(flat)) and bool(L.valid_cell(flat, 0.0))
    assert np.asarray(jax.vmap(L.is_degenerate)(bad)).all()
