"""Orchestrates one ingest run: the actions (read, stage, count, write, reconcile) around ``ingest``.

``ingest.manifest`` says which files to read: each landing date's folder (``ingest_date`` = that date) and
files new in recent earlier folders. Every row is classified in one pass over the raw files and staged as
Parquet (rejects with their raw record, valid rows without); duplicates are resolved by a spillable
aggregation over the staged valid rows and staged too; both are counted, written as three atomic
replaceWhere commits over (source, ingest_date in the run's dates): the rejects, the manifest of the files
read, and ``bronze.events`` last (a reader of bronze.events never sees a night without its rejects), and
re-counted from the tables: read = accepted + duplicates + rejected, or ``ReconciliationError``. No full
copy is held in memory (``persist``), so the driver's memory does not grow with the batch.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace

from py4j.protocol import Py4JJavaError
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import cli, errors, tables
from shopformer.config import Config
from shopformer.errors import BadInputError, ConfigError, ReconciliationError, SourceError
from shopformer.ingest import manifest, sources
from shopformer.ingest import transforms as ingest
from shopformer.ingest.layouts import first_line
from shopformer.ingest.raw import read_dated
from shopformer.ingest.sources import SourceMapping
from shopformer.ingest.staging import Staging, staging_path
from shopformer.schemas import BRONZE_EVENTS, BRONZE_INGESTED_FILES, BRONZE_REJECTED
from shopformer.spark import build_spark

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestReport:
    """The reconciled accounting of a run (counts as re-read from the written tables)."""

    source: str
    run_id: str
    start: str
    end: str
    read: int
    accepted: int
    duplicates: int
    rejected: int
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    bad_input: list[str] = field(default_factory=list)  # landing dates breaching ingest.max_reject_share
    late_files: list[str] = field(default_factory=list)  # files new in earlier folders, read by this run
    changed_files: list[str] = field(
        default_factory=list
    )  # files whose size or time differ from the manifest

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _dates(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def landing_paths(
    cfg: Config, m: SourceMapping, start: dt.date, end: dt.date, input_path: str | None = None
) -> list[tuple[dt.date, str]]:
    """(landing date, folder) per date; ``input_path`` replaces the mapping's path for a single date."""
    if input_path is not None:
        if start != end:
            raise ConfigError("--input names one folder, so it needs a single --run-date (no --end-date)")
        return [(start, input_path)]
    return [(d, sources.resolve_path(cfg, m.path, f"sources.{m.name}.path", d)) for d in _dates(start, end)]


def read_batch(spark: SparkSession, cfg: Config, m: SourceMapping, reads: list[manifest.Read]) -> DataFrame:
    """Raw rows of every file the run reads, each layout checked against the mapping before anything runs;
    the files of all its landing dates are read by layout (``raw.read_dated``), the side file joined once."""
    lookup = sources.read_lookup(spark, cfg, m)
    key = m.lookup.key if m.lookup else None
    batches = []
    for r in reads:
        if not r.files:
            log.warning(
                "%s: every file there was read by another landing date's run: nothing to read", r.where
            )
            continue
        batches.append((r.ingest_date, [f.path for f in r.files]))
    if not batches:
        raise SourceError(f"nothing to read at {', '.join(r.where for r in reads)}: see the log")
    extra = lookup.columns if lookup is not None else ()
    raw = read_dated(spark, m, batches, lookup_columns=extra)
    raw = raw.transform(ingest.join_lookup, lookup=lookup, key=key)
    sources.check_expressions(raw, m, sources.where_of([r.where for r in reads if r.files]))
    return raw


def candidates(
    raw: DataFrame, m: SourceMapping, *, max_future_hours: int, max_age_days: int = 3650
) -> DataFrame:
    """Mapped, parsed, classified rows with their event ids (before duplicate resolution)."""
    return (
        raw.transform(ingest.map_fields, source=m.name, fields=m.fields, exclude=m.exclude)
        .transform(
            ingest.parse_values, time_formats=m.time_format, time_zone=m.time_zone, event_types=m.event_types
        )
        .transform(ingest.classify, max_future_hours=max_future_hours, max_age_days=max_age_days)
        .transform(ingest.assign_event_ids)
    )


def _existing_ids(
    spark: SparkSession, cfg: Config, source: str, start: dt.date, end: dt.date, staged: DataFrame
) -> DataFrame:
    """Ids already in bronze for this source from other landing dates, in the event dates the batch's
    valid rows have: a bounded lookup (Delta prunes bronze.events to those ``event_date`` partitions)."""
    bronze = tables.read(spark, cfg.table("bronze_events"), BRONZE_EVENTS)
    valid = staged.where(F.col("reason").isNull()).select("event_date").distinct()
    dates = sorted(r[0] for r in valid.collect())
    if not dates:
        return bronze.limit(0).select("event_id")
    return bronze.where(
        (F.col("source") == source)
        & F.col("event_date").isin(dates)
        & ~F.col("ingest_date").between(start, end)
    ).select("event_id")


def _tally(rows: Counts) -> tuple[int, int, dict[str, int]]:
    by = {d: sum(n for disp, _, n, _ in rows if disp == d) for d in (ingest.ACCEPTED, ingest.DUPLICATE)}
    reasons: dict[str, int] = {}
    for disp, reason, n, _ in rows:
        if disp == ingest.REJECTED:
            reasons[str(reason)] = reasons.get(str(reason), 0) + n
    return by[ingest.ACCEPTED], by[ingest.DUPLICATE], dict(sorted(reasons.items()))


Counts = list[tuple[str, str | None, int, dt.date]]  # (disposition, reason, rows, landing date)


def bad_days(rows: Counts, days: list[dt.date], *, max_share: float, filters: Collection[str]) -> list[str]:
    """One line per landing date that accepted no row, or whose share of defect rejects (every reason but
    the mapping's own ``exclude`` filters) among the rows read passes ``max_share``."""
    found = []
    for day in days:
        mine = [(disp, reason, n) for disp, reason, n, d in rows if d == day]
        read = sum(n for _, _, n in mine)
        accepted = sum(n for disp, _, n in mine if disp == ingest.ACCEPTED)
        defects: dict[str, int] = {}
        for disp, reason, n in mine:
            if disp == ingest.REJECTED and reason not in filters:
                defects[str(reason)] = defects.get(str(reason), 0) + n
        share = sum(defects.values()) / read if read else 1.0
        top = ", ".join(f"{r} {n}" for r, n in sorted(defects.items(), key=lambda kv: -kv[1])[:3])
        if accepted == 0:
            found.append(f"{day}: accepted no row of {read} read ({top or 'nothing rejected'})")
        elif share > max_share:
            found.append(f"{day}: rejected {share:.1%} of {read} rows > ingest.max_reject_share ({top})")
    return found


def run(
    spark: SparkSession,
    cfg: Config,
    *,
    source: str,
    start: dt.date,
    end: dt.date,
    run_id: str,
    input_path: str | None = None,
) -> IngestReport:
    """Ingest the landing dates [start, end] of ``source``; returns the reconciled report."""
    m = sources.load_mapping(cfg, source)
    limits = cfg.settings.ingest
    paths = landing_paths(cfg, m, start, end, input_path)
    files = manifest.plan(
        spark, cfg, m, paths, late_file_days=limits.late_file_days, lookback=input_path is None
    )
    raw = read_batch(spark, cfg, m, files.reads)
    cand = candidates(raw, m, max_future_hours=limits.max_future_hours, max_age_days=limits.max_age_days)
    stage = Staging(spark, staging_path(cfg, m.name, run_id))
    try:
        where = [r.where for r in files.reads]
        staged, resolved, counts = _classify(spark, cfg, stage, cand, m.name, start, end, where)
        landed = manifest.manifest_rows(spark, m.name, files.reads, run_id)
        report = _write_and_reconcile(
            spark, cfg, (staged, resolved, landed), counts, m.name, start, end, run_id
        )
        bad = bad_days(counts, [d for d, _ in paths], max_share=limits.max_reject_share, filters=m.exclude)
        return replace(report, bad_input=bad, late_files=files.late_files, changed_files=files.changed_files)
    finally:
        stage.clean()


def _classify(
    spark: SparkSession,
    cfg: Config,
    stage: Staging,
    cand: DataFrame,
    source: str,
    start: dt.date,
    end: dt.date,
    where: list[str],
) -> tuple[DataFrame, DataFrame, Counts]:
    """Stage every row once (the one pass over the raw files), then the resolved valid rows; count both.

    Both results are read more than once (rejects, resolution, counts; counts, bronze.events), so each is
    staged as Parquet rather than persisted: a recompute would repeat the parse or the shuffle."""
    try:  # the first action reads every file: a bad file surfaces here, before any write
        staged = stage.save(cand.transform(ingest.staged_rows), "classified")
    except (Py4JJavaError, CapturedException) as exc:
        if (resource := errors.resource_failure(exc)) is not None:  # out of memory: not a bad file
            raise resource from exc
        at = ", ".join(where)
        raise SourceError(f"failed reading the raw files at {at}: {first_line(exc)}") from exc
    try:
        existing = _existing_ids(spark, cfg, source, start, end, staged)
        resolved = stage.save(ingest.resolve_duplicates(staged, existing_ids=existing), "resolved")
        rows = ingest.disposition_counts(ingest.accounting(staged, resolved)).collect()
        copies = int(ingest.copies_total(resolved).first()[0])
    except (Py4JJavaError, CapturedException) as exc:
        if (resource := errors.resource_failure(exc)) is not None:
            raise resource from exc
        raise
    counts = [(r[0], r[1], int(r[2]), r[3]) for r in rows]
    valid = sum(n for disp, _, n, _ in counts if disp != ingest.REJECTED)
    if copies != valid:
        raise ReconciliationError(f"{source} {start}..{end}: {valid} valid rows read, {copies} resolved")
    return staged, resolved, counts


def _predicate(source: str, start: dt.date, end: dt.date) -> str:
    # Not BETWEEN: Delta's replaceWhere check cannot resolve Spark 4's BETWEEN function (INTERNAL_ERROR).
    return f"source = '{source}' AND ingest_date >= DATE'{start}' AND ingest_date <= DATE'{end}'"


def _write_and_reconcile(
    spark: SparkSession,
    cfg: Config,
    frames: tuple[DataFrame, DataFrame, DataFrame],
    counts: Counts,
    source: str,
    start: dt.date,
    end: dt.date,
    run_id: str,
) -> IngestReport:
    staged, resolved, landed = frames
    predicate = _predicate(source, start, end)
    events_path, rejected_path = cfg.table("bronze_events"), cfg.table("bronze_events_rejected")
    # bronze.events last: readers (sessionize) see a landing date whole, its rejects already written; the
    # manifest before it, so a kill between them leaves no file that bronze holds but the manifest lacks
    for df, path, schema, parts in (
        (ingest.rejected_records(staged, run_id=run_id), rejected_path, BRONZE_REJECTED, ["ingest_date"]),
        (landed, cfg.table("bronze_ingested_files"), BRONZE_INGESTED_FILES, []),
        (ingest.accepted_events(resolved, run_id=run_id), events_path, BRONZE_EVENTS, ["event_date"]),
    ):
        tables.replace_where(df, path, predicate=predicate, schema=schema, partition_by=parts, run_id=run_id)
    accepted, duplicates, reasons = _tally(counts)
    written_accepted = tables.read(spark, events_path).where(predicate).count()
    rejected = tables.read(spark, rejected_path).where(predicate)
    written_reasons = {r[0]: int(r[1]) for r in rejected.groupBy("reason").count().collect()}
    read = sum(n for _, _, n, _ in counts)
    if written_accepted != accepted or dict(sorted(written_reasons.items())) != reasons:
        raise ReconciliationError(
            f"{source} {start}..{end}: classified accepted={accepted} rejected={reasons}, "
            f"but the tables hold accepted={written_accepted} rejected={written_reasons}"
        )
    if accepted + duplicates + sum(reasons.values()) != read:
        raise ReconciliationError(f"{source} {start}..{end}: read={read} but dispositions do not add up")
    report = IngestReport(
        source, run_id, str(start), str(end), read, accepted, duplicates, sum(reasons.values()), reasons
    )
    log.info("ingest reconciled: %s", report.as_dict())
    return report


ABOUT = """\
Ingest raw event files for a run date (or range) into bronze.events / bronze.events_rejected.

Reads each landing date's folder through the source mapping ``sources.<--source or ingest.source>``,
rejects bad rows with a reason code, collapses duplicates, writes both tables atomically per
(source, landing date) and prints the reconciled counts as one ``INGEST {json}`` line on stdout.
"""


def _ingest(args: cli.JobArgs) -> None:
    source = args.ns.source or args.cfg.settings.ingest.source
    spark = build_spark(args.cfg, "ingest_events")
    report = run(
        spark,
        args.cfg,
        source=source,
        start=args.run_date,
        end=args.end_date,
        run_id=args.run_id,
        input_path=args.ns.input,
    )
    cli.emit("INGEST", report.as_dict())
    if report.bad_input:  # written, rejects included: now fail loudly (exit 4)
        raise BadInputError(f"{source} landing dates with bad input: {'; '.join(report.bad_input)}")


def main(argv: list[str] | None = None) -> int:
    """``jobs/ingest_events.py``: landing files of a date (or range) -> bronze."""
    p = cli.parser(ABOUT)
    p.add_argument("--source", help="source mapping name in conf `sources:` (default: ingest.source)")
    p.add_argument("--input", help="folder or file to read instead of the mapping's path (single date)")
    return cli.run_main("ingest_events", p, argv, _ingest, tag="INGEST")
