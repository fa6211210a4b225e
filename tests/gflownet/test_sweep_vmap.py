"""The vmapped sweep runs every grid point exactly as a single run would."""

import jax
import numpy as np

from experiments.configs import get_config
from experiments.sweep import run_sweep
from experiments.tasks import build_task
from hgfn_jax.gflownet.train import make_train


def test_sweep_grid_point_equals_single_run():
    cfg = get_config("hypergrid", "test")
    results, metrics, _ = run_sweep(cfg, seeds=[0, 3], lrs=[1e-3, float(cfg.train.lr)], lr_zs=[0.1])
    assert len(results) == 4
    _, _, _, train, _ = make_train(cfg, build_task(cfg))
    _, single = jax.jit(train)(jax.random.PRNGKey(3))
    i = [(r["seed"], r["lr"]) for r in results].index((3, float(cfg.train.lr)))
    np.testing.assert_allclose(metrics["loss"][i], np.asarray(single["loss"]), rtol=1e-4, atol=1e-5)
    # different learning rates really give different runs
    j = [(r["seed"], r["lr"]) for r in results].index((3, 1e-3))
    assert not np.allclose(metrics["loss"][i], metrics["loss"][j])
