"""hgfn_jax: JAX-native GFlowNets for crystal structure generation."""

__version__ = "0.1.0"
