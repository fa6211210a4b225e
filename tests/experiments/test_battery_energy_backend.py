"""``reward.energy_backend=jax``: the battery reward's formation energy computed in-graph (models.in_graph) gives
the host-callback reference's numbers on the structures the environment actually samples, and trains. MEGNet Eform
(the cheaper compile; the JAX M3GNet's equality with matgl is tested in tests/models)."""

import jax
import numpy as np
import pytest

from experiments.configs import get_config
from experiments.tasks import build_task
from experiments.train import apply_overrides
from hgfn_jax.gflownet.train import make_train, train_and_evaluate
from hgfn_jax.models import megnet
from hgfn_jax.models.graph import radius_graph


def test_in_graph_energy_equals_the_host_bridge_on_sampled_cells():
    cfg = apply_overrides(get_config("chgflownet_battery", "test"), [f"reward.energy_model={megnet.NAME}"])
    host = build_task(cfg)
    jx = build_task(apply_overrides(cfg.copy_and_resolve_references(), ["reward.energy_backend=jax"]))
    assert jx.host_stats is None and jx.extras["energy_bridge"] is None
    _, _, _, _, sample = make_train(cfg, host)
    params = make_train(cfg, host).init(jax.random.PRNGKey(0)).params
    final = sample(params, jax.random.PRNGKey(1), 64).final
    r_host, t_host = jax.jit(jax.vmap(host.log_reward))(final)
    r_jax, t_jax = jax.jit(jax.vmap(jx.log_reward))(final)
    # cells whose 4 A graph the padded JAX model cannot hold (more than k neighbours, or too thin for the image
    # window) are refused in-graph whatever the host does; every other cell must agree
    g = jax.jit(jax.vmap(lambda c: radius_graph(c, megnet.CUTOFF, megnet.DEFAULT_K)))(final.crystal)
    same = ~np.asarray(g.overflow)
    assert same.sum() >= 40, same.sum()
    np.testing.assert_allclose(np.asarray(r_jax)[same], np.asarray(r_host)[same], atol=1e-3)
    for k in t_host:
        np.testing.assert_allclose(np.asarray(t_jax[k])[same], np.asarray(t_host[k])[same], atol=1e-3, err_msg=k)
    stats = host.extras["energy_bridge"].stats()
    assert stats["valid"] > 0  # the comparison covers evaluated energies, not only penalties


def test_training_and_evaluation_with_the_in_graph_energy(tmp_path):
    """A whole run with the in-graph energy: finite training, then the run's evaluation (top-k metrics, CIFs,
    the suite's report). The in-graph backend has no host bridge: refused energies are counted at the reward's
    penalty (the evaluation once read it from the bridge and raised AttributeError after training)."""
    import json

    cfg = apply_overrides(get_config("chgflownet_battery", "test"),
                          ["reward.energy_backend=jax", f"reward.energy_model={megnet.NAME}",
                           "train.num_iterations=2"])
    cfg.eval.untrained_reference = False
    cfg.eval.suite.enabled = False  # the suite reads the CIFs with host models: the same for either backend
    task = build_task(cfg)
    assert task.extras["energy_bridge"] is None and task.host_stats is None
    out = train_and_evaluate(cfg, task, tmp_path, progress=False)
    assert int(out["state"].step) == 2
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    loss = [float(r.split(",")[rows[0].split(",").index("loss")]) for r in rows[1:]]
    assert len(loss) == 2 and np.isfinite(loss).all()
    summary = json.loads((tmp_path / "summary.json").read_text())
    top = summary["trained_top_k"]
    assert top["n"] == cfg.eval.top_k and 0.0 <= top["structure_validity"] <= 1.0
    assert summary["cifs_written"] > 0
    assert summary["trained_top_k"]["energy_refused_frac"] + summary["trained_top_k"]["energy_valid_frac"] == \
        pytest.approx(1.0)
