"""Crystallography core: symmetry tables, lattices, orbit expansion, periodic geometry, conversion.

Pure JAX, jit/vmap-safe, fixed shapes; no learning and no GFlowNet code lives here.
"""
