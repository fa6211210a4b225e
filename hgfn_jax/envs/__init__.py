"""GFlowNet environments (pure-JAX, stateless, fixed shapes) implementing ``hgfn_jax.gflownet.env.Environment``.

- ``crystal_gfn``: Crystal-GFN (paper 001): space group -> composition -> lattice parameters.
"""
