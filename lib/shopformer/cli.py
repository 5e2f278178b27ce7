"""Shared command line for the jobs: ``--conf``, ``--run-date``, ``--end-date``, ``--set key=value``."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shopformer import errors
from shopformer.config import Config, load_config
from shopformer.errors import ShopformerError
from shopformer.redact import redact, redact_settings, redacting

log = logging.getLogger("shopformer")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date (YYYY-MM-DD): {text!r}") from exc


@dataclass(frozen=True)
class JobArgs:
    """Parsed arguments common to every job, plus the job's own namespace."""

    cfg: Config
    run_date: dt.date
    end_date: dt.date
    run_id: str
    ns: argparse.Namespace


def config_parser(description: str, *, add_help: bool = True) -> argparse.ArgumentParser:
    """A parser with the configuration options every entry point shares: ``--conf`` and ``--set``."""
    p = argparse.ArgumentParser(description=description, add_help=add_help)
    p.add_argument("--conf", default="local", help="environment: a name in conf/ or a YAML path")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return p


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser that already knows the common options; jobs add their own."""
    p = config_parser(description)
    p.add_argument("--run-date", type=_date, required=True, help="logical run date (Airflow's), YYYY-MM-DD")
    p.add_argument("--end-date", type=_date, help="last date of a range (inclusive)")
    p.add_argument("--run-id", help="lineage id stored in written rows")
    return p


def load(p: argparse.ArgumentParser, ns: argparse.Namespace) -> Config:
    """The layered config of ``--conf`` and ``--set``; a bad one exits 2 naming the key."""
    try:
        return load_config(ns.conf, ns.set)
    except ShopformerError as exc:
        p.error(str(exc))


def parse(p: argparse.ArgumentParser, job: str, argv: Sequence[str] | None = None) -> JobArgs:
    """Parse argv, load layered config, configure logging; a bad config exits 2 naming the key."""
    ns = p.parse_args(argv)
    configure_logging()
    cfg = load(p, ns)
    end = ns.end_date or ns.run_date
    if end < ns.run_date:
        p.error(f"--end-date {end} is before --run-date {ns.run_date}")
    span = f"{ns.run_date}" if end == ns.run_date else f"{ns.run_date}..{end}"
    run_id = ns.run_id or f"{job}:{span}"
    _run_id[0] = run_id  # every log record from here on carries it
    settings = redact_settings(cfg.settings.resolved())
    log.info("%s settings (%s): %s", job, cfg.origin, json.dumps(settings, default=str))
    return JobArgs(cfg=cfg, run_date=ns.run_date, end_date=end, run_id=run_id, ns=ns)


_run_id = ["-"]  # the run id of the job this process runs now ("-" before its arguments are parsed)


def _with_run_id(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        record.run_id = _run_id[0]
        return record

    make.carries_run_id = True  # type: ignore[attr-defined]
    return make


def configure_logging() -> None:
    """INFO logs on stderr with time, level, logger and the run id (``[ingest_events:2024-01-05]``), so a
    line grepped out of an Airflow task log or a shared file still says which run wrote it. Every record
    gets ``run_id`` (any handler may format it) and has its credentials masked (``redact``); the handler
    is a no-op when logging is already set up."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "carries_run_id", False):
        logging.setLogRecordFactory(_with_run_id(redacting(factory)))
    fmt = "%(asctime)s %(levelname)s %(name)s [%(run_id)s]: %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt)


def entry(module: str, argv: Sequence[str] | None = None) -> int:
    """What ``jobs/<job>.py`` runs: check ``--conf``/``--set`` first (importing only the config code, so a
    bad value exits 2 in about a second, before torch, MLflow or Spark load), then the job's ``main``."""
    p = config_parser(module, add_help=False)  # --help reaches the job's own parser
    ns, _ = p.parse_known_args(argv)
    load(p, ns)  # exits 2 naming the key
    return int(importlib.import_module(module).main(None if argv is None else list(argv)))


def run_main(
    job: str,
    p: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    body: Callable[[JobArgs], None],
    *,
    tag: str | None = None,
) -> int:
    """A job's ``main(argv) -> int``: parse, run ``body``, and map a failure to its exit code
    (``errors.classify``; the table is in docs/operations.md). A failing job logs one clear line (a
    traceback too when the failure was unexpected) and still prints its one result line,
    ``TAG {"error": ..., "exit_code": ...}``, unless ``body`` printed it already (score quality)."""
    tag = tag or job.upper()
    try:
        args = parse(p, job, argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already explained on stderr
        code = exc.code if isinstance(exc.code, int) else errors.USAGE
        if code:
            emit(tag, {"error": "usage: see stderr", "exit_code": code})
        return code
    commits, emitted = errors.commits(), _emitted[0]
    try:
        body(args)
    except Exception as exc:
        failure = errors.classify(exc, committed=errors.commits() - commits)
        if failure.expected:
            log.error("%s", failure.message)
        else:
            log.exception("%s", failure.message)
        if _emitted[0] == emitted:
            summary = {"error": failure.message, "exit_code": failure.exit_code, "run_id": args.run_id}
            emit(tag, summary | {"committed": errors.commits() - commits})
        return failure.exit_code
    return errors.DONE


_emitted = [0]  # result lines printed by this process (run_main prints an error line only if none was)


def emit(tag: str, summary: dict[str, object]) -> None:
    """Write a job's result as one ``TAG {json}`` line on stdout, apart from the logs on stderr.

    Operators read it at the end of a run and Airflow can push it to XCom; it is the only thing a job
    writes to stdout, so Spark's progress bars on stderr never garble it. Credentials in it are masked.
    """
    sys.stdout.write(redact(f"{tag} {json.dumps(summary, sort_keys=True, default=str)}") + "\n")
    sys.stdout.flush()
    _emitted[0] += 1
