"""What a training loop logs per iteration: ``metrics.csv`` + TensorBoard, truncatable to a restored step so a
resumed run writes the same bytes as an uninterrupted one, and the task's host counters counted over the run."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path


class MetricsLog:
    """CSV + TensorBoard writer that can be truncated back to a restored step (exact resume).

    The CSV's columns are the union of every row's keys in order of first appearance (a failure reason that
    first shows up late gets its column; earlier rows leave it empty): when a row brings a new key the file is
    rewritten with the extended header. Truncating to a restored step keeps the rows up to it and the columns
    they use, so a resumed run writes the same bytes as an uninterrupted one.
    """

    def __init__(self, workdir: Path, resume_step: int):
        self.path = workdir / "metrics.csv"
        rows: list[dict] = []
        header: list[str] = []
        if self.path.exists() and resume_step > 0:
            with self.path.open(newline="") as f:
                reader = csv.DictReader(f)
                header = list(reader.fieldnames or [])
                for r in reader:
                    try:
                        step = int(r["step"])
                    except (KeyError, TypeError, ValueError):
                        continue  # a torn last line from a kill mid-write
                    if step <= resume_step:
                        rows.append({k: v for k, v in r.items() if k is not None and v not in (None, "")})
        self.rows = rows
        used = {k for r in rows for k in r}
        self.fieldnames: list[str] = [k for k in header if k in used]
        self._rewrite()
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def row_at(self, step: int) -> dict:
        """The logged row of ``step`` (strings as in the file), or ``{}``."""
        for r in reversed(self.rows):
            if int(r["step"]) == step:
                return r
        return {}

    def _rewrite(self):
        if not self.fieldnames:
            self.path.write_text("")
            return
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fieldnames)
            w.writeheader()
            w.writerows(self.rows)

    def add(self, step: int, metrics: dict):
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self.rows.append(row)
        new = [k for k in row if k not in self.fieldnames]
        if new:
            self.fieldnames += new
            self._rewrite()
        else:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, fieldnames=self.fieldnames).writerow(row)
        for k, v in row.items():
            if k != "step":
                self.tb.add_scalar(k, v, step)

    def close(self):
        self.tb.close()


class RunHostStats:
    """The task's host counters counted over the RUN, across resumes: ``offset`` (the counters logged at the
    restored step) plus what the counters gained since this call started. So ``host/*`` in ``metrics.csv``
    continue exactly after a resume (and a task reused for a second run does not carry the first one's counts).
    Keys are sorted, so a run and its resumed copy add the columns of new failure reasons in the same order.
    A task reused for another run in the same process must write the columns a fresh process would: a counter
    function with a ``reset`` attribute (the battery tasks' energy bridge) is reset first; for any other, a key
    it already had when this call started is reported only once it changes (or when the restored row holds it),
    so a failure reason seen only by an earlier run does not appear as a 0 column from the first row."""

    def __init__(self, fn: Callable[[], dict], restored_row: dict):
        reset = getattr(fn, "reset", None)
        self.resettable = callable(reset)
        if self.resettable:
            reset()
        self.fn = fn
        self.base = {k: float(v) for k, v in fn().items()}
        self.offset = {k[len("host/"):]: float(v) for k, v in restored_row.items() if k.startswith("host/")}

    def __call__(self) -> dict:
        now = {k: float(v) for k, v in self.fn().items()}
        if not self.resettable:  # keys left by an earlier run: only once they change
            now = {k: v for k, v in now.items() if k not in self.base or v != self.base[k]}
        keys = sorted(set(now) | set(self.offset))
        return {k: self.offset.get(k, 0.0) + (now.get(k, 0.0) - self.base.get(k, 0.0)) for k in keys}
