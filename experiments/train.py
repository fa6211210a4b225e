"""Train one experiment: ``python -m experiments.train --exp crystal_gfn_fe [--preset paper] [--workdir DIR]``.

Runs resume from the latest checkpoint in the work directory (``runs/<exp>-<preset>`` by default): kill a run
and start the same command again to continue it exactly. ``--set train.lr=1e-3`` overrides any config field.
A work directory holding a run trained with another config is refused (the differing fields are named; only the
run length, the checkpoint cadence and the evaluation may change on a resume): pass ``--fresh`` to discard it,
or choose another ``--workdir``. Configuration errors print one line and exit with status 2. ``--devices N`` splits
each training batch over N devices (``hgfn_jax.gflownet.sharding``; same results as one device, resumable on
another device count).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from experiments.configs import PRESETS, available, get_config


class _LiteralParser(flags.ArgumentParser):
    """A Python literal (``None``, ``96``, ``(225,)``), else the string: for fields whose default is ``None``,
    which ml_collections types as ``NoneType`` and which accept any value."""

    def parse(self, argument: str):
        try:
            return ast.literal_eval(argument)
        except (ValueError, SyntaxError):
            return argument

    def flag_type(self) -> str:
        return "config_literal"


config_flags.register_flag_parser_for_type(type(None), _LiteralParser())


def apply_overrides(cfg, overrides: list[str]):
    """``--set key=value`` items applied to ``cfg`` in place by ml_collections' config flags (the value parsed by
    the field's type, e.g. ``--set train.lr=1e-3``; a value of another type is refused; ``None`` unsets a field);
    an unknown field or a value that does not parse raises ``ValueError`` with one line naming it."""
    items = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            config_path.get_value(key, cfg)
        except (KeyError, AttributeError, IndexError, ValueError):
            raise ValueError(f"unknown config field {key!r}") from None
        if raw == "None":  # any field may be unset (e.g. --set reward.reward_max=None); no type parser reads it
            config_path.set_value(key, cfg, None)
            continue
        items.append(f"--config.{key}={raw}")
    if not items:
        return cfg
    argv = ["experiments.train", *items]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_dict("config", cfg, flag_values=fv, lock_config=False, sys_argv=argv)
    try:
        fv(argv)
    except (flags.Error, TypeError, ValueError) as exc:
        raise ValueError(" ".join(str(exc).replace("--config.", "--set ").split())) from None
    return fv.config


def _fail(msg: str):
    print(f"error: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(text).split())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp", required=True, help=f"one of: {', '.join(available())}")
    ap.add_argument("--preset", default="default", choices=PRESETS)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--fresh", action="store_true", help="ignore (delete) an existing run in the work directory")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--devices", type=int, default=None,
                    help="split each training batch over N devices (GPUs, or hosts after jax.distributed); "
                         "parameters replicated, same results as one device")
    args = ap.parse_args(argv)
    if args.exp == "pgcgm":  # the GAN has its own loop (hgfn_jax.gan.train); same flags, same conventions
        if args.devices not in (None, 1):
            _fail("--devices: the PGCGM loop trains on one device (data-parallel training is the GFlowNet loop's)")
        from experiments import pgcgm

        rest = ["--preset", args.preset] + (["--workdir", args.workdir] if args.workdir else [])
        rest += [f"--set={o}" for o in args.overrides] + (["--fresh"] if args.fresh else [])
        rest += ["--no-progress"] if args.no_progress else []
        return pgcgm.main(rest)

    from hgfn_jax.paths import MissingResourceError
    from hgfn_jax.rundir.checkpoint import check_resume_config

    # Everything a user can get wrong is checked here, before any data, model or compilation: one line each.
    try:
        cfg = apply_overrides(get_config(args.exp, args.preset), args.overrides)
        if args.devices is not None:
            from hgfn_jax.gflownet.sharding import check_divisible, data_mesh

            with cfg.unlocked():
                cfg.train.devices = int(args.devices)
            check_divisible(int(cfg.train.batch_size), data_mesh(args.devices))
        workdir = Path(args.workdir) if args.workdir else (
            Path(os.environ.get("HGFN_RUNS_DIR", "runs")) / f"{args.exp}-{args.preset}")
        if args.fresh and workdir.exists():
            import shutil

            shutil.rmtree(workdir)
        check_resume_config(cfg, workdir)
        from experiments.tasks import build_task

        if "lr_z" in cfg.train:  # a GFlowNet run: objective / replay / local search refused before data and models
            from experiments.tasks import check_supported

            check_supported(cfg)
        task = build_task(cfg)  # environment / reward settings are validated (and models loaded) here
        if "lr_z" in cfg.train:  # fldb / mdb / replay / local search: what only the built task can say it supports
            from hgfn_jax.gflownet.train import check_train_config

            check_train_config(cfg, task)
    except (ValueError, KeyError, TypeError, MissingResourceError) as exc:
        _fail(_one_line(exc))
    from hgfn_jax.gflownet.train import train_and_evaluate

    out = train_and_evaluate(cfg, task, workdir, progress=not args.no_progress)
    print(json.dumps(out["summary"], indent=2, default=str))
    print(f"run directory: {workdir.resolve()}")


if __name__ == "__main__":
    main()
