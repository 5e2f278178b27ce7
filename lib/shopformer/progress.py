"""Progress of long work in the job log: done/total, rows per second and the time left, at most once a
``every_s`` seconds (a minute by default) and at the end, so a backfill or a training run that takes an
hour never goes quiet (and a scheduler's log shows where it stands). Standard library only: training
worker processes use it too."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

log = logging.getLogger("shopformer.progress")


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):  # nothing done yet: no rate to extrapolate from
        return "?"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """``advance()`` after each unit of work (a date, a batch); logs ``what: i/n, r rows/s, ~t left``.

    Finer-grained callers (training: epochs of batches) use ``count``, ``due`` and ``report`` to say
    where they are in their own words and which parts' time left matters (the epoch, the stage)."""

    def __init__(
        self, what: str, total: int, *, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what, self.total, self.every_s, self.clock = what, total, every_s, clock
        self.done, self.rows = 0, 0
        self.start = self.last = clock()

    def advance(self, rows: int = 0, units: int = 1) -> str | None:
        """Count finished work; returns the line it logged, if it was time to log one."""
        self.count(rows, units)
        return self.report() if self.due() or self.done >= self.total else None

    def count(self, rows: int = 0, units: int = 1) -> None:
        """Count finished work without logging."""
        self.done, self.rows = self.done + units, self.rows + rows

    def due(self) -> bool:
        """True once ``every_s`` passed since the last line (or the start)."""
        return self.clock() - self.last >= self.every_s

    def left_s(self, units: int) -> float:
        """Seconds ``units`` more units take at the mean pace so far (nan before the first one)."""
        spent = self.clock() - self.start
        return spent / self.done * units if self.done else math.nan

    def report(self, *, at: str | None = None, left: Mapping[str, int] | None = None, note: str = "") -> str:
        """Log where the work stands now and restart the interval. ``at`` replaces ``done/total`` (``epoch
        1/3, step 40/100``); ``left`` maps parts still to do to their units, each giving ``~t left in
        <part>`` (default: the rest of ``total``, unnamed; ``{}``: none); ``note`` ends the line."""
        now = self.last = self.clock()
        spent = max(now - self.start, 1e-9)
        line = f"{self.what}: {at or f'{self.done}/{self.total}'} in {_clock(spent)}"
        if self.rows:
            line += f", {self.rows / spent:,.0f} rows/s"
        if self.done >= self.total:
            line += " (done)"
        else:
            for part, units in ({"": self.total - self.done} if left is None else left).items():
                line += f", ~{_clock(self.left_s(units))} left" + (f" in {part}" if part else "")
        line += f": {note}" if note else ""
        log.info("%s", line)
        return line


class EpochProgress:
    """Rank 0's lines for a training stage (``epochs`` of ``steps`` batches): while an epoch runs, at most
    every ``every_s`` (epoch, step, rows/s, time left in the epoch and in the stage: an upper bound when
    early stopping ends it sooner), and one line at each epoch's end with its metrics (its losses)."""

    def __init__(
        self,
        stage: str,
        epochs: int,
        steps: int,
        *,
        rows_per_step: int,
        every_s: float = 30.0,  # at most this often, so at least once a minute even with uneven steps
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.p = Progress(stage, epochs * steps, every_s=every_s, clock=clock)
        self.epochs, self.steps, self.rows_per_step = epochs, steps, rows_per_step

    @property
    def epoch(self) -> int:
        """The epoch running now (1-based): the one the next step belongs to."""
        return min(self.p.done // self.steps + 1, self.epochs)

    def step(self, k: int) -> str | None:
        """After step ``k`` (1-based) of the running epoch; its last step is left to ``epoch_done``."""
        epoch = self.epoch
        self.p.count(rows=self.rows_per_step)
        if k >= self.steps or not self.p.due():
            return None
        left = {"the epoch": self.steps - k, "the stage": self.p.total - self.p.done}
        return self.p.report(at=f"epoch {epoch}/{self.epochs}, step {k}/{self.steps}", left=left)

    def epoch_done(self, metrics: Mapping[str, float], *, stopping: bool = False) -> str:
        """The line of a finished epoch (``stopping``: early stopping ends the stage here)."""
        epoch = (self.p.done - 1) // self.steps + 1
        note = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()) + ("; stops early" if stopping else "")
        left = {} if stopping else {"the stage": self.p.total - self.p.done}
        return self.p.report(at=f"epoch {epoch}/{self.epochs} done", left=left, note=note)


@dataclass(frozen=True)
class StageState:
    """One running Spark stage as the driver's status tracker reports it."""

    stage_id: int
    name: str
    tasks: int
    completed: int
    running: int


class StageWatch:
    """Lines for Spark stages that have run at least ``every_s``: one Spark plan (a multi-date snapshot
    build, a range ingest) runs for many minutes without a line of the job's own, so the driver says where
    each long stage stands: tasks done of all, tasks running, time since first seen and the stage's time
    left at the pace since then. Short stages never log (one seen by only one poll is not reported), nor do
    stages without a running task (submitted, waiting for the stages they read)."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s, self.clock = every_s, clock
        self.seen: dict[int, tuple[float, int]] = {}  # stage id -> (first seen, tasks completed then)

    def poll(self, stages: Iterable[StageState]) -> list[str]:
        """The lines for this poll (call it every ``every_s``); forgets stages no longer running."""
        now, lines, running = self.clock(), [], {}
        for st in stages:
            first, done0 = self.seen.get(st.stage_id, (now, st.completed))
            running[st.stage_id] = (first, done0)
            if now - first < self.every_s or not st.running:  # new, or waiting for the stages it reads
                continue
            rate = (st.completed - done0) / (now - first)
            left = (st.tasks - st.completed) / rate if rate > 0 else math.nan
            lines.append(
                f"spark stage {st.stage_id} ({st.name}): {st.completed}/{st.tasks} tasks, {st.running} "
                f"running, {_clock(now - first)} since first seen, ~{_clock(left)} left in the stage"
            )
        self.seen = running
        for line in lines:
            log.info("%s", line)
        return lines


def watch_stages(
    read: Callable[[], list[StageState]], *, every_s: float = 60.0, alive: Callable[[], bool]
) -> threading.Event:
    """Poll ``read()`` every ``every_s`` in a daemon thread while ``alive()``; set the returned event to
    stop it sooner. A failing read (the context stopping under it) ends the thread, never the job."""
    stop, stages = threading.Event(), StageWatch(every_s)

    def loop() -> None:
        while not stop.wait(every_s) and alive():
            try:
                stages.poll(read())
            except Exception:  # progress must never fail the work it reports on
                log.debug("stage watch stopped", exc_info=True)
                return

    threading.Thread(target=loop, name="shopformer-stage-watch", daemon=True).start()
    return stop
