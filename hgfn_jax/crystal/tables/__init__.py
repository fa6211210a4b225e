"""Generated space-group tables (``spacegroups.npz``) and their generator.

Regenerate with ``python -m hgfn_jax.crystal.tables.generate`` (or ``make tables``).

Read them through :mod:`hgfn_jax.crystal.spacegroup` (``get_tables()`` for JAX, ``host_tables()`` for numpy).
"""

from pathlib import Path

TABLES_PATH = Path(__file__).resolve().parent / "spacegroups.npz"

__all__ = ["TABLES_PATH"]
