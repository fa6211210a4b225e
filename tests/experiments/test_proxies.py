"""experiments.proxies.load_or_train_proxy: trains a missing proxy (and says so), then loads the cached one."""

from __future__ import annotations

import numpy as np

from experiments import proxies as E
from hgfn_jax.crystal.elements import NUM_ELEMENTS
from hgfn_jax.models import proxy as P
from hgfn_jax.models import proxy_train as T
from hgfn_jax.models.proxy_config import ProxyConfig, ProxyModelConfig, ProxyTrainConfig
from hgfn_jax.models.proxy_data import ProxyData

TINY = ProxyConfig(
    model=ProxyModelConfig(properties_proj_size=8, z_emb_size=8, period_emb_size=4, group_emb_size=4, comp_hidden=8,
                           comp_layers=1, sg_emb_size=4, lat_hidden_channels=8, lat_num_layers=1, hidden_channels=16,
                           num_layers=1),
    train=ProxyTrainConfig(epochs=2, batch_size=32, warmup_epochs=1), name="tiny",
)


def _data(n: int = 200) -> ProxyData:
    r = np.random.default_rng(0)
    counts = np.zeros((n, NUM_ELEMENTS), np.float32)
    counts[np.arange(n), r.choice([3, 8, 26], n)] = r.integers(1, 5, n)
    lattice = np.concatenate([r.uniform(3, 8, (n, 3)), np.full((n, 3), 90.0)], 1).astype(np.float32)
    y = r.normal(0, 1, n).astype(np.float32)
    return ProxyData(counts, r.choice([1, 225], n).astype(np.int32), lattice, y, np.abs(y))


def test_trains_a_missing_proxy_visibly_then_loads_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HGFN_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_data(cell, symprec, verbose=True):
        calls.append((cell, symprec))
        return _data()

    monkeypatch.setattr(T, "load_proxy_data", fake_data)
    trained = E.load_or_train_proxy("formation_energy", TINY, verbose=False)
    out = capsys.readouterr().out
    assert "training it now" in out and str(P.proxy_dir(TINY)) in out
    assert calls == [("conventional", 0.1)] and trained.path == P.proxy_dir(TINY)

    loaded = E.load_or_train_proxy("formation_energy", TINY)
    assert "loaded" in capsys.readouterr().out and calls == [("conventional", 0.1)]  # no second training
    d = _data(16)
    np.testing.assert_array_equal(trained.predict(d.counts, d.spacegroup, d.lattice),
                                  loaded.predict(d.counts, d.spacegroup, d.lattice))
