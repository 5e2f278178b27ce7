"""Progress of long work in the job log: done/total, rows per second and the time left, at most once a
``every_s`` seconds (a minute by default) and at the end, so a backfill or a training run that takes an
hour never goes quiet (and a scheduler's log shows where it stands)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("shopformer.progress")


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """``advance()`` after each unit of work (a date, an epoch); logs ``what: i/n, r rows/s, ~t left``."""

    def __init__(
        self, what: str, total: int, *, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.what, self.total, self.every_s, self.clock = what, total, every_s, clock
        self.done, self.rows = 0, 0
        self.start = self.last = clock()

    def advance(self, rows: int = 0, units: int = 1) -> str | None:
        """Count finished work; returns the line it logged, if it was time to log one."""
        self.done, self.rows = self.done + units, self.rows + rows
        now = self.clock()
        if now - self.last < self.every_s and self.done < self.total:
            return None
        self.last = now
        spent = max(now - self.start, 1e-9)
        left = spent / self.done * (self.total - self.done) if self.done else float("nan")
        line = f"{self.what}: {self.done}/{self.total} in {_clock(spent)}"
        if self.rows:
            line += f", {self.rows / spent:,.0f} rows/s"
        line += " (done)" if self.done >= self.total else f", ~{_clock(left)} left"
        log.info("%s", line)
        return line
