"""Battery task (paper 000 sec. 5, paper 002 sec. 5.1) for CHGFlowNet, SHAFT and the flat GFlowNet baseline.

The environment is ``hgfn_jax.envs.hierarchical`` (or ``envs.flat``), the policy
``make_hierarchical_policy`` with the configured encoder, the reward the paper's composite reward
(``hgfn_jax.rewards.composite``) whose formation energy comes from M3GNet through the host-callback bridge
(``hgfn_jax.models.host_bridge``; failures are counted, logged as ``host/energy/*`` and penalised, never raised:
a refused structure gets E = +10 eV/atom, paper 000 A.3.6's value for an unusable prediction,
while its density, bond and composition terms are kept; it does NOT get the reward floor).
Cells that overflow ``n_max`` are invalid structures for the reward: floor value.

Evaluation (paper 000 Tables 1-2, on the top ``eval.top_k`` samples ranked by reward), written to the run
directory:

- ``samples.jsonl``: every sample (formula, chosen space group, lattice, sites, log-reward, reward terms);
- ``cifs/rank_XXXXX.cif``: the top-k structures (P1 cells, pymatgen CIF writer);
- ``summary.json`` (via the training loop): validity (CIF readable by pymatgen, structure: min distance > 0.5 A,
  composition: SMACT ``smact_validity`` with the Pauling test and alloys valid, the CDVAE convention the papers
  report, and ``composition_charge_neutral_no_pauling`` without the Pauling test; each checked with pymatgen /
  SMACT directly, not with the reward's own code), the mean formation energy over the accepted structures
  (``formation_energy_mean_accepted``) and over all samples with refusals at the penalty energy
  (``formation_energy_mean_all``), the refused share (``energy_refused_frac``),
  % stable (paper 000's definition, E < 2 eV/atom, and E < 0), crystal-family
  diversity (Shannon index over the six families), unique modes (A.3.5: the three validities, both bond-distance
  constraints, E < 0, distinct compositions), the fraction whose spglib group (symprec 0.1) is the chosen one;
  the same metrics for an untrained policy of the same architecture;
- ``training_curves.png``: mean log-reward, loss and reward terms over training;
- ``eval/metrics.json``, ``eval/report.md`` and plots: the evaluation suite (``experiments.evaluate``) on the first
  ``eval.suite.n`` CIFs (the top-ranked), with the settings of ``eval.suite`` (``enabled=False``: skipped); its
  outcome, or the error that stopped it, is ``eval_suite`` in the summary.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.evaluate import run_suite
from hgfn_jax.crystal.types import Crystal
from hgfn_jax.gflownet.sampling import sample_batches
from hgfn_jax.gflownet.train import EvalContext, Task

STRUCTURE_MIN_DISTANCE = 0.5  # Angstrom, paper 000 sec. 5.1 (b)
STABLE_BELOW = 2.0  # eV/atom, paper 000 sec. 5.2 ("formation energy per atom smaller than 2 eV/atom")


def required_n_max(spacegroups, num_steps: int) -> int:
    """Sites the largest cell can have: one reference atom per step, each expanded to at most the general
    multiplicity (operations of the conventional cell) of the largest allowed group; e.g. 3 x 192 in Fm-3m."""
    from hgfn_jax.crystal.spacegroup import host_tables

    groups = np.arange(1, 231) if spacegroups is None else np.asarray(tuple(spacegroups), int)
    return int(num_steps) * int(np.max(np.asarray(host_tables()["n_ops"])[groups]))


def resolved_n_max(config) -> int:
    """``env.n_max``, or (None) the buffer sized from the allowed groups, so no cell overflows."""
    n = config.env.get("n_max")
    return required_n_max(config.env.spacegroups, config.env.num_steps) if n is None else int(n)


def overflow_by_group(crystals: Crystal) -> dict:
    """Share of cells that overflowed the buffer, overall and per chosen space group (groups sampled)."""
    groups = np.asarray(crystals.spacegroup).reshape(-1)
    over = np.asarray(crystals.overflow).reshape(-1).astype(bool)
    per = {int(g): float(over[groups == g].mean()) for g in np.unique(groups)}
    return {"share": float(over.mean()) if over.size else 0.0, "share_by_group": per}


def make_env(config):
    from hgfn_jax.envs.flat import FlatEnv
    from hgfn_jax.envs.hierarchical import HierarchicalConfig, HierarchicalEnv

    kw = {k: v for k, v in config.env.to_dict().items() if k != "kind" and v is not None}
    kw["n_max"] = resolved_n_max(config)
    for k in ("spacegroups", "elements", "required_elements", "length_range", "angle_range"):
        if k in kw:
            kw[k] = tuple(kw[k])
    env_cls = {"hierarchical": HierarchicalEnv, "flat": FlatEnv}.get(config.env.kind)
    if env_cls is None:
        raise ValueError(f"env.kind must be 'hierarchical' or 'flat', got {config.env.kind!r}")
    return env_cls(HierarchicalConfig(**kw))


def reward_config(config):
    """The composite reward's config dataclass of ``config.reward.kind``, every field from ``config.reward``
    (the battery configs hold all of them, so any constant or ablation switch can be set with ``--set``)."""
    from hgfn_jax.rewards.composite import CHGFlowNetRewardConfig, ShaftRewardConfig

    rc = config.reward
    cls = {"chgflownet": CHGFlowNetRewardConfig, "shaft": ShaftRewardConfig}.get(rc.kind)
    if cls is None:
        raise ValueError(f"reward.kind must be 'chgflownet' or 'shaft', got {rc.kind!r}")
    return cls(**{f.name: rc[f.name] for f in dataclasses.fields(cls) if f.name in rc})


def make_log_reward(config, energy_fn=None):
    """``(log_reward(state) -> (log_r, terms), energy bridge)`` for ``config.reward``. ``energy_fn`` (tests):
    a property function used instead of the energy model (no bridge, returned as None)."""
    from hgfn_jax import paths

    rc = config.reward
    cfg = reward_config(config)
    bridge = None
    backend = rc.get("energy_backend", "host")
    if backend not in ("host", "jax"):
        raise ValueError(f"reward.energy_backend must be 'host' or 'jax', got {backend!r}")
    # CHGFlowNet: no clamp on the energy (paper 000 A.3.6 sends predictions below -10 eV/atom to +10: the reward's
    # rule); SHAFT: E clamped to [energy_min, energy_max]
    clamp = None if rc.kind == "chgflownet" else (cfg.energy_min, cfg.energy_max)
    if energy_fn is None and backend == "jax":  # the model inside the jitted step (hgfn_jax.models.in_graph)
        from hgfn_jax.models.in_graph import make_jax_property_fn

        energy_fn = make_jax_property_fn(rc.energy_model, clamp=clamp, invalid_value=cfg.energy_penalty,
                                         k=rc.get("energy_k"), buckets=rc.get("energy_buckets"))
    if energy_fn is None:  # the reference: matgl in torch through the host callback, failures counted by reason
        # before torch / matgl load (seconds): a configured models folder without this model fails here, at once
        paths.model_folder(rc.energy_model)
        from hgfn_jax.models.host_bridge import make_property_fn

        bridge = make_property_fn(rc.energy_model, clamp=clamp, invalid_value=cfg.energy_penalty,
                                  batch_size=rc.get("energy_batch_size"), max_sites=resolved_n_max(config))
        energy_fn = bridge
    from hgfn_jax.rewards.composite import make_chgflownet_reward, make_shaft_reward

    reward = (make_chgflownet_reward(cfg, energy_fn) if rc.kind == "chgflownet"
              else make_shaft_reward(cfg, energy_fn))

    def log_reward(state):
        return reward(state.crystal)

    return log_reward, bridge


def _host_stats(bridge):
    def stats() -> dict:
        s = bridge.stats()
        out = {f"energy/{k}": float(s[k]) for k in ("host_calls", "evaluated", "valid", "failed", "clamped")}
        out.update({f"energy/failed/{k}": float(v) for k, v in s["failures"].items()})
        return out

    stats.reset = bridge.reset_stats  # each run counts from zero (rundir.metrics_log.RunHostStats)
    return stats


# ---- evaluation ------------------------------------------------------------------------------------------------


def _structures(crystals: Crystal, idx: np.ndarray):
    """pymatgen Structures (via a CIF round trip) of the selected crystals; None where unreadable."""
    from hgfn_jax.crystal.convert import parse_cif, to_cif

    out = []
    for i in idx:
        c = jax.tree.map(lambda x, i=i: np.asarray(x)[i], crystals)
        try:
            out.append(parse_cif(to_cif(c)))
        except ValueError:
            out.append(None)
    return out


def _shannon(labels, base: float = math.e) -> float:
    counts = np.array(list(Counter(labels).values()), float)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum() / np.log(base))


def quality_metrics(crystals: Crystal, terms: dict, log_r: np.ndarray, idx: np.ndarray, bond_ok: np.ndarray,
                    energy_penalty: float = 10.0) -> dict:
    """Paper 000's metrics on the samples ``idx`` (see the module docstring). ``bond_ok`` [n]: both
    bond-distance constraints (eqs. 11-12) hold. ``energy_penalty``: the eV/atom at which a structure the
    energy model refused is counted in ``formation_energy_mean_all`` (the reward's value for it)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
    from smact.screening import smact_validity

    from hgfn_jax.crystal.spacegroup import host_tables

    families = host_tables()["crystal_family"]
    systems = host_tables()["crystal_system"]
    structures = _structures(crystals, idx)
    cif_ok = np.array([s is not None for s in structures])
    struct_ok = np.zeros(len(idx), bool)
    comp_ok = np.zeros(len(idx), bool)
    comp_neutral = np.zeros(len(idx), bool)
    sg_match = np.zeros(len(idx), bool)
    for j, s in enumerate(structures):
        if s is None:
            continue
        # every pair, periodic images (a site's own images included), within the threshold
        _, _, _, dists = s.get_neighbor_list(STRUCTURE_MIN_DISTANCE, exclude_self=True)
        struct_ok[j] = len(s) > 0 and not np.any(dists <= STRUCTURE_MIN_DISTANCE)
        # the papers' (CDVAE's) composition validity: charge neutrality AND the Pauling test, alloys valid
        comp_ok[j] = bool(smact_validity(s.composition, use_pauling_test=True, include_alloys=True,
                                         oxidation_states_set="smact14"))
        comp_neutral[j] = bool(smact_validity(s.composition, use_pauling_test=False, include_alloys=True,
                                              oxidation_states_set="smact14"))
        try:
            sg_match[j] = SpacegroupAnalyzer(s, symprec=0.1).get_space_group_number() == int(
                np.asarray(crystals.spacegroup)[idx[j]])
        except Exception:  # noqa: BLE001 - spglib failures count as a mismatch
            sg_match[j] = False
    energy = np.asarray(terms["energy"])[idx] if "energy" in terms else np.full(len(idx), np.nan)
    e_ok = np.asarray(terms.get("energy_valid", np.ones(len(log_r))))[idx] > 0.5
    valid3 = cif_ok & struct_ok & comp_ok
    mode = valid3 & bond_ok & e_ok & (energy < 0)
    formulas = [s.composition.reduced_formula if s is not None else None for s in structures]
    fam = [int(families[int(np.asarray(crystals.spacegroup)[i])]) for i in idx]
    n = max(len(idx), 1)
    return {
        "n": int(len(idx)),
        "cif_validity": float(cif_ok.mean()) if len(idx) else 0.0,
        "structure_validity": float(struct_ok.mean()) if len(idx) else 0.0,
        "composition_validity": float(comp_ok.mean()) if len(idx) else 0.0,
        "composition_charge_neutral_no_pauling": float(comp_neutral.mean()) if len(idx) else 0.0,
        "energy_valid_frac": float(e_ok.mean()) if len(idx) else 0.0,
        "energy_refused_frac": float(1.0 - e_ok.mean()) if len(idx) else 0.0,
        # over the structures the energy model accepted only (refused ones leave the denominator)
        "formation_energy_mean_accepted": float(np.mean(energy[e_ok])) if e_ok.any() else float("nan"),
        # over ALL samples, a refused structure counted at the reward's penalty energy
        "formation_energy_mean_all": float(np.mean(np.where(e_ok, energy, energy_penalty)))
        if len(idx) else float("nan"),
        "pct_stable_below_2eV": float(100.0 * np.sum(e_ok & (energy < STABLE_BELOW)) / n),
        "pct_negative_formation_energy": float(100.0 * np.sum(e_ok & (energy < 0)) / n),
        "crystal_family_diversity": _shannon(fam),  # nats over the 6 families (max ln 6 = 1.79)
        # the same in bits over the 7 crystal systems (max 2.81): paper 000 Table 2's values (up to 2.62) exceed
        # ln 6 and log2 6, so this is our best guess at the convention behind them
        "crystal_system_diversity_bits": _shannon(
            [int(systems[int(np.asarray(crystals.spacegroup)[i])]) for i in idx], base=2.0),
        "unique_modes": int(len({f for f, m in zip(formulas, mode, strict=True) if m})),
        "unique_compositions": int(len({f for f in formulas if f is not None})),
        "num_spacegroups": int(len(set(int(np.asarray(crystals.spacegroup)[i]) for i in idx))),
        "spacegroup_match_symprec_0.1": float(sg_match.mean()) if len(idx) else 0.0,
        "log_reward_mean": float(np.mean(log_r[idx])) if len(idx) else float("nan"),
    }


def make_bond_check():
    """``bond_ok(crystals) -> [B] bool``: eqs. 11-12 both satisfied (paper 000's bond-distance constraints)."""
    from hgfn_jax.data.bond_stats import load_bond_table
    from hgfn_jax.rewards import physics

    table = load_bond_table()
    fn = jax.jit(jax.vmap(lambda c: physics.bond_term(c, table)))

    def bond_ok(crystals: Crystal) -> np.ndarray:
        t = fn(jax.tree.map(jnp.asarray, crystals))
        valid = np.asarray(t.valid) & ~np.asarray(crystals.overflow)
        return valid & ~np.asarray(t.min_violation) & ~np.asarray(t.max_violation)

    return bond_ok


def _records(env, crystals: Crystal, log_r: np.ndarray, terms: dict) -> list[dict]:
    from hgfn_jax.crystal import elements as elm

    out = []
    lat = np.asarray(crystals.lattice)
    for i in range(len(log_r)):
        z = np.asarray(crystals.species)[i][np.asarray(crystals.mask)[i]]
        counts = Counter(elm.symbol(int(x)) for x in z)
        out.append({
            "formula": "".join(f"{el}{n if n > 1 else ''}" for el, n in sorted(counts.items())),
            "spacegroup": int(np.asarray(crystals.spacegroup)[i]),
            "lattice": [round(float(x), 4) for x in lat[i]],
            "num_sites": int(len(z)),
            "overflow": bool(np.asarray(crystals.overflow)[i]),
            "log_reward": float(log_r[i]),
            **{k: float(np.asarray(v)[i]) for k, v in terms.items() if k not in ("log_reward",)},
        })
    return out


def _plot_curves(workdir: Path):
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = workdir / "metrics.csv"
    if not path.exists():
        return
    rows = list(csv.DictReader(path.open()))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    keys = ["log_reward_mean", "loss", "log_z"] + sorted(
        k for k in rows[0] if k.startswith("reward/r_") or k in ("reward/energy", "reward/structure_valid"))
    cols = 3
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.6 * nrows), squeeze=False)
    for ax, k in zip(axes.flat, keys, strict=False):
        ax.plot(steps, [float(r[k]) for r in rows], lw=1)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("iteration", fontsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(workdir / "training_curves.png", dpi=110)
    plt.close(fig)


def build_hierarchical(config) -> Task:
    from hgfn_jax.gflownet.rollout import init_states
    from hgfn_jax.policies.hierarchical import make_hierarchical_policy

    env = make_env(config)
    pc = config.policy
    policy = make_hierarchical_policy(env, encoder=pc.encoder, hidden=int(pc.hidden), layers=int(pc.layers),
                                      head_hidden=tuple(pc.head_hidden))
    log_reward, bridge = make_log_reward(config)
    v_reward = jax.jit(jax.vmap(log_reward))
    bond_ok = make_bond_check()
    # the energy at which a refused structure is counted: the reward's penalty (the host bridge holds the same
    # value; the in-graph backend, energy_backend="jax", has no bridge)
    energy_penalty = float(reward_config(config).energy_penalty)

    def evaluate(ctx: EvalContext) -> dict:
        from hgfn_jax.crystal.convert import write_cifs

        samples, log_r, terms, config, sample_fn = ctx.samples, ctx.log_r, ctx.terms, ctx.config, ctx.sample_fn
        workdir = Path(ctx.workdir)
        ev = config.eval
        crystals = samples.crystal
        k = min(int(ev.top_k), len(log_r))
        top = np.argsort(-log_r, kind="stable")[:k]
        with (workdir / "samples.jsonl").open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in _records(env, crystals, log_r, terms))
        out = {"overflow": {"n_max": env.n_max, **overflow_by_group(crystals)}}
        out["trained_top_k"] = quality_metrics(crystals, terms, log_r, top, bond_ok(crystals)[top],
                                                 energy_penalty=energy_penalty)
        if ev.get("write_cifs", True):
            top_crystals = jax.tree.map(lambda x: np.asarray(x)[top], crystals)
            written = write_cifs(top_crystals, workdir / "cifs", prefix="rank", skip_invalid=True)
            out["cifs_written"] = len(written)
        if ev.get("untrained_reference", True) and sample_fn is not None:
            key = jax.random.PRNGKey(int(config.seed) + 1)
            p0 = {"policy": jax.jit(policy.init)(key, init_states(env, 2)), "log_z": jnp.float32(0.0)}
            n, b = int(ev.num_samples), int(ev.batch_size)
            # reward per sampling batch, as for the trained samples: all n at once asks for ~40 GB at SHAFT's
            # 384-site buffer
            s0, lr0, t0 = sample_batches(lambda k: sample_fn(p0, k, b).final, key, n, b, log_reward=v_reward)
            top0 = np.argsort(-lr0, kind="stable")[:k]
            out["untrained_overflow"] = overflow_by_group(s0.crystal)
            out["untrained_top_k"] = quality_metrics(s0.crystal, t0, np.asarray(lr0), top0,
                                                     bond_ok(s0.crystal)[top0], energy_penalty=energy_penalty)
        _plot_curves(workdir)
        # the evaluation suite on the top-ranked CIFs just written (eval.suite; eval/report.md)
        out.update(run_suite(workdir, ev.get("suite")))
        print(json.dumps(out, indent=2))
        return out

    name = {"chgflownet": "chgflownet", "shaft": "shaft"}[config.reward.kind]
    if config.env.kind == "flat":
        name = f"gfn_flat_{name}_reward"
    host_stats = None if bridge is None else _host_stats(bridge)  # the in-graph backend counts nothing on the host
    # the battery task's names, unless the config names its task (shaft_elements89: another element set)
    task_name = config.get("task_name") or f"{name}_battery"
    # visited.jsonl key: the crystal a terminal state is (group, lattice, reference atoms); the expanded cell and
    # the bookkeeping fields follow from these
    return Task(task_name, env, policy, log_reward, evaluate=evaluate, host_stats=host_stats,
                extras={"energy_bridge": bridge},
                terminal_key=lambda s: (s.spacegroup, s.lattice, s.ref_element, s.ref_frac))
