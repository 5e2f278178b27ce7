"""The demo: every job of the pipeline, in order, on the synthetic shop, in one Python process.

Each step calls a job's ``main(argv)`` exactly as ``python jobs/<job>.py <args>`` does (same argument
parsing, same exit codes) but inside one process, so the jobs share one Spark JVM and its warm Python
workers: that removes ~15 s of JVM start and class loading per job and is what lets the whole chain run in
minutes on a laptop. Scheduled runs (Airflow, spark-submit) still run one job per process.

A person watches one line per step (on the terminal's stderr); everything the jobs and Spark log goes to
``{root}/logs/demo.log``. Each job's ``TAG {json}`` line still reaches stdout. A failing step prints the
log's tail and ends the demo with the job's exit code.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pyspark.sql import SparkSession

from shopformer import cli
from shopformer.config import Config
from shopformer.errors import ConfigError, ShopformerError
from shopformer.ops import summary
from shopformer.ops.jobs import job_main

log = logging.getLogger(__name__)
ABOUT = """\
The README's demo: every job, in order, on the synthetic shop of the config, in one Python process.

Dates come from ``synthetic.start_date`` and ``synthetic.days``; ``--set`` overrides reach every job.
Progress is one line per step on stderr, every job's result line on stdout, and the logs of the jobs and
Spark in ``{root}/logs/demo.log``. Ends with summarize_tables' readable summary (docs: README "Demo").
"""

# Steps whose non-zero exit does not stop the demo: evaluate_scores exits 3 when a score-quality threshold
# is breached, after writing scores.score_quality (the summary then shows the breach).
TOLERATED = {"evaluate_scores": 3}


@dataclass(frozen=True)
class Step:
    """One job run: ``jobs/<job>.py`` with these arguments (the demo's ``--conf``/``--set`` appended)."""

    job: str
    args: tuple[str, ...]
    why: str
    extra_sets: tuple[str, ...] = field(default=())

    def argv(self, conf: str, sets: list[str]) -> list[str]:
        out = [*self.args, "--conf", conf]
        for item in [*sets, *self.extra_sets]:
            out += ["--set", item]
        return out


def _day(cfg: Config, key: str) -> dt.date:
    value = cfg.get(key)
    if value is None:
        raise ConfigError(f"the demo needs config key '{key}' (the synthetic shop's first day)")
    return dt.date.fromisoformat(str(value))


def _on(run: dt.date, end: dt.date | None = None, *flags: str) -> tuple[str, ...]:
    """A step's ``--run-date`` (and ``--end-date``) arguments, then its own flags."""
    span = ("--run-date", run.isoformat(), *(() if end is None else ("--end-date", end.isoformat())))
    return (*span, *flags)


def demo_steps(cfg: Config) -> list[Step]:
    """The chain for the shop of ``synthetic.start_date`` + ``synthetic.days``: history, training, then
    a backfill of scores whose outcomes are known, the last night, its score quality, the summary."""
    start = _day(cfg, "synthetic.start_date")
    end = start + dt.timedelta(days=cfg.settings.synthetic.days)  # its folder: the last day's late rows
    first = start + dt.timedelta(days=7)  # weekly training as-of dates start one week in
    week = dt.timedelta(days=7)
    last_weekly = first + week * ((end - first).days // 7)
    return [
        Step("generate_shop", _on(start), "raw landing files of the synthetic shop"),
        Step("ingest_events", _on(start, end), "landing -> bronze"),
        Step("sessionize", _on(start, end), "bronze -> silver sessions"),
        Step(
            "build_snapshots",
            _on(first, end, "--build-vocab"),
            "weekly point-in-time training snapshots + a vocabulary",
        ),
        Step("embed_items", _on(end), "item text vectors (bundled MiniLM)"),
        Step("train", _on(end), "model vs baselines on a time-based holdout; registry"),
        # Scores for three past weekly dates, 14 days apart, whose outcomes are known by the end: the newest
        # with 7-day propensity labels and the oldest with 30-day churn labels (score quality judges them).
        Step(
            "score_users",
            _on(last_weekly - 5 * week, last_weekly - week),
            "backfill: scores of past dates whose outcomes are known",
            extra_sets=("snapshots.every_days=14",),
        ),
        Step("build_snapshots", _on(end), "the night's snapshots"),
        Step("score_users", _on(end), "the night's scores"),
        Step("evaluate_scores", _on(end), "score quality of the scored dates"),
        Step("summarize_tables", _on(end), "what the tables hold"),
    ]


@dataclass
class Console:
    """Where a person reads progress (the terminal's stderr) and where TAG lines go (the real stdout)."""

    term: IO[str]
    tags: IO[str]
    log_path: Path
    t0: float = field(default_factory=time.monotonic)

    def say(self, text: str) -> None:
        self.term.write(text + "\n")
        self.term.flush()


@contextlib.contextmanager
def logs_to_file(log_path: Path) -> Iterator[Console]:
    """Send fd 1 and fd 2 (Python, the Spark JVM, torch workers: all started later) to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    term = os.fdopen(os.dup(2), "w", buffering=1)
    tags = os.fdopen(os.dup(1), "w", buffering=1)
    with open(log_path, "w", buffering=1) as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield Console(term=term, tags=tags, log_path=log_path)
        finally:
            active = SparkSession.getActiveSession()
            if active is not None:  # now, so its shutdown logs go to the file too
                active.stop()
            logging.getLogger("py4j").setLevel(logging.WARNING)  # its goodbye at interpreter exit
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            term.close()
            tags.close()


def run_job(job: str, argv: list[str]) -> tuple[int, str]:
    """Run job ``job``'s ``main(argv)`` in this process: (exit code, what it printed on stdout)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            rc = job_main(job)(argv)
    except SystemExit as exc:  # a job that exits on its own: its code, as the shell would see it
        rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception:  # an unexpected failure: its traceback to the log, exit 1 as Python would
        log.exception("%s failed", job)
        rc = 1
    return rc, out.getvalue()


def _is_tag(line: str) -> bool:
    tag, _, rest = line.partition(" ")
    return tag.isupper() and rest.startswith("{")


def tag_line(stdout: str) -> tuple[str, dict[str, Any]] | None:
    """A job's ``TAG {json}`` result line (cli.emit), parsed; None when it printed none. Other stdout
    (TorchDistributor relays its training processes' output there) is not a result."""
    for line in filter(_is_tag, stdout.splitlines()):
        tag, _, rest = line.partition(" ")
        return tag, json.loads(rest)
    return None


def brief(stdout: str, width: int = 150) -> str:
    """The scalar fields of the job's result line, cut to ``width``: what a person glances at."""
    found = tag_line(stdout)
    if found is None:
        return ""
    text = ", ".join(f"{k}={v}" for k, v in found[1].items() if isinstance(v, int | float | str))
    return text if len(text) <= width else text[: width - 3] + "..."


def _tail(path: Path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def run_steps(steps: list[Step], *, conf: str, sets: list[str], console: Console) -> int:
    """Run the steps in order; the first failing one (not tolerated) ends the run with its exit code."""
    for n, step in enumerate(steps, 1):
        argv = step.argv(conf, sets)
        since = _clock(time.monotonic() - console.t0)
        console.say(f"==> [{n}/{len(steps)}] {step.job} {' '.join(step.args)}  ({step.why}; at {since})")
        log.info("demo step %d: jobs/%s.py %s", n, step.job, " ".join(argv))
        t = time.monotonic()
        rc, out = run_job(step.job, argv)
        sys.stdout.write(out)  # into the log too; only the result lines to the real stdout
        console.tags.writelines(ln + "\n" for ln in out.splitlines() if _is_tag(ln))
        took = _clock(time.monotonic() - t)
        if rc != 0 and TOLERATED.get(step.job) != rc:
            console.say(f"<== [{n}] {step.job} FAILED (exit {rc}) in {took}; the end of {console.log_path}:")
            console.say(_tail(console.log_path))
            return rc
        note = "" if rc == 0 else f" (exit {rc}: a score-quality threshold was breached, see the summary)"
        console.say(f"<== [{n}] {step.job} done in {took}{note}  {brief(out)}")
        found = tag_line(out)
        if found is not None and found[0] == "SUMMARY":  # the readable end: summarize_tables' render
            console.say(summary.render(found[1]))
    console.say(f"demo finished in {_clock(time.monotonic() - console.t0)}; full log: {console.log_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``jobs/demo.py``: ``demo_steps`` on the configured shop; logs to ``{root}/logs/demo.log``."""
    p = cli.config_parser(ABOUT)
    try:
        ns = p.parse_args(argv)
        cfg = cli.load(p, ns)
        try:
            steps = demo_steps(cfg)
        except ShopformerError as exc:
            p.error(str(exc))
    except SystemExit as exc:  # argparse: --help (0) or a usage/config error (2), explained on stderr
        return exc.code if isinstance(exc.code, int) else 2
    log_path = Path(str(cfg.get("paths.root"))) / "logs" / "demo.log"
    with logs_to_file(log_path) as console:
        cli.configure_logging()
        return run_steps(steps, conf=ns.conf, sets=ns.set, console=console)
