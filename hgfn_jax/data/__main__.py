"""``python -m hgfn_jax.data``: build the parse cache of the Materials Project data set (2 processes)."""

from hgfn_jax.data.mp import main

if __name__ == "__main__":
    main()
