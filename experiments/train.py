"""Train one experiment: ``python -m experiments.train --exp crystal_gfn_fe [--preset paper] [--workdir DIR]``.

Runs resume from the latest checkpoint in the work directory (``runs/<exp>-<preset>`` by default): kill a run
and start the same command again to continue it exactly. ``--set train.lr=1e-3`` overrides any config field.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
from pathlib import Path

from experiments.configs import PRESETS, available, get_config


def apply_overrides(cfg, overrides: list[str]):
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            if p not in node:
                raise ValueError(f"unknown config field {key!r}")
            node = node[p]
        if leaf not in node:
            raise ValueError(f"unknown config field {key!r}")
        node[leaf] = value
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp", required=True, help=f"one of: {', '.join(available())}")
    ap.add_argument("--preset", default="default", choices=PRESETS)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--fresh", action="store_true", help="ignore (delete) an existing run in the work directory")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    cfg = apply_overrides(get_config(args.exp, args.preset), args.overrides)
    workdir = Path(args.workdir or os.environ.get("HGFN_RUNS_DIR", "runs")) / f"{args.exp}-{args.preset}"
    if args.workdir:
        workdir = Path(args.workdir)
    if args.fresh and workdir.exists():
        import shutil

        shutil.rmtree(workdir)
    from hgfn_jax.train import train_and_evaluate

    out = train_and_evaluate(cfg, workdir, progress=not args.no_progress)
    print(json.dumps(out["summary"], indent=2, default=str))
    print(f"run directory: {workdir.resolve()}")


if __name__ == "__main__":
    main()
