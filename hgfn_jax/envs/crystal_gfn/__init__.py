"""Crystal-GFN (paper 001) as a pure-JAX GFlowNet environment: space group, composition, lattice parameters.

Public API: :class:`CrystalGFN` (the environment), :class:`Restrictions` and the paper's restrictions
(``FE_O``, ``LI_MN_O``, ``CUBIC``, ``LATTICE_10_20``), the state/action PyTrees, and the paper defaults.
"""

from hgfn_jax.envs.crystal_gfn.defaults import PAPER_ELEMENTS, PAPER_SPACEGROUPS
from hgfn_jax.envs.crystal_gfn.env import CrystalGFN
from hgfn_jax.envs.crystal_gfn.restrictions import (
    CUBIC,
    FE_O,
    LATTICE_10_20,
    LI_MN_O,
    PAPER_RESTRICTIONS,
    Restrictions,
)
from hgfn_jax.envs.crystal_gfn.types import (
    STAGE_COMPOSITION,
    STAGE_DONE,
    STAGE_LATTICE,
    STAGE_SPACEGROUP,
    CrystalAction,
    CrystalState,
)

__all__ = [
    "CUBIC",
    "FE_O",
    "LATTICE_10_20",
    "LI_MN_O",
    "PAPER_ELEMENTS",
    "PAPER_RESTRICTIONS",
    "PAPER_SPACEGROUPS",
    "STAGE_COMPOSITION",
    "STAGE_DONE",
    "STAGE_LATTICE",
    "STAGE_SPACEGROUP",
    "CrystalAction",
    "CrystalGFN",
    "CrystalState",
    "Restrictions",
]
