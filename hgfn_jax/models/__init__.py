"""Learned energy models in JAX on matgl's pretrained weights (in-graph, jit/vmap-able; issue 13).

- :mod:`hgfn_jax.models.megnet`: MEGNet-MP-2018.6.1-Eform, ``energy(params, crystal) -> (e_form, valid)`` (one
  padded crystal; vmap it) and ``energy_batch(params, crystals)`` (packed edges of a batch, same numbers).
- :mod:`hgfn_jax.models.m3gnet`: M3GNet-MP-2018.6.1-Eform, same interface.
- :mod:`hgfn_jax.models.graph`: matgl's radius graph on a padded crystal (fixed capacity, overflow flag).
- :mod:`hgfn_jax.models.convert`: checkpoint -> numpy arrays, converted once and cached (fingerprint-guarded).

The host-side torch models (:mod:`hgfn_jax.models.matgl`) stay the reference; tests in
``tests/models`` compare the two on data-set crystals.
"""
