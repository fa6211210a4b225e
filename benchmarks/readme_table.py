"""README's throughput table, generated from ``benchmarks/results/*.json`` (never typed in by hand).

    python -m benchmarks.readme_table            # print the table
    python -m benchmarks.readme_table --write    # replace the block between the markers in README.md

Each row names the records it shows (result file, benchmark name, optional field filters, batches); a missing
record is an error, so a renamed benchmark cannot leave a stale number behind. Below the table, one line per
result file states the device and, where the records carry it (``load_avg_1min``, written by
``benchmarks.common.record``), the 1-minute load average while it ran. ``tests/test_readme_table.py`` checks
that README holds exactly this output.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import RESULTS_DIR

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- throughput-table:begin -->", "<!-- throughput-table:end -->"


@dataclass(frozen=True)
class Cell:
    """Records of one result file: ``benchmark`` (one or more names joined by `` / ``), filters, batches."""

    file: str
    benchmarks: tuple[str, ...]
    batches: tuple[int, ...]
    where: dict = field(default_factory=dict)
    value: str = "items_per_s"  # record field shown
    digits: int = 0


@dataclass(frozen=True)
class Row:
    what: str
    ours: Cell
    reference: str = ""  # static text, or a format string over ``ref`` (one number)
    ref: Cell | None = None


ROWS = (
    Row("orbit expansion + distance matrix, MP asymmetric units padded to 40 sites",
        Cell("crystal", ("orbit+distance_matrix",), (16, 4096), {"impl": "jax"}),
        "pymatgen `from_spacegroup` + `distance_matrix`: {}",
        Cell("crystal", ("orbit+distance_matrix",), (1,), {"impl": "pymatgen"}, digits=1)),
    Row("Crystal-GFN random-policy rollout (23 steps), terminal states only / whole trajectory with per-step "
        "log P_F and log P_B",
        Cell("crystal_gfn", ("crystal_gfn_rollout_random_policy", "crystal_gfn_rollout_random_policy_full_trajectory"),
             (16, 256, 1024, 4096)),
        "Mila gflownet: about 140 (stores the log-probabilities)"),
    Row("Crystal-GFN rollout, 3 x 256 MLP policy, same two outputs",
        Cell("crystal_gfn", ("crystal_gfn_rollout_mlp_3x256", "crystal_gfn_rollout_mlp_3x256_full_trajectory"),
             (16, 256, 1024, 4096))),
    Row("Crystal-GFN paper-preset training (10 trajectories per TB update, density reward), updates/s",
        Cell("crystal_gfn", ("crystal_gfn_train_paper_preset",), (), value="iterations_per_s", digits=1),
        "paper: 50,000 updates in 12-30 h"),
    Row("training update per objective TB / DB / SubTB(0.9) / FL-DB / MDB, hypergrid 8x8x8x8 (MLP 64 x 64), "
        "updates/s",
        Cell("objectives", tuple(f"objectives_hypergrid_8x8x8x8_{o}" for o in ("tb", "db", "subtb", "fldb", "mdb")),
             (64,), value="updates_per_s")),
    Row("the same TB / DB / SubTB, ours and gfnx in one run (alternating rounds), updates/s",
        Cell("gfnx_reference", tuple(f"gfnx_reference_hypergrid_8x8x8x8_{o}_hgfn_jax" for o in ("tb", "db", "subtb")),
             (64,), value="updates_per_s"),
        "gfnx 0.0.1 as shipped (jax 0.5.3): {}",
        Cell("gfnx_reference", tuple(f"gfnx_reference_hypergrid_8x8x8x8_{o}_gfnx_jax0.5.3" for o in
                                     ("tb", "db", "subtb")), (64,), value="updates_per_s")),
    Row("the same on the Crystal-GFN paper preset (10 trajectories, learned P_B), updates/s",
        Cell("objectives", tuple(f"objectives_crystal_gfn_paper_{o}" for o in ("tb", "db", "subtb")), (10,),
             value="updates_per_s", digits=1)),
    Row("CHGFlowNet composite reward (JAX terms)", Cell("reward_terms", ("chgflownet_reward",), (1024,))),
    Row("M3GNet / MEGNet Eform through the host callback",
        Cell("reward_models", ("reward_model_callback",), (256,), {"model": "M3GNet-MP-2018.6.1-Eform"}),
        "MEGNet: {}",
        Cell("reward_models", ("reward_model_callback",), (256,), {"model": "MEGNet-MP-2018.6.1-Eform"})),
    Row("battery TB update incl. M3GNet: CHGFlowNet / SHAFT / flat, trajectories/s",
        Cell("battery", ("chgflownet_battery_train_update", "shaft_battery_train_update",
                         "gfn_flat_battery_train_update"), (32,), digits=1)),
    Row("the same with the energy in-graph (`reward.energy_backend=jax`, JAX M3GNet, site buckets + packed graph), "
        "same run",
        Cell("battery", ("chgflownet_battery_train_update_jax_energy", "shaft_battery_train_update_jax_energy",
                         "gfn_flat_battery_train_update_jax_energy"), (32,), digits=1)),
    Row("GCN / MEGNet encoder, orbit graph (one node per reference atom), cells of 64 sites",
        Cell("encoders", ("encoder_gcn_orbit", "encoder_megnet_set2set_orbit"), (4096,)),
        "same encoders on the full-cell graph: {}",
        Cell("encoders", ("encoder_gcn_sym", "encoder_megnet_set2set_sym"), (1024,))),
    Row("hierarchical sampler, T = 3, GCN policy, energy excluded",
        Cell("hierarchical", ("hierarchical_rollout",), (256, 4096), {"policy": "gcn hidden 64"}),
        "reference-code style (`from_spacegroup` per step): {}",
        Cell("hierarchical", ("reference_style_pymatgen",), (1,), digits=1)),
    Row("hierarchical sampler, T = 3, MEGNet / DeepSets policy",
        Cell("hierarchical", ("hierarchical_rollout",), (256,), {"policy": ("megnet hidden 64", "deepsets hidden 64")}),
        "full-cell GCN: {}",
        Cell("hierarchical", ("hierarchical_rollout",), (16,), {"policy": "gcn_full hidden 64"})),
    Row("hierarchical sampler, T = 2 (SHAFT), MEGNet policy",
        Cell("hierarchical", ("hierarchical_rollout",), (32, 128), {"policy": "megnet hidden 64", "num_steps": 2})),
    Row("flat sampler, T = 3, GCN / MEGNet policy",
        Cell("hierarchical", ("flat_rollout",), (256,), {"policy": ("gcn hidden 64", "megnet hidden 64")})),
    Row("PGCGM generator + orbit expansion (Algorithm 1), untrained weights: default-preset width 0.25 / paper "
        "width 1",
        Cell("pgcgm", ("pgcgm_generate_expand",), (64, 256, 1024, 4096), {"width": (0.25, 1.0)})),
)


def _load(name: str, cache: dict) -> list[dict]:
    if name not in cache:
        path = RESULTS_DIR / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `python -m benchmarks.bench_{name}` first")
        cache[name] = json.loads(path.read_text())
    return cache[name]


def _fmt(x: float, digits: int) -> str:
    return f"{x:,.{digits}f}"


def _pick(recs: list[dict], bench: str, batch: int | None, where: dict) -> dict:
    hits = [r for r in recs if r["benchmark"] == bench and (batch is None or r["batch"] == batch)
            and all(r.get(k) == v for k, v in where.items())]
    if not hits:
        raise KeyError(f"no record {bench!r} batch {batch} {where} in the results")
    return hits[-1]


def _cell(cell: Cell, cache: dict) -> str:
    recs = _load(cell.file, cache)
    # several benchmarks, or one benchmark under several filter values: the alternatives joined by " / "
    multi = {k: v for k, v in cell.where.items() if isinstance(v, tuple)}
    if multi:
        (key, values), = multi.items()
        alts = [(cell.benchmarks[0], {**cell.where, key: v}) for v in values]
    else:
        alts = [(b, cell.where) for b in cell.benchmarks]
    batches = cell.batches or (None,)
    parts = []
    for batch in batches:
        vals = [_fmt(_pick(recs, b, batch, w)[cell.value], cell.digits) for b, w in alts]
        parts.append(" / ".join(vals) + (f" ({batch})" if batch is not None and cell.batches else ""))
    return ", ".join(parts)


def render() -> str:
    cache: dict = {}
    lines = ["| what | JAX | reference |", "| --- | --- | --- |"]
    for row in ROWS:
        ref = row.reference.format(_cell(row.ref, cache)) if row.ref is not None else row.reference
        lines.append(f"| {row.what} | {_cell(row.ours, cache)} | {ref} |")
    lines.append("")
    for name in sorted(cache):
        recs = cache[name]
        devices = sorted({r.get("device", "?") for r in recs})
        loads = [r.get("load_avg_1min", r.get("load_1min")) for r in recs
                 if "load_avg_1min" in r or "load_1min" in r]
        notes = sorted({r["machine_load"] for r in recs if "machine_load" in r})
        load = (f"1-min load {min(loads):.1f}-{max(loads):.1f}" if loads
                else "; ".join(notes) if notes else "load not recorded")
        lines.append(f"`{name}.json`: {', '.join(devices)}; {load}.  ")
    return "\n".join(lines).rstrip() + "\n"


def readme_block(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"README.md has no {BEGIN} ... {END} block")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help="replace the table block in README.md")
    args = ap.parse_args(argv)
    table = render()
    if not args.write:
        print(table, end="")
        return
    text = README.read_text()
    readme_block(text)  # the markers must exist
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    README.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")
    print(f"updated {README}")


if __name__ == "__main__":
    main()
