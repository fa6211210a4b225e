"""Learned property models: the Crystal-GFN proxies, matgl's models on the host, and in-graph JAX energy models.

- :mod:`hgfn_jax.models.proxy` (configs in ``proxy_config``, inputs in ``proxy_features``): the Crystal-GFN proxy
  MLPs, LOAD only (a missing checkpoint raises, naming the command); :mod:`hgfn_jax.models.proxy_train` trains
  them (data: ``proxy_data``) and writes the orbax checkpoint.
- :mod:`hgfn_jax.models.matgl` (+ ``matgl_fix``): matgl's pretrained models on the host, with the right numbers;
  :mod:`hgfn_jax.models.host_bridge`: calls them from jit (``jax.pure_callback``), failures counted, not raised.

In JAX on matgl's pretrained weights (in-graph, jit/vmap-able; issue 13):

- :mod:`hgfn_jax.models.megnet`: MEGNet-MP-2018.6.1-Eform, ``energy(params, crystal) -> (e_form, valid)`` (one
  padded crystal; vmap it) and ``energy_batch(params, crystals)`` (packed edges of a batch, same numbers).
- :mod:`hgfn_jax.models.m3gnet`: M3GNet-MP-2018.6.1-Eform, same interface.
- :mod:`hgfn_jax.models.graph`: matgl's radius graph on a padded crystal (fixed capacity, overflow flag).
- :mod:`hgfn_jax.models.convert`: checkpoint -> numpy arrays, converted once and cached (fingerprint-guarded).

The host-side torch models (:mod:`hgfn_jax.models.matgl`) stay the reference; tests in
``tests/models`` compare the two on data-set crystals.
"""
