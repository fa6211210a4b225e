"""Chemical element tables indexed by atomic number Z (index 0 is padding), built once from pymatgen.

Conventions:
- Every table has length 119: ``TABLE[z]`` for Z = 1..118, ``TABLE[0]`` is the padding value (0, or NaN for
  electronegativity).
- ``ATOMIC_MASS`` in g/mol (= amu), pymatgen's standard atomic weights.
- ``ELECTRONEGATIVITY``: Pauling scale, NaN where pymatgen has none (He, Ne, Ar, most of Z >= 104).
- ``PERIOD``: row of the periodic table 1..7. ``GROUP``: 1..18 with pymatgen's convention (lanthanides and
  actinides are group 3). ``BLOCK``: 0 = s, 1 = p, 2 = d, 3 = f (pymatgen's block, La/Ac are "f").

The numpy tables are float32/int32 and can be turned into JAX arrays with ``jnp.asarray`` by consumers.
"""

from __future__ import annotations

import warnings

import numpy as np
from pymatgen.core.periodic_table import Element

MAX_Z = 118
NUM_ELEMENTS = MAX_Z + 1  # table length, index 0 = padding

_BLOCKS = {"s": 0, "p": 1, "d": 2, "f": 3}


def _build_tables():
    symbols = [""] * NUM_ELEMENTS
    mass = np.zeros(NUM_ELEMENTS, np.float32)
    chi = np.full(NUM_ELEMENTS, np.nan, np.float32)
    period = np.zeros(NUM_ELEMENTS, np.int32)
    group = np.zeros(NUM_ELEMENTS, np.int32)
    block = np.full(NUM_ELEMENTS, -1, np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns for elements without a Pauling electronegativity
        for z in range(1, NUM_ELEMENTS):
            el = Element.from_Z(z)
            symbols[z] = el.symbol
            mass[z] = float(el.atomic_mass)
            x = el.X
            chi[z] = np.nan if x is None else float(x)
            period[z] = int(el.row)
            group[z] = int(el.group)
            block[z] = _BLOCKS[el.block]
    return tuple(symbols), mass, chi, period, group, block


SYMBOLS, ATOMIC_MASS, ELECTRONEGATIVITY, PERIOD, GROUP, BLOCK = _build_tables()
for _table in (ATOMIC_MASS, ELECTRONEGATIVITY, PERIOD, GROUP, BLOCK):
    _table.setflags(write=False)
# SYMBOLS[0] == "" (padding)

_Z_OF = {s: z for z, s in enumerate(SYMBOLS) if z > 0}


def atomic_number(symbol: str) -> int:
    """Atomic number of an element symbol (case-sensitive, 'Fe' -> 26); ValueError for unknown symbols."""
    try:
        return _Z_OF[symbol]
    except (KeyError, TypeError):
        raise ValueError(f"unknown element symbol {symbol!r}") from None


def symbol(z: int) -> str:
    """Element symbol of atomic number ``z`` (1..118); ValueError otherwise (0 is padding, not an element)."""
    try:
        zi = int(z)
    except (TypeError, ValueError):
        raise ValueError(f"atomic number must be an integer in 1..{MAX_Z}, got {z!r}") from None
    if zi != z or not 1 <= zi <= MAX_Z:
        raise ValueError(f"atomic number must be an integer in 1..{MAX_Z}, got {z!r}")
    return SYMBOLS[zi]


def atomic_numbers(symbols: list[str] | tuple[str, ...]) -> np.ndarray:
    """[len] int32 atomic numbers of a list of symbols (ValueError naming the first unknown one)."""
    return np.asarray([atomic_number(s) for s in symbols], dtype=np.int32)
