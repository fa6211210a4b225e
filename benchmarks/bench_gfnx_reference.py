"""gfnx (the JAX GFlowNet library of Tiapkin et al., github.com/d-tiapkin/gfnx) measured side by side with ours on
the same hypergrid task: 8x8x8x8, reward R0=1e-2 / R1=0.5 / R2=2.0, 64 trajectories per update, MLP 64x64, uniform
P_B, epsilon 0.1, Adam (lr 3e-3, log Z lr 0.1), TB / DB / SubTB (lambda 0.9). Updates/s, one update = 64
trajectories; ``items_per_s`` = trajectories/s.

gfnx runs in its own virtual environment (its own jax, its numpy pin), in a subprocess started with
``--gfnx-python``; its training loop is the one of its repository's single-file baselines
(``baselines/{tb,db,subtb}_hypergrid.py``, not shipped in the PyPI package, point ``--gfnx-baselines`` at a
checkout's ``baselines/``), imported unmodified. The worker calls the baseline's ``run_experiment`` with the settings
above and stops it at its training ``jax.lax.fori_loop``, taking the loop body (the baseline's jitted
``train_step_wrapper``: rollout, loss, Adam, its metric-buffer update and its per-update logging callback) and the
initial state; the jax-tqdm progress bar is left out (replaced by an identity decorator). Both sides then run one
jitted chunk of ``n_updates`` updates from a fixed initial state: gfnx a ``jax.lax.fori_loop`` over its step (as its
baselines do), ours ``make_train``'s ``run_chunk`` (a ``jax.lax.scan`` of ``update``), the same chunk as
``bench_objectives``. Evaluation is excluded on both sides (gfnx's eval steps are never reached: ``eval_each`` is
set past the chunk). A second gfnx variant has ``jax.debug.callback`` replaced by a no-op before tracing, which
removes the baselines' per-update host logging callback: the difference is what that callback costs.

What still differs, by construction of each library (recorded per record): gfnx's rollout scans
``max_steps_in_episode + 1`` = 33 steps per trajectory, ours 29 (= 4 x 7 + 1); for DB / SubTB gfnx's state flow is
one more output of the policy MLP, ours a separate 64x64 MLP (``flow_params``); gfnx's TB step also computes the
trajectories' log P_B once more for its logged "RL reward", and every gfnx step adds the final states to its metric
buffer. Ours runs its non-finite-update guard. Each side runs on its own jax (``jax_version``).

Compilation (the first call) is timed apart; then gfnx and ours alternate, objective by objective, ``rounds`` times
(the order flips every round), and each keeps the median of its calls, so load drift on a shared machine hits both.
``--gfnx-python`` may be repeated (gfnx under two jax versions: sides ``gfnx_jax<version>`` and
``gfnx_jax<version>_nolog``). A python without gfnx is skipped with a message; with none the script exits 0 without
writing anything.

``--tv-check``: gfnx's TB baseline trained (its own loop, eval included) on the 2-D side-8 hypergrid with the same
settings, seeds 0-2, its exact TV after 301 and 1,500 updates, to ``results/gfnx_reference_tv.json``; ours is the TB
row of ``benchmarks.objective_curves``.

    python -m benchmarks.bench_gfnx_reference [--gfnx-python PY ...] [--gfnx-baselines DIR] [--rounds N] [--quick]
    python -m benchmarks.bench_gfnx_reference --tv-check

Setting up gfnx (PyPI ``gfnx`` 0.0.1; separate venvs, never the project's). gfnx calls ``jax.tree_map`` (removed in
JAX 0.6; TB's exact-distribution metric), so its own venv pins jax 0.5.3; the second venv runs it on the project's
jax 0.10.2 (numpy 2, against gfnx's numpy==1.26.4 pin: ``--no-deps``) with ``jax.tree_map`` aliased to
``jax.tree.map`` by the worker (``tree_map_shim``):

    python3.11 -m venv /tmp/gfnx_venv
    /tmp/gfnx_venv/bin/pip install gfnx equinox hydra-core "jax==0.5.3" "jaxlib==0.5.3"
    python3.11 -m venv /tmp/gfnx_venv_jax010
    /tmp/gfnx_venv_jax010/bin/pip install "jax==0.10.2" "jaxlib==0.10.2" numpy chex flashbax jax-tqdm jaxtyping
        networkx omegaconf matplotlib equinox hydra-core optax   # (one line)
    /tmp/gfnx_venv_jax010/bin/pip install --no-deps gfnx
    git clone https://github.com/d-tiapkin/gfnx /tmp/gfnx_src   # baselines/ (measured at commit 068316d)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

OBJECTIVES = ("tb", "db", "subtb")
DEFAULT_GFNX_PYTHON = "/tmp/gfnx_venv/bin/python"
DEFAULT_GFNX_BASELINES = "/tmp/gfnx_src/baselines"
TASK = "hypergrid_8x8x8x8"
R0, R1, R2 = 1e-2, 0.5, 2.0  # hgfn_jax.envs.toy.hypergrid.hypergrid_log_reward's defaults
_MSG = "@@ "  # prefix of the worker's protocol lines on its stdout (anything else there is ignored)
# The baselines' hydra configs, overridden to the hypergrid settings of bench_objectives (experiments/configs/
# hypergrid.py's default preset on 8x8x8x8). eval_each / num_train_steps are set past any chunk: no eval step runs.
GFNX_OVERRIDES = [
    "environment.dim=4", "environment.side=8", "environment.reward=easy",  # "easy" rebuilt with R0=1e-2 (worker)
    "num_envs=64", "network.hidden_size=64", "network.depth=2",  # eqx.nn.MLP depth 2 = two hidden layers of 64
    "agent.train_backward=false",  # uniform P_B, as ours
    "agent.learning_rate=0.003", "agent.start_eps=0.1", "agent.end_eps=0.1",
    "logging.eval_each=1000000000", "num_train_steps=1000000000", "logging.use_writer=false",
]
# The distribution check (tv_check): TB on the 2-D side-8 grid of our README's learning-curve table, its eval (exact TV)
# after update 1 (idx 0), 301 (idx 300) and at the end (idx 1499: after 1,500 updates).
TV_AT = (301, 1500)
TV_OVERRIDES = ["environment.dim=2", f"logging.eval_each={TV_AT[0] - 1}", f"num_train_steps={TV_AT[1]}"]
GFNX_EXTRA_OVERRIDES = {"tb": ["agent.logZ_learning_rate=0.1"], "db": [], "subtb": ["agent.lmbd=0.9"]}


# -- the gfnx side: runs under --gfnx-python (only the standard library, gfnx and its baselines' imports) ---------


def _send(obj: dict) -> None:
    print(_MSG + json.dumps(obj), flush=True)


def _worker(objective: str, baselines: str, n_updates: int, no_log_callback: bool, tv_seed: int | None = None) -> None:
    """The gfnx side of the speed comparison, or with ``tv_seed`` the distribution check (``tv_check``)."""
    import functools
    import importlib
    import importlib.metadata
    import logging
    import warnings

    sys.path.insert(0, baselines)  # the baselines import their own utils/ package
    import jax

    if no_log_callback:  # before anything is traced: the baselines' per-update logging callback becomes a no-op
        jax.debug.callback = lambda *args, **kwargs: None
    # gfnx 0.0.1 (PyPI, and the repository at 068316d) calls jax.tree_map in its exact-distribution metric (TB's
    # eval), removed in JAX 0.6.0: on a newer jax the TB baseline fails at tracing. Only there, alias jax.tree.map.
    with warnings.catch_warnings():  # on jax < 0.6 the lookup itself warns (deprecated)
        warnings.simplefilter("ignore", DeprecationWarning)
        tree_map_shim = not hasattr(jax, "tree_map")
    if tree_map_shim:
        jax.tree_map = jax.tree.map
    import gfnx
    from omegaconf import OmegaConf

    t_setup = time.perf_counter()
    # The baselines offer only "easy" (R0=1e-3) and "hard"; the standard hypergrid reward of ours has R0=1e-2.
    gfnx.EasyHypergridRewardModule = functools.partial(gfnx.GeneralHypergridRewardModule, R0=R0, R1=R1, R2=R2)
    mod = importlib.import_module(f"{objective}_hypergrid")
    logging.getLogger(mod.__name__).setLevel(logging.WARNING)  # not the config dump and "Start training"
    mod.loop_tqdm = lambda *args, **kwargs: (lambda fn: fn)  # no progress-bar callbacks
    cfg = OmegaConf.load(Path(baselines) / "configs" / f"{objective}_hypergrid.yaml")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(GFNX_OVERRIDES + GFNX_EXTRA_OVERRIDES[objective]))
    if tv_seed is not None:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(TV_OVERRIDES + [f"seed={tv_seed}"]))

    class _Captured(Exception):
        pass

    real_fori_loop = jax.lax.fori_loop

    def capture(lower, upper, body_fun, init_val, **kwargs):
        if getattr(body_fun, "__name__", "") == "train_step_wrapper":  # the training loop; anything else runs
            raise _Captured(body_fun, init_val)
        return real_fori_loop(lower, upper, body_fun, init_val, **kwargs)

    jax.lax.fori_loop = capture
    try:
        mod.run_experiment.__wrapped__(cfg)  # hydra.main's wrapped function: the config is passed directly
        raise RuntimeError(f"{objective}_hypergrid.run_experiment finished without reaching its training fori_loop")
    except _Captured as c:
        body, state0 = c.args
    finally:
        jax.lax.fori_loop = real_fori_loop
    setup_s = time.perf_counter() - t_setup
    if tv_seed is not None:
        # The baseline's own loop (fori_loop from idx 0, its eval steps included): its exact-distribution TV
        # (the trained P_F's terminal distribution by enumeration vs R/Z) after TV_AT[0] and TV_AT[1] updates.
        state, out, t_train = state0, {"gfnx_version": importlib.metadata.version("gfnx"),
                                       "jax_version": jax.__version__}, 0.0
        for lo, hi in ((0, TV_AT[0]), (TV_AT[0], TV_AT[1])):
            t0 = time.perf_counter()
            state = jax.block_until_ready(jax.jit(lambda s, lo=lo, hi=hi: real_fori_loop(lo, hi, body, s))(state))
            t_train += time.perf_counter() - t0
            out[f"tv_exact_after_{hi}"] = float(state.eval_info["exact_dist/tv"])
        _send(dict(out, log_z=float(state.logZ), train_s_incl_compile=t_train))
        return
    # idx from 1: idx 0 would be an eval step (idx % eval_each == 0)
    chunk = jax.jit(lambda s: real_fori_loop(1, 1 + n_updates, body, s))

    def run() -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(chunk(state0))
        return time.perf_counter() - t0

    compile_s = run()
    dev = jax.devices()[0]
    src = Path(baselines) / f"{objective}_hypergrid.py"
    _send({
        "ready": True, "compile_s": compile_s, "setup_s": setup_s,
        "gfnx_version": importlib.metadata.version("gfnx"), "jax_version": jax.__version__,
        "equinox_version": importlib.metadata.version("equinox"), "optax_version": importlib.metadata.version("optax"),
        "device_platform": dev.platform, "tree_map_shim": tree_map_shim,
        # its rollout scans max_steps_in_episode + 1 steps (hypergrid: dim * side + 1)
        "trajectory_steps": int(gfnx.HypergridEnvironment(gfnx.EasyHypergridRewardModule(), dim=cfg.environment.dim,
                                                          side=cfg.environment.side).max_steps_in_episode + 1),
        "policy_params": int(sum(x.size for x in jax.tree.leaves(state0.model))),
        "baseline_script": str(src), "baseline_sha256": hashlib.sha256(src.read_bytes()).hexdigest()[:16],
    })
    for line in sys.stdin:
        if line.strip() != "run":
            break
        _send({"seconds": run()})


# -- the parent: ours, and the gfnx workers driven over pipes --------------------------------------------------------


def gfnx_available(gfnx_python: str) -> dict | None:
    """{"gfnx": version, "jax": version} under ``gfnx_python``, or None (with the reason printed) when gfnx or the
    baselines' imports (equinox, hydra) cannot be imported there."""
    probe = ("import importlib.metadata as m, json, gfnx, equinox, hydra, jax; "
             "print(json.dumps({'gfnx': m.version('gfnx'), 'jax': jax.__version__}))")
    try:
        out = subprocess.run([gfnx_python, "-c", probe], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"gfnx reference: cannot run {gfnx_python!r} ({e}); skipped.")
        return None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        print(f"gfnx reference: {gfnx_python} cannot import gfnx / equinox / hydra ({last}); skipped. "
              "Install them in a separate venv (see this module's docstring).")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


class _GfnxWorker:
    def __init__(self, gfnx_python: str, objective: str, baselines: str, n_updates: int, no_log_callback: bool):
        cmd = [gfnx_python, str(Path(__file__).resolve()), "--worker", objective, "--gfnx-baselines", baselines,
               "--n-updates", str(n_updates)] + (["--no-log-callback"] if no_log_callback else [])
        # stderr inherited: their warnings and errors show
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(_MSG):
                return json.loads(line[len(_MSG):])
        raise RuntimeError(f"gfnx worker {self.proc.args} exited (rc {self.proc.wait()}) without answering")

    def time_chunk(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self._read()["seconds"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def main(gfnx_pythons=(DEFAULT_GFNX_PYTHON,), baselines: str = DEFAULT_GFNX_BASELINES, quick: bool = False,
         objectives=OBJECTIVES, rounds: int | None = None) -> list[dict]:
    """Several ``gfnx_pythons`` (venvs with different jax versions) are each measured; gfnx sides are named
    ``gfnx_jax<version>`` (as shipped) and ``gfnx_jax<version>_nolog`` (logging callback removed)."""
    found = {py: v for py in gfnx_pythons if (v := gfnx_available(py)) is not None}
    if not found:
        print("gfnx reference skipped: no python with gfnx; nothing written.")
        return []
    missing = [o for o in objectives if not (Path(baselines) / f"{o}_hypergrid.py").is_file()]
    if missing:
        print(f"gfnx reference skipped: {baselines} lacks {', '.join(f'{o}_hypergrid.py' for o in missing)} "
              "(gfnx's training loops are its repository's baselines/, not in the PyPI package); nothing written.")
        return []
    import jax
    import numpy as np

    from benchmarks.bench_objectives import _load, compile_objectives, hypergrid_8x8x8x8_config
    from benchmarks.common import record, write_results

    n_updates, default_rounds = (20, 2) if quick else (200, 5)
    rounds = rounds or default_rounds
    # (python, no_log_callback, side name)
    variants = [(py, no_log, f"gfnx_jax{v['jax']}" + ("_nolog" if no_log else "")) for py, v in found.items()
                for no_log in (False, True)]
    sides = ["hgfn_jax"] + [name for _, _, name in variants]
    workers = {}
    try:
        for obj in objectives:  # one at a time: compilations do not compete for the cores
            for py, no_log, name in variants:
                workers[obj, name] = _GfnxWorker(py, obj, baselines, n_updates, no_log)
        cfg = hypergrid_8x8x8x8_config()
        fns, states, compile_s = compile_objectives(cfg, n_updates, objectives)
        load = _load()
        times = {(obj, side): [] for obj in objectives for side in sides}
        for r in range(rounds):
            for obj in objectives:
                for side in sides if r % 2 == 0 else sides[::-1]:
                    if side == "hgfn_jax":
                        t0 = time.perf_counter()
                        jax.block_until_ready(fns[obj](states[obj]))
                        times[obj, side].append(time.perf_counter() - t0)
                    else:
                        times[obj, side].append(workers[obj, side].time_chunk())
    finally:
        for w in workers.values():
            w.close()

    batch = int(cfg.train.batch_size)
    common = dict(unit="trajectories (one update = 64 trajectories)", updates_per_call=n_updates, rounds=rounds,
                  machine_load=load, task=f"{TASK}, R0={R0} R1={R1} R2={R2}, batch {batch}, MLP 64x64, uniform P_B, "
                  "epsilon 0.1, Adam lr 3e-3 (log Z 0.1), subtb lambda 0.9")
    records = []
    for obj in objectives:
        median = {side: float(np.median(times[obj, side])) for side in sides}
        p = states[obj].params
        records.append(record(
            f"gfnx_reference_{TASK}_{obj}_hgfn_jax", batch, median["hgfn_jax"] / n_updates, compile_s[obj],
            library="hgfn_jax", objective=obj, jax_version=jax.__version__,
            updates_per_s=n_updates / median["hgfn_jax"], seconds_per_call_all=times[obj, "hgfn_jax"],
            loop="jax.lax.scan of make_train's update (bench_objectives.compile_objectives), one jit per chunk",
            trajectory_steps=int(cfg.env.ndim * (cfg.env.side - 1) + 1),
            policy_params=int(sum(x.size for x in jax.tree.leaves(p["policy"]))),
            flow_params=int(sum(x.size for x in jax.tree.leaves(p["flow"]))) if "flow" in p else None,
            # > 1: ours is faster than that gfnx side, by that factor
            speed_ratio_vs={name: median[name] / median["hgfn_jax"] for _, _, name in variants}, **common))
        for py, no_log, name in variants:
            info = workers[obj, name].info
            records.append(record(
                f"gfnx_reference_{TASK}_{obj}_{name}", batch, median[name] / n_updates, info["compile_s"],
                library=f"gfnx {info['gfnx_version']}", objective=obj, jax_version=info["jax_version"],
                equinox_version=info["equinox_version"], optax_version=info["optax_version"], gfnx_python=py,
                updates_per_s=n_updates / median[name], seconds_per_call_all=times[obj, name],
                loop="jax.lax.fori_loop of the baseline's train_step (gfnx baselines/"
                f"{obj}_hypergrid.py, unmodified), one jit per chunk; "
                + ("jax.debug.callback made a no-op (no per-update logging)" if no_log
                   else "as shipped, with its per-update jax.debug.callback logging"),
                log_callback=not no_log, tree_map_shim=info["tree_map_shim"], setup_s=info["setup_s"],
                trajectory_steps=info["trajectory_steps"], policy_params=info["policy_params"],
                baseline_script=info["baseline_script"], baseline_sha256=info["baseline_sha256"],
                overrides=GFNX_OVERRIDES + GFNX_EXTRA_OVERRIDES[obj], **common))
    write_results("gfnx_reference", records)
    return records


def tv_check(gfnx_python: str = DEFAULT_GFNX_PYTHON, baselines: str = DEFAULT_GFNX_BASELINES,
             seeds=(0, 1, 2)) -> list[dict]:
    """gfnx's TB baseline trained on the 2-D side-8 hypergrid (the settings above), seeds ``seeds`` one after the
    other, its own exact TV after 301 and 1,500 updates; written to ``results/gfnx_reference_tv.json``. Ours: the
    TB row of ``benchmarks.objective_curves`` (same task and settings; exact TV by dynamic programming)."""
    versions = gfnx_available(gfnx_python)
    if versions is None or not (Path(baselines) / "tb_hypergrid.py").is_file():
        print("gfnx TV check skipped: no gfnx python or no tb_hypergrid.py baseline; nothing written.")
        return []
    import itertools

    import numpy as np

    from benchmarks.common import device_name, write_results
    from hgfn_jax.envs.toy.hypergrid import hypergrid_log_reward

    side = 8
    log_z_true = float(np.log(sum(np.exp(float(hypergrid_log_reward(np.array(p), side, R0, R1, R2)))
                                  for p in itertools.product(range(side), repeat=2))))
    records = []
    for seed in seeds:
        cmd = [gfnx_python, str(Path(__file__).resolve()), "--worker", "tb", "--gfnx-baselines", baselines,
               "--tv-seed", str(seed)]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True, timeout=1800).stdout
        info = json.loads([ln for ln in out.splitlines() if ln.startswith(_MSG)][-1][len(_MSG):])
        rec = dict(benchmark="gfnx_reference_tv_hypergrid_2d_side8_tb", batch=64,
                   library=f"gfnx {info.pop('gfnx_version')}", objective="tb", seed=seed, device=device_name(),
                   load_avg_1min=os.getloadavg()[0], log_z_true=log_z_true, task=f"hypergrid 2-D side 8, R0={R0} "
                   f"R1={R1} R2={R2}, batch 64, MLP 64x64, uniform P_B, epsilon 0.1, Adam lr 3e-3 (log Z 0.1)", **info)
        print(json.dumps(rec))
        records.append(rec)
    write_results("gfnx_reference_tv", records)
    return records


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gfnx-python", action="append", help=f"a python with gfnx (repeatable; default "
                    f"{DEFAULT_GFNX_PYTHON})")
    ap.add_argument("--gfnx-baselines", default=DEFAULT_GFNX_BASELINES)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--objectives", default=",".join(OBJECTIVES))
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5, --quick 2)")
    ap.add_argument("--worker", choices=OBJECTIVES, help=argparse.SUPPRESS)  # internal: the gfnx side
    ap.add_argument("--n-updates", type=int, default=200, help=argparse.SUPPRESS)
    ap.add_argument("--no-log-callback", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tv-seed", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tv-check", action="store_true", help="instead: gfnx TB's exact TV on the 2-D side-8 grid "
                    "(seeds 0-2; the first --gfnx-python)")
    a = ap.parse_args()
    if a.worker:
        _worker(a.worker, a.gfnx_baselines, a.n_updates, a.no_log_callback, a.tv_seed)
    else:
        if __package__ in (None, ""):  # run as a file: the repository root on the path for benchmarks.*
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        pythons = tuple(a.gfnx_python or [DEFAULT_GFNX_PYTHON])
        if a.tv_check:
            tv_check(pythons[0], a.gfnx_baselines)
        else:
            main(pythons, a.gfnx_baselines, a.quick, tuple(a.objectives.split(",")), a.rounds)
