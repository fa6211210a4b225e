"""Runs every benchmark module (``benchmarks/bench_*.py``); each writes ``benchmarks/results/<name>.json``.

    python -m benchmarks.run_all [--quick] [--only crystal,reward_terms]
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import time
import traceback

import benchmarks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="reduced sweeps (about a minute each)")
    ap.add_argument("--only", default="", help="comma-separated module names without the bench_ prefix")
    args = ap.parse_args(argv)
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_"))
    if args.only:
        wanted = {f"bench_{n}" for n in args.only.split(",")}
        names = [n for n in names if n in wanted]
    failed = []
    for name in names:
        print(f"=== {name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{name}").main(quick=args.quick)
        except Exception:  # keep going: one broken benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
        print(f"=== {name}: {time.perf_counter() - t0:.1f} s ===", flush=True)
    if failed:
        raise SystemExit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
