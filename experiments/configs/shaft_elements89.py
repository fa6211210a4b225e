"""SHAFT over 89 elements, H to Pu (paper 002 sec. 5.2, Tables 7-8): the battery task's SHAFT (``shaft_battery``,
``_hierarchical.py``) with the element set widened from the battery's 12 to "89 elements from H to Pu" and no
required alkali. Everything else (T = 2 reference atoms, MEGNet encoder, eq. 8 reward with M3GNet Eform, all 230
space groups, optimiser, the ``paper`` preset's ``ceil(1e5 / (32 T)) = 1,563`` updates of 32) is the battery
config's; the paper gives no other setting for sec. 5.2.

Element list: matgl's ``DEFAULT_ELEMENTS`` ("elements supported by universal matgl models": Z = 1..94 without
Po, At, Rn, Fr, Ra), which is 89 symbols from H to Pu, i.e. the paper's "89 elements from H to Pu", and exactly the
``element_types`` of the M3GNet / MEGNet Eform checkpoints that give the reward's formation energy (so every
structure the policy can build is one the energy model has an embedding for). It is read from matgl's own
``matgl/config.py`` (:func:`matgl_default_elements`) rather than typed here; tests/experiments/
test_shaft_elements89.py checks it against ``matgl.config`` imported normally and the checkpoint's element list.

Per-element parts with all 89 (checked in the same test file):

- composition term (SMACT validity, ``hgfn_jax.crystal.chemistry``, the ``smact14`` oxidation states): an element
  without oxidation states (He, Ne, Ar) or without a Pauling electronegativity (also Pm) makes a multi-element
  composition invalid (term 0), as SMACT decides; a single element, or metals only, is valid (SMACT's fast paths).
- bond score (SHAFT eq. 7, ``physics.shaft_bond_term``): the bond statistics hold 3,569 element pairs, all among
  these 89; the other 436 of their 3,916 pairs of distinct elements (e.g. He-Ne; every self-pair is present) use
  the SHAFT reference code's defaults (mean 2.0 A, min 1.0 A; ``hgfn_jax.data.bond_stats``): a finite score.
- density (``crystal.lattice.density``), the policy's element embedding (119-row table + descriptors, unknown
  electronegativities as 0 with a flag) and the energy model (host matgl or in-graph JAX) cover Z = 1..118 / the 89.

``max_distinct_elements`` stays the battery's 4; with SHAFT's T = 2 reference atoms a structure has at most 2
elements anyway, so it never binds (the paper gives no limit for sec. 5.2).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

from experiments.configs._hierarchical import battery_config


@functools.lru_cache(maxsize=1)
def matgl_default_elements() -> tuple[str, ...]:
    """matgl's ``DEFAULT_ELEMENTS`` (``matgl/config.py``), without importing the matgl package: its ``__init__``
    loads torch and DGL (seconds), while ``config.py`` needs only pymatgen. The module already imported is used."""
    if "matgl.config" in sys.modules:
        return tuple(sys.modules["matgl.config"].DEFAULT_ELEMENTS)
    spec = importlib.util.find_spec("matgl")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("matgl is not installed: it supplies the element list of shaft_elements89")
    path = Path(next(iter(spec.submodule_search_locations))) / "config.py"
    module_spec = importlib.util.spec_from_file_location("_hgfn_matgl_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return tuple(module.DEFAULT_ELEMENTS)


def get_config(preset: str = "default"):
    c = battery_config("shaft", preset)
    elements = matgl_default_elements()
    if len(elements) != 89 or elements[0] != "H" or elements[-1] != "Pu":
        raise RuntimeError(f"matgl's DEFAULT_ELEMENTS is no longer the paper's 89 elements H..Pu: {elements}")
    # every preset, test included, keeps all 89 elements: the point of the experiment
    c.env.elements = elements
    c.env.required_elements = ()  # no alkali (or any other element) is required in sec. 5.2
    c.env.max_required_kinds = 0
    c.env.max_distinct_elements = 4  # the battery's; never binds with T = 2 (see the module docstring)
    c.task_name = "shaft_elements89"  # summary.json's "task" (the battery builder's default: shaft_battery)
    return c
