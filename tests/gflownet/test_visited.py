"""visited.jsonl (train.record_visited): one line per iteration with the training batch's terminal states and
log-rewards, checked against an independent replay of the run (the update stepped one iteration at a time, its
rollouts redone from the same keys); kill-and-resume writes the same bytes; the report shows the modes curve."""

import csv
import json

import jax
import numpy as np

from experiments.configs import get_config
from experiments.tasks import build_task
from hgfn_jax.envs.toy.hypergrid import hypergrid_log_reward
from hgfn_jax.gflownet.rollout import rollout
from hgfn_jax.gflownet.train import exploration_from, make_train, train_and_evaluate
from hgfn_jax.metrics import modes


def _cfg():
    cfg = get_config("hypergrid", "test")  # 20 iterations of 64, chunks of 5, checkpoints every 10
    cfg.train.record_visited = True
    return cfg


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_visited_stream_equals_independent_replay(tmp_path):
    cfg = _cfg()
    task = build_task(cfg)
    train_and_evaluate(cfg, task, tmp_path, progress=False)
    recs = _lines(tmp_path / "visited.jsonl")
    n, batch = cfg.train.num_iterations, cfg.train.batch_size
    assert [r["iteration"] for r in recs] == list(range(1, n + 1))
    assert all(len(r["keys"]) == len(r["log_reward"]) == batch for r in recs)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert "visited/keys" not in rows[0] and "visited/log_reward" not in rows[0]
    np.testing.assert_allclose([np.mean(r["log_reward"]) for r in recs], [float(r["log_reward_mean"]) for r in rows],
                               rtol=1e-6)

    # independent replay: the update stepped alone (no recording), each iteration's batch rolled out again from
    # the key the update splits off, with the parameters before that update
    env, policy = task.env, task.policy
    fns = make_train(cfg, task, record_visited=False)
    step = jax.jit(fns.update)
    roll = jax.jit(lambda k, p: rollout(k, env, policy.apply, p, batch, exploration_from(cfg.train)).final.pos)
    ts = fns.init(jax.random.PRNGKey(int(cfg.seed)))
    replay = []
    for rec in recs:
        _, k_roll = jax.random.split(ts.key)
        pos = np.asarray(roll(k_roll, ts.params["policy"]))
        log_r = np.asarray(jax.vmap(lambda p: hypergrid_log_reward(p, env.side))(pos))
        # the file's keys are the positions' int32 words, big-endian hex
        got = np.array([np.frombuffer(bytes.fromhex(k), ">i4") for k in rec["keys"]])
        np.testing.assert_array_equal(got, pos)
        np.testing.assert_allclose(rec["log_reward"], log_r, rtol=1e-6)
        replay.append((np.asarray(env.index(pos)).tolist(), log_r))
        ts, _ = step(ts)
    threshold = float(np.log(2.0))  # the hypergrid's high-reward cells (R = 0.01 + 0.5 + 2)
    a = modes.modes_curve(modes.read_visited(tmp_path / "visited.jsonl"), threshold)
    b = modes.modes_curve(replay, threshold)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["states_visited"][-1] == n * batch and a["modes"][-1] > 0


def test_visited_resume_is_byte_identical(tmp_path):
    cfg = _cfg()
    task = build_task(cfg)
    train_and_evaluate(cfg, task, tmp_path / "full", progress=False)
    part = tmp_path / "part"
    # killed after 13 iterations (checkpoint at 10), mid-write of iteration 14's line
    train_and_evaluate(cfg, task, part, stop_after=13, progress=False)
    assert len(_lines(part / "visited.jsonl")) == 13
    with (part / "visited.jsonl").open("a") as f:
        f.write('{"iteration": 14, "keys": ["0000')
    train_and_evaluate(cfg, task, part, progress=False)
    assert (part / "visited.jsonl").read_bytes() == (tmp_path / "full" / "visited.jsonl").read_bytes()

    # a fresh run with recording off in a directory holding another run's stream removes it
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "visited.jsonl").write_text('{"iteration": 1, "keys": [1], "log_reward": [0.0]}\n')
    cfg.train.record_visited = False
    train_and_evaluate(cfg, build_task(cfg), stale, progress=False)
    assert not (stale / "visited.jsonl").exists()


def test_visited_counts_fresh_states_not_replayed_ones(tmp_path):
    """With a replay buffer half of each batch is drawn from the buffer: those states were visited when fresh, so a
    line holds the fresh half only (a mutation recording the whole batch gives 64, not 32, per line)."""
    cfg = _cfg()
    cfg.train.num_iterations = 5
    cfg.train.replay = {"capacity": 256, "fraction": 0.5, "prioritized": False, "beta": 1.0}
    task = build_task(cfg)
    train_and_evaluate(cfg, task, tmp_path, progress=False)
    recs = _lines(tmp_path / "visited.jsonl")
    assert len(recs) == 5
    assert all(len(r["keys"]) == len(r["log_reward"]) == cfg.train.batch_size // 2 for r in recs)
