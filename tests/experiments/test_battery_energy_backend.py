"""``reward.energy_backend=jax``: the battery reward's formation energy computed in-graph (models.in_graph) gives
the host-callback reference's numbers on the structures the environment actually samples, and trains. MEGNet Eform
(the cheaper compile; the JAX M3GNet's equality with matgl is tested in tests/models)."""

import jax
import numpy as np

from experiments.configs import get_config
from experiments.tasks import build_task
from experiments.train import apply_overrides
from hgfn_jax.gflownet.train import make_train
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


def test_training_with_the_in_graph_energy_is_finite():
    cfg = apply_overrides(get_config("chgflownet_battery", "test"),
                          ["reward.energy_backend=jax", f"reward.energy_model={megnet.NAME}"])
    fns = make_train(cfg, build_task(cfg))
    ts, metrics = jax.jit(lambda t: fns.run_chunk(t, 2))(fns.init(jax.random.PRNGKey(0)))
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    assert int(ts.step) == 2
