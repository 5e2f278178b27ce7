"""Orchestrates one sessionize run (the actions around the pure transforms in ``sessionize``).

Range recomputed: from the earliest event date touched by the run's ingests (late events included),
``M``, to the run's end date ``E``. Events just before ``M`` seed the windows (carry-in), so the result
equals a full recompute over all of bronze, as long as runs happen in date order (Airflow
``depends_on_past``). Only events ingested on or before ``E`` count, so a rerun of ``E`` gives the same
table whatever landed later.

Whole nights for readers: a run's four commits are (1) its dates ``[S, E]`` removed from
silver.published_dates (``S`` <= ``M``: the start date of the earliest session the run continues),
(2) silver.events, (3) the silver.sessions MERGE, (4) ``[S, E]`` published again.
The silver views (``scoring.sql_views``) show published dates only, so a run killed after (1) hides its
dates instead of showing events without their sessions; its rerun publishes them.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import cli, tables
from shopformer.config import Config
from shopformer.schemas import BRONZE_EVENTS, SILVER_EVENTS, SILVER_PUBLISHED_DATES, SILVER_SESSIONS
from shopformer.sessions.transforms import CARRY_IN_COLUMNS, assign_sessions, summarize_sessions
from shopformer.spark import build_spark

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionizeReport:
    """What a run recomputed and wrote; logged as the job's summary."""

    first_date: str
    end_date: str
    events: int
    sessions: int
    sessions_crossing_midnight: int


def _d(day: dt.date) -> str:
    return f"DATE'{day.isoformat()}'"


def _first_dirty_date(bronze: DataFrame, start: dt.date, end: dt.date, full: bool) -> dt.date | None:
    """Earliest event date among rows ingested in [start, end] (all of bronze when ``full``)."""
    rows = bronze if full else bronze.where(F.col("ingest_date").between(start, end))
    first = rows.where(F.col("ingest_date") <= end).agg(F.min("event_date")).first()
    return first[0] if first else None


def _carry_in(silver: DataFrame, first: dt.date, gap_minutes: int) -> DataFrame:
    """Sessionized events within one gap before ``first``: all the context a window needs."""
    begin = dt.datetime.combine(first, dt.time()) - dt.timedelta(minutes=gap_minutes)
    return silver.where(
        F.col("event_date").between(begin.date(), first - dt.timedelta(days=1))
        & (F.col("event_time") >= F.lit(begin))
    ).select(*CARRY_IN_COLUMNS)


def _forward_end(silver: DataFrame, end: dt.date) -> dt.date:
    """``end``, or the newest event date silver already holds when that is later: rerunning an old date
    alone would drop the late events ingested after it (they count only for later runs), so the rerun
    recomputes every date up to the newest sessionized one instead (docs/sessionization.md)."""
    newest = silver.agg(F.max("event_date")).first()
    if newest is None or newest[0] is None or newest[0] <= end:
        return end
    log.warning("silver.events holds dates up to %s: recomputing forward from %s to it", newest[0], end)
    return newest[0]


def run(
    spark: SparkSession, cfg: Config, *, start: dt.date, end: dt.date, run_id: str, full: bool = False
) -> SessionizeReport:
    """Recompute silver.events for [M, end] and MERGE the sessions they touch into silver.sessions; when
    silver already holds later dates (an old date rerun), recompute forward to the newest of them."""
    gap = cfg.settings.sessionize.gap_minutes
    bronze = tables.read(spark, cfg.table("bronze_events"), BRONZE_EVENTS)
    silver_path = cfg.table("silver_events")
    silver = tables.read(spark, silver_path, SILVER_EVENTS)
    end = _forward_end(silver, end)
    first = _first_dirty_date(bronze, start, end, full)
    first = start if first is None else min(first, start)
    events = bronze.where(F.col("event_date").between(first, end) & (F.col("ingest_date") <= end))
    carry = _carry_in(silver, first, gap) if not full else silver.limit(0).select(*CARRY_IN_COLUMNS)
    annotated = assign_sessions(events, carry_in=carry, gap_minutes=gap, run_id=run_id)
    hidden = _hidden_from(carry, first)
    _unpublish(spark, cfg, silver, first=hidden, end=end, run_id=run_id)
    tables.replace_where(
        annotated,
        silver_path,
        predicate=_range(first, end),
        schema=SILVER_EVENTS,
        partition_by=["event_date"],
        run_id=run_id,
    )
    report = _merge_sessions(spark, cfg, first=first, end=end, run_id=run_id)
    _publish(spark, cfg, first=hidden, end=end, run_id=run_id)
    return report


def _hidden_from(carry: DataFrame, first: dt.date) -> dt.date:
    """The first date the run hides from readers: ``first``, or the start date of the earliest session
    the carry-in continues (a session crossing midnight into ``first`` is rewritten whole, so the events
    of its first day must be hidden with it)."""
    start = carry.agg(F.min(F.to_date("session_start"))).first()
    return min(first, start[0]) if start and start[0] else first


def _range(first: dt.date, end: dt.date) -> str:
    return f"event_date >= {_d(first)} AND event_date <= {_d(end)}"


def _unpublish(
    spark: SparkSession, cfg: Config, silver: DataFrame, *, first: dt.date, end: dt.date, run_id: str
) -> None:
    """The run's first commit: ``[first, end]`` leaves silver.published_dates, so the silver views hide
    those dates until ``_publish``. A silver written before the table existed gets it now, with every
    date outside the range published as it is (the first run cannot tell a half night it did not see)."""
    path = cfg.table("silver_published_dates")
    if tables.exists(spark, path):
        rows, predicate = spark.createDataFrame([], SILVER_PUBLISHED_DATES), _range(first, end)
    else:
        predicate = f"NOT ({_range(first, end)})"
        rows = (
            silver.where(predicate)
            .groupBy("event_date")
            .agg(F.max("sessionize_run_id").alias("sessionize_run_id"))
            .withColumn("published_at", F.lit(tables.run_time(end)))
        )
    tables.replace_where(
        rows, path, predicate=predicate, schema=SILVER_PUBLISHED_DATES, partition_by=[], run_id=run_id
    )


def _publish(spark: SparkSession, cfg: Config, *, first: dt.date, end: dt.date, run_id: str) -> None:
    """The run's last commit: every date of ``[first, end]`` (days without events too) is published."""
    days = spark.range(1).select(F.explode(F.sequence(F.lit(first), F.lit(end))).alias("event_date"))
    rows = days.select(
        "event_date",
        F.lit(run_id).alias("sessionize_run_id"),
        F.lit(tables.run_time(end)).alias("published_at"),
    )
    tables.replace_where(
        rows,
        cfg.table("silver_published_dates"),
        predicate=_range(first, end),
        schema=SILVER_PUBLISHED_DATES,
        partition_by=[],
        run_id=run_id,
    )


def _merge_sessions(
    spark: SparkSession, cfg: Config, *, first: dt.date, end: dt.date, run_id: str
) -> SessionizeReport:
    """Re-summarize every session with an event in [first, end] from all its events, then MERGE."""
    silver = tables.read(spark, cfg.table("silver_events"))
    recomputed = silver.where(F.col("event_date").between(first, end))
    stats = recomputed.agg(
        F.min(F.to_date("session_start")).alias("s_min"),
        F.count(F.lit(1)).alias("events"),
    ).first()
    s_min = stats["s_min"] or first
    touched = recomputed.select("session_id").distinct()
    events = silver.where(F.col("event_date").between(s_min, end)).join(touched, "session_id", "left_semi")
    sessions = summarize_sessions(events, run_id=run_id)
    tables.merge_upsert(
        sessions,
        cfg.table("silver_sessions"),
        keys=["session_id"],
        schema=SILVER_SESSIONS,
        partition_by=["session_date"],
        target_filter=f"t.session_date >= {_d(s_min)}",
        delete_unmatched_where=f"t.session_date >= {_d(first)} AND t.session_date <= {_d(end)}",
        run_id=run_id,
    )
    written = tables.read(spark, cfg.table("silver_sessions")).where(
        F.col("session_date").between(first, end)
    )
    summary = written.agg(
        F.count(F.lit(1)).alias("n"),
        F.count(F.when(F.to_date("session_end") > F.col("session_date"), 1)).alias("cross"),
    ).first()
    report = SessionizeReport(
        str(first), str(end), int(stats["events"]), int(summary["n"]), int(summary["cross"])
    )
    log.info("sessionize summary %s", asdict(report))
    return report


ABOUT = """\
Sessionize bronze.events into silver.events (events + session_id) and silver.sessions.

Nightly: recomputes from the earliest event date the run's ingest touched (late events for yesterday
included) to --run-date/--end-date, seeded with the sessionized events just before, so the result equals
a full recompute. --full recomputes everything ingested up to --end-date.
"""


def _sessionize(args: cli.JobArgs) -> None:
    spark = build_spark(args.cfg, "sessionize")
    report = run(
        spark, args.cfg, start=args.run_date, end=args.end_date, run_id=args.run_id, full=args.ns.full
    )
    cli.emit("SESSIONIZE", asdict(report))


def main(argv: list[str] | None = None) -> int:
    """``jobs/sessionize.py``: bronze -> silver for the landing dates of a run."""
    p = cli.parser(ABOUT)
    p.add_argument("--full", action="store_true", help="recompute every session from all of bronze")
    return cli.run_main("sessionize", p, argv, _sessionize)
