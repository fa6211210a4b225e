"""PGCGM (paper 003): the physics-guided WGAN-GP crystal generator (data in ``hgfn_jax.data.pgcgm``)."""
