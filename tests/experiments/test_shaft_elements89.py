"""``shaft_elements89`` (paper 002 sec. 5.2, Tables 7-8): SHAFT over the 89 elements H..Pu. The element list is
matgl's (and the energy model's); the environment of the test preset (all 89 elements) samples through the jitted
rollout with finite log-rewards; the reward terms on cells of every one of the 89 elements (and a few hand-built
ones outside the battery set: noble gases, a lanthanide, actinides, pairs absent from the bond statistics) are
finite and equal independent references: SMACT itself for the composition term, pymatgen for the density and
the neighbours of the bond score, the energy model through the host bridge (matgl) for the energy."""

from __future__ import annotations

import collections
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pymatgen.core import Element, Lattice, Structure
from references import shaft_bond_score

from experiments.configs import PRESETS, get_config
from experiments.tasks import build_task
from hgfn_jax import paths
from hgfn_jax.crystal.convert import from_structure, stack
from hgfn_jax.data import bond_stats as bt
from hgfn_jax.gflownet.env import Exploration
from hgfn_jax.gflownet.rollout import init_states, rollout

EXP = "shaft_elements89"
State = collections.namedtuple("State", "crystal")  # what the task's log_reward reads (a pytree)


def test_elements_are_matgls_89_from_h_to_pu():
    from matgl.config import DEFAULT_ELEMENTS  # the normal import (the config reads the same file without torch)

    for preset in PRESETS:  # every preset, the tiny test one included, keeps all 89 elements
        cfg = get_config(EXP, preset)
        assert tuple(cfg.env.elements) == tuple(DEFAULT_ELEMENTS), preset
        assert tuple(cfg.env.required_elements) == () and cfg.env.max_distinct_elements == 4
        assert cfg.reward.kind == "shaft" and cfg.env.num_steps == 2 and cfg.policy.encoder == "megnet"
    elements = tuple(cfg.env.elements)
    z = [Element(e).Z for e in elements]
    assert len(elements) == 89 and elements[0] == "H" and elements[-1] == "Pu"
    assert z == sorted(z) and len(set(z)) == 89 and z[-1] == 94
    # the paper's "89 elements from H to Pu" = Z 1..94 filtered to what the reward's energy model has embeddings for
    model = json.loads((paths.model_folder(cfg.reward.energy_model) / "model.json").read_text())
    known = set(model["kwargs"]["model"]["init_args"]["element_types"])
    assert tuple(Element.from_Z(k).symbol for k in range(1, 95) if Element.from_Z(k).symbol in known) == elements
    # the in-graph backend (reward.energy_backend="jax") indexes the same embedding table by Z: all 89 have a row
    from hgfn_jax.models import m3gnet

    assert cfg.reward.energy_model == m3gnet.NAME
    z_to_index = np.asarray(m3gnet.load_params()["z_to_index"])
    assert (z_to_index[z] >= 0).all() and (z_to_index >= 0).sum() == 89
    # the paper preset visits 1e5 states (one per reference atom), as shaft_battery: ceil(1e5 / (32 * 2)) updates
    paper = get_config(EXP, "paper")
    assert paper.train.batch_size == 32 and paper.train.num_iterations == math.ceil(1e5 / 64) == 1563
    assert paper.eval.batch_size == 32  # SHAFT's reward terms on 500 cells of 384 sites would need ~85 GB


N_SAMPLED = 24


@pytest.fixture(scope="module")
def evaluated():
    """The test preset's task (the real M3GNet Eform through the host bridge); N_SAMPLED terminal states of its
    untrained policy through the jitted rollout, then the hand-built cells of ``_cells``, rewarded in one call (one
    compilation of the reward)."""
    task = build_task(get_config(EXP, "test"))
    env = task.env
    params = jax.jit(task.policy.init)(jax.random.PRNGKey(0), init_states(env, 2))
    sample = jax.jit(lambda p, k: rollout(k, env, task.policy.apply, p, N_SAMPLED, Exploration.make(0.0, 1.0)).final)
    final = sample(params, jax.random.PRNGKey(3))  # the training loop's rollout, on-policy, no exploration
    cells = _cells()
    built = stack([from_structure(s, env.n_max) for _, s in cells])
    crystals = jax.tree.map(lambda a, b: jnp.concatenate([jnp.asarray(a), jnp.asarray(b, a.dtype)]), final.crystal,
                            built)
    log_r, terms = jax.jit(jax.vmap(task.log_reward))(State(crystals))
    return dict(task=task, final=final, cells=cells, log_r=np.asarray(log_r),
                terms={k: np.asarray(v) for k, v in terms.items()})


def test_test_preset_rollout_has_finite_log_rewards(evaluated):
    task, final = evaluated["task"], evaluated["final"]
    env = task.env
    assert env.E == 89 and bool(np.asarray(env.element_mask(env.init())).all())  # all 89 open at the first atom
    assert bool(np.asarray(final.done).all())
    log_r = evaluated["log_r"][:N_SAMPLED]
    assert log_r.shape == (N_SAMPLED,) and np.isfinite(log_r).all()
    for name, value in evaluated["terms"].items():
        assert np.isfinite(value[:N_SAMPLED]).all(), name
    z = np.asarray(final.crystal.species)[np.asarray(final.crystal.mask)]
    assert set(z.tolist()) <= {Element(e).Z for e in env.config.elements} and len(set(z.tolist())) >= 10
    assert task.extras["energy_bridge"].stats()["valid"] > 0  # energies evaluated, not only penalties


def _cells() -> list[tuple[str, Structure]]:
    """A CsCl-type XO cell (a = 3 A) for each of the 89 elements, plus hand-built cells outside the battery set."""
    from hgfn_jax.crystal.elements import SYMBOLS

    cells = [(f"{x}O", Structure(Lattice.cubic(3.0), [x, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]))
             for x in get_config(EXP, "test").env.elements]
    fcc = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    octa = [[0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]]
    tetra = [[x, y, z] for x in (0.25, 0.75) for y in (0.25, 0.75) for z in (0.25, 0.75)]
    cells += [
        ("Ar", Structure(Lattice.cubic(5.26), ["Ar"] * 4, fcc)),  # one element: SMACT's fast path, valid
        ("UO2", Structure(Lattice.cubic(5.47), ["U"] * 4 + ["O"] * 8, fcc + tetra)),  # fluorite, an actinide
        ("PuO2", Structure(Lattice.cubic(5.40), ["Pu"] * 4 + ["O"] * 8, fcc + tetra)),
        ("GdN", Structure(Lattice.cubic(4.97), ["Gd"] * 4 + ["N"] * 4, fcc + octa)),  # a lanthanide, rock salt
        ("NeO", Structure(Lattice.cubic(4.4), ["Ne"] * 4 + ["O"] * 4, fcc + octa)),  # Ne: no oxidation state;
        # Ne-O absent from the bond statistics
        ("XeF2", Structure(Lattice.tetragonal(4.32, 7.0), ["Xe", "Xe", "F", "F", "F", "F"],
                           [[0, 0, 0], [0.5, 0.5, 0.5], [0, 0, 0.28], [0, 0, 0.72], [0.5, 0.5, 0.78],
                            [0.5, 0.5, 0.22]])),  # a noble gas WITH oxidation states
        ("PmC", Structure(Lattice.cubic(5.0), ["Pm"] * 4 + ["C"] * 4, fcc + octa)),  # Pm: no electronegativity;
        # C-Pm absent
        ("NbPu", Structure(Lattice.cubic(3.3), ["Nb", "Pu"], [[0, 0, 0], [0.5, 0.5, 0.5]])),  # two metals (SMACT's
        # alloy path); Nb-Pu absent
        ("HeNe", Structure(Lattice.cubic(3.5), ["He", "Ne"], [[0, 0, 0], [0.5, 0.5, 0.5]])),  # He-Ne absent
    ]
    assert SYMBOLS[94] == "Pu"
    return cells


def test_reward_terms_on_all_89_elements_match_references(evaluated):
    from smact.screening import smact_validity

    cells = evaluated["cells"]
    names = [n for n, _ in cells]
    log_r = evaluated["log_r"][N_SAMPLED:]
    terms = {k: v[N_SAMPLED:] for k, v in evaluated["terms"].items()}
    assert np.isfinite(log_r).all() and all(np.isfinite(v).all() for v in terms.values())
    assert terms["structure_valid"].all()
    # the energy model has an embedding for every one of the 89 elements: no cell is refused
    refused = [n for n, ok in zip(names, terms["energy_valid"], strict=True) if ok < 0.5]
    assert not refused, refused
    # SHAFT eq. 7 from pymatgen's neighbours (tests/references.py); absent pairs take the SHAFT code's defaults
    assert (bt.DEFAULT_D_MIN, bt.DEFAULT_D_MEAN) == (1.0, 2.0)
    stats = bt.read_stats()
    for i, (name, s) in enumerate(cells):
        comp_ref = smact_validity(s.composition, use_pauling_test=True, include_alloys=True,
                                  oxidation_states_set="smact14")
        assert terms["r_comp"][i] == float(comp_ref), name
        assert terms["density"][i] == pytest.approx(s.density, rel=2e-5), name
        assert terms["bond_score"][i] == pytest.approx(shaft_bond_score(s, stats), rel=1e-4, abs=1e-4), name
    # eq. 8 with the config's weights, recomputed from the terms (E already clamped to [-10, 10])
    r = (0.2 * np.exp(-terms["energy"] / 10.0) + 0.5 * np.exp(-terms["bond_score"]) + 0.2 * terms["r_density"]
         + 0.1 * terms["r_comp"])
    np.testing.assert_allclose(log_r, np.log(np.maximum(r, 1e-5)), rtol=1e-5, atol=1e-5)
    # the cases the hand-built cells are for
    valid = dict(zip(names, terms["r_comp"], strict=True))
    assert valid["Ar"] == 1 and valid["NbPu"] == 1 and valid["UO2"] == 1 and valid["GdN"] == 1
    assert valid["NeO"] == 0 and valid["HeO"] == 0 and valid["PmC"] == 0 and valid["HeNe"] == 0


def test_report_adds_tables_7_8_for_this_experiment_only():
    from hgfn_jax.metrics import report

    metrics = {"validity": {"composition_cdvae": 0.5, "distance_pgcgm": 1.0}}
    text = report.render(metrics, "run", [], exp=EXP)
    assert "Tables 7-8" in text and "| SHAFT [002] | 1 | 0.97 | -1.14 | 87 | 0.71 | 0.19 |" in text
    assert "| SHAFT [002] | 2.32 | 1471.6 | 1.01 |" in text and "| **ours (run)** | 0.5 | 1 | - |" in text
    assert "Tables 7-8" not in report.render(metrics, "run", [], exp="shaft_battery")
