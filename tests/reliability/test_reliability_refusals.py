"""Fault injection, settings: every impossible setting is refused at once (well under 5 s, before any data or
model loads) with one error naming the parameter and why; the command line prints it as one line."""

from __future__ import annotations

import time

import pytest

from hgfn_jax import paths
from hgfn_jax.crystal.convert import from_cif
from hgfn_jax.envs.flat import FlatEnv
from hgfn_jax.envs.hierarchical import HierarchicalConfig, HierarchicalEnv

M3GNET = "M3GNet-MP-2018.6.1-Eform"


class _Clock:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        assert self.seconds < 5.0, f"refused only after {self.seconds:.1f} s"


@pytest.mark.parametrize("env_cls", [HierarchicalEnv, FlatEnv])
def test_hierarchical_env_refuses_an_n_max_no_cell_fits(env_cls):
    with _Clock(), pytest.raises(ValueError, match=r"n_max=2 is smaller than the smallest orbit .* 225 \(4 sites\)"):
        env_cls(HierarchicalConfig(n_max=2, spacegroups=(225,)))
    with _Clock(), pytest.raises(ValueError, match=r"n_max .* must be an integer >= 1, got 0"):
        env_cls(HierarchicalConfig(n_max=0))
    # all 230 groups: the largest smallest orbit is 16 (groups 228 and 230)
    with pytest.raises(ValueError, match=r"228 \(16 sites\), 230 \(16 sites\).*at least 16"):
        env_cls(HierarchicalConfig(n_max=12))
    assert env_cls(HierarchicalConfig(n_max=16, num_steps=1)).n_max == 16


def test_crystal_gfn_names_max_atoms_below_every_smallest_orbit():
    from hgfn_jax.envs.crystal_gfn.env import CrystalGFN

    with _Clock(), pytest.raises(ValueError, match=r"max_atoms=2 is below the smallest orbit of every allowed space "
                                                   r"group \(the smallest is 4 sites, group 225\)"):
        CrystalGFN(max_atoms=2, spacegroups=(225,))


def test_missing_model_folder_is_refused_without_a_hub_lookup(tmp_path, monkeypatch):
    from hgfn_jax.models.host_bridge import make_property_fn  # torch/pymatgen imports are not the refusal's time

    with _Clock(), pytest.raises(paths.MissingResourceError, match=r"no folder .*nowhere.*model_dir"):
        make_property_fn(M3GNET, model_dir=tmp_path / "nowhere")
    monkeypatch.setenv("HGFN_MODEL_DIR", str(tmp_path))
    with _Clock(), pytest.raises(paths.MissingResourceError, match="HGFN_MODEL_DIR"):
        paths.model_folder(M3GNET)


def _cli(capsys, *args) -> str:
    from experiments import train as cli

    with _Clock(), pytest.raises(SystemExit) as stop:
        cli.main(["--no-progress", *args])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_command_line_config_errors_are_one_line(tmp_path, monkeypatch, capsys):
    run = ["--exp", "chgflownet_battery", "--preset", "test", "--workdir", str(tmp_path / "run")]
    assert "train.nope" in _cli(capsys, *run, "--set", "train.nope=1")
    assert "train.lr" in _cli(capsys, *run, "--set", "train.lr=fast")
    assert "expects key=value" in _cli(capsys, *run, "--set", "train.lr")
    assert "n_max=2" in _cli(capsys, *run, "--set", "env.n_max=2", "--set", "env.spacegroups=(225,)")
    assert "n_max" in _cli(capsys, *run, "--set", "env.n_max=0")
    monkeypatch.setenv("HGFN_MODEL_DIR", str(tmp_path / "models"))
    assert M3GNET in _cli(capsys, *run)
    assert not (tmp_path / "run" / "metrics.csv").exists()


def test_command_line_objective_and_offpolicy_errors_are_one_line(tmp_path, capsys):
    run = ["--exp", "hypergrid", "--preset", "test", "--workdir", str(tmp_path / "run")]
    assert "unknown train.loss='fancy'" in _cli(capsys, *run, "--set", "train.loss=fancy")
    assert "train.replay.capacity=8 is smaller" in _cli(capsys, *run, "--set", "train.replay.capacity=8")
    cg = ["--exp", "crystal_gfn_fe", "--preset", "test", "--workdir", str(tmp_path / "run")]
    assert "Task.state_log_reward" in _cli(capsys, *cg, "--set", "train.loss=fldb")
    assert "sample_backward" in _cli(capsys, *cg, "--set", "train.local_search.enabled=True")
    hier = ["--exp", "chgflownet_battery", "--preset", "test", "--workdir", str(tmp_path / "run")]
    assert "log_pf_stop" in _cli(capsys, *hier, "--set", "train.loss=mdb", "--set", "train.replay.capacity=0")
    assert not (tmp_path / "run").exists()


def test_the_builders_supply_table_matches_the_environments():
    from experiments.configs import get_config
    from experiments.tasks import SUPPLIES, build_task
    from hgfn_jax.envs.crystal_gfn import CrystalGFN
    from hgfn_jax.gflownet.local_search import supports_backward

    task = build_task(get_config("hypergrid", "test"))
    assert task.state_log_reward is not None and callable(getattr(task.env, "log_pf_stop", None))
    assert supports_backward(task.env) and SUPPLIES["hypergrid"] == {"state_log_reward", "stop", "backward"}
    for env_cls in (HierarchicalEnv, FlatEnv):  # the hierarchical builder's environments
        assert supports_backward(env_cls) and not hasattr(env_cls, "log_pf_stop")
    assert SUPPLIES["hierarchical"] == {"backward"}
    assert not supports_backward(CrystalGFN) and not hasattr(CrystalGFN, "log_pf_stop")
    assert SUPPLIES["crystal_gfn"] == frozenset()


def test_cif_with_an_impossible_cell_names_the_field():
    cif = """data_bad
_cell_length_a {a}
_cell_length_b 4.0
_cell_length_c 4.0
_cell_angle_alpha 90
_cell_angle_beta {beta}
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
_atom_site_type_symbol
_atom_site_label
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Li Li0 0 0 0 1
O O1 0.5 0.5 0.5 1
"""
    with pytest.raises(ValueError, match=r"_cell_length_a = 0, need a positive length") as exc:
        from_cif(cif.format(a=0, beta=90), 8)
    assert "Singular" not in str(exc.value)
    with pytest.raises(ValueError, match=r"_cell_length_a = -3.5, need a positive length"):
        from_cif(cif.format(a=-3.5, beta=90), 8)
    with pytest.raises(ValueError, match=r"_cell_angle_beta = 180, need an angle strictly between 0 and 180"):
        from_cif(cif.format(a=4, beta=180), 8)
    assert int(from_cif(cif.format(a="4.0(1)", beta=90), 8).mask.sum()) == 2
