"""Orchestrates one snapshot build: as-of dates, vocabulary, the read of silver.events, one atomic write.

A run covers the as-of dates ``--run-date``, ``+every_days``, ... up to ``--end-date`` (nightly: one date).
Only events that can matter are read: all history before the last as-of date plus, for labels, the
horizon after it (never past the label cutoff). Rerunning the same dates replaces those partitions.
A nightly run (one date, no new vocabulary, no label due) goes through gold.user_state instead and reads
only the night's events (``state_job``; docs/snapshots.md "Nightly: the user state").
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import cli, tables
from shopformer.config import Config
from shopformer.errors import ConfigError, ShopformerError, UsageError
from shopformer.features import state_job
from shopformer.features.aggregates import AggregateSettings
from shopformer.features.prices import with_relative_price
from shopformer.features.snapshots import SnapshotSettings, build_snapshots, snapshot_schema
from shopformer.features.vocab import (
    KIND_COLUMNS,
    apply_vocab,
    build_vocab,
    check_unchanged,
    fingerprint,
)
from shopformer.progress import Progress
from shopformer.schemas import GOLD_VOCABULARIES
from shopformer.spark import build_spark

log = logging.getLogger(__name__)


class MissingInputError(ShopformerError):
    """A table the job reads does not exist yet (run the earlier stage first)."""


@dataclass(frozen=True)
class SnapshotReport:
    as_of_dates: list[str]
    vocab_version: str
    label_cutoff: str
    rows: int
    rows_with_propensity_label: int
    rows_with_churn_label: int
    rows_with_price_label: int
    path: str = "full"  # incremental | bootstrap: a nightly run through gold.user_state (state_job.py)
    state_from: str | None = None
    days_replayed: int = 0
    night_events_read: int | None = None


def settings(cfg: Config) -> SnapshotSettings:
    """The transforms' settings from conf ``snapshots`` (typed and checked when the config loaded)."""
    c = cfg.settings.snapshots
    agg = AggregateSettings(
        windows_days=c.windows_days,
        population_days=c.population_days,
        discount_threshold=c.discount_threshold,
        propensity_horizon_days=c.propensity_horizon_days,
        churn_horizon_days=c.churn_horizon_days,
        churn_active_days=c.churn_active_days,
        activity_event_types=c.activity_event_types,
    )
    return SnapshotSettings(
        max_len=c.max_len,
        price_horizon_days=c.price_horizon_days,
        price_conversion_hours=c.price_conversion_hours,
        price_max_views=c.price_max_views,
        aggregates=agg,
    )


def as_of_dates(start: dt.date, end: dt.date, every_days: int) -> list[dt.date]:
    if every_days < 1:
        raise ConfigError(f"config key 'snapshots.every_days' must be >= 1, got {every_days}")
    return [start + dt.timedelta(days=i) for i in range(0, (end - start).days + 1, every_days)]


def _label_cutoff(cfg: Config, silver: DataFrame) -> dt.date:
    """Explicit conf, else the newest event date in silver (days before it are complete: late rows of a
    day land with the next day's files at the latest)."""
    if (value := cfg.settings.snapshots.label_cutoff) is not None:
        return value
    newest = silver.agg(F.max("event_date")).first()
    if newest is None or newest[0] is None:
        raise MissingInputError(f"silver.events at {cfg.table('silver_events')} has no events")
    return newest[0]


def _vocabulary(
    spark: SparkSession, cfg: Config, events: DataFrame, *, build: str | None, run_id: str
) -> DataFrame:
    """The vocabulary version to use: a new one built from ``events`` (when ``build`` names it), the
    configured one, or the newest; fails naming the table when it has none."""
    path = cfg.table("gold_vocabularies")
    if build is not None:
        v = cfg.settings.vocab
        rows = build_vocab(
            events, version=build, min_count=v.min_count, hash_buckets=v.hash_buckets, max_size=v.max_size
        )
        if _already_built(spark, path, build, rows):
            return tables.read(spark, path).where(F.col("vocab_version") == build)
        tables.replace_where(
            rows,
            path,
            predicate=f"vocab_version = '{build}'",
            schema=GOLD_VOCABULARIES,
            partition_by=["vocab_version"],
            run_id=run_id,
        )
        return tables.read(spark, path).where(F.col("vocab_version") == build)
    if not tables.exists(spark, path):
        raise MissingInputError(f"no vocabulary at {path}: run build_snapshots with --build-vocab first")
    wanted = cfg.settings.snapshots.vocab_version
    vocab = tables.read(spark, path)
    champion: tuple[str | None, str] | None = None  # (recorded fingerprint, which model)
    if wanted == "champion":  # nightly: the ids the scoring model understands, whatever trained since
        wanted, recorded, model = _champion_vocabulary(cfg)
        champion = (recorded, model)
    if wanted == "latest":
        newest = vocab.agg(F.max("vocab_version")).first()
        wanted = str(newest[0]) if newest and newest[0] else ""
    chosen = vocab.where(F.col("vocab_version") == wanted)
    if not wanted or chosen.limit(1).count() == 0:
        raise ConfigError(f"config key 'snapshots.vocab_version': no version {wanted!r} in {path}")
    if champion is not None:  # only while the version holds the rows the champion trained on
        check_unchanged(chosen, version=wanted, recorded=champion[0], model=champion[1])
    return chosen


def _already_built(spark: SparkSession, path: str, version: str, rows: DataFrame) -> bool:
    """True when ``version`` exists with exactly ``rows`` (a rerun: nothing to write). A version is
    immutable: models and snapshots name it, so different contents under an existing name are refused."""
    if not tables.exists(spark, path):
        return False
    held = fingerprint(tables.read(spark, path).where(F.col("vocab_version") == version))
    if held == (0, 0):
        return False
    if held == fingerprint(rows):
        log.info("vocabulary %s exists with the same contents: reused, not rewritten", version)
        return True
    raise UsageError(
        f"vocabulary {version} exists with other contents ({held[0]} rows) and versions are immutable "
        "(models and snapshots name it): build a new version (a later --end-date) or drop --build-vocab "
        f"and set snapshots.vocab_version={version}"
    )


def _champion_vocabulary(cfg: Config) -> tuple[str, str | None, str]:
    """The vocabulary version the registry's champion was trained with (its model version tag), the
    fingerprint it recorded (None before fingerprints were) and the champion's name for messages."""
    import mlflow  # only this option needs the registry

    from shopformer import registry

    mlflow.set_tracking_uri(str(cfg.get("paths.mlflow_tracking_uri")))
    name = cfg.settings.train.registered_model
    try:
        version, mv = registry.champion_vocabulary_version(name)
    except registry.RegistryError as exc:
        raise ConfigError(f"config key 'snapshots.vocab_version' is 'champion': {exc}") from exc
    return version, registry.recorded_fingerprint(mv), f"model {name!r} v{mv.version} (champion)"


def _with_ids(events: DataFrame, vocab: DataFrame) -> DataFrame:
    buckets = vocab.select("hash_buckets").distinct().collect()  # one tiny row per version
    if len(buckets) != 1:
        raise ConfigError(f"the vocabulary must be one version with one hash_buckets value, got {buckets}")
    for kind, column in KIND_COLUMNS.items():
        events = events.transform(
            apply_vocab, vocab, kind=kind, column=column, out=f"{kind}_idx", hash_buckets=int(buckets[0][0])
        )
    return events


def _needed_events(
    silver: DataFrame, dates: list[dt.date], s: SnapshotSettings, cutoff: dt.date
) -> DataFrame:
    """History before the last as-of date plus the longest label horizon after it (at most the cutoff)."""
    a = s.aggregates
    horizon = max(a.propensity_horizon_days, a.churn_horizon_days, s.price_label_days)
    until = min(max(dates) + dt.timedelta(days=horizon), cutoff)
    return silver.where(F.col("event_date") < F.lit(max(until, max(dates))))


def _silver(spark: SparkSession, cfg: Config) -> DataFrame:
    path = cfg.table("silver_events")
    if not tables.exists(spark, path):
        raise MissingInputError(f"no silver.events at {path}: run ingest_events and sessionize first")
    return tables.read(spark, path)


def _encode(
    cfg: Config, events: DataFrame, vocab: DataFrame, *, dates: list[dt.date], **kw: Any
) -> DataFrame:
    """The snapshot rows of ``dates`` from ``events`` (``_needed_events``), ids from ``vocab``, unwritten;
    ``kw``: build_snapshots' label_cutoff, vocab_version and run_id."""
    prepared = events.transform(
        with_relative_price, reference_days=cfg.settings.snapshots.reference_price_days
    )
    return build_snapshots(_with_ids(prepared, vocab), as_of_dates=dates, s=settings(cfg), **kw)


def encoded_snapshots(
    spark: SparkSession, cfg: Config, *, dates: list[dt.date], vocab_version: str, run_id: str
) -> DataFrame:
    """Snapshot rows of ``dates`` encoded with the existing vocabulary ``vocab_version``, not written: ids
    are frequency ranks rebuilt with each vocabulary, so the champion gate re-encodes its holdout with the
    champion's own vocabulary (docs/training.md)."""
    silver = _silver(spark, cfg)
    cutoff = _label_cutoff(cfg, silver)
    events = _needed_events(silver, dates, settings(cfg), cutoff)
    vocab = tables.read(spark, cfg.table("gold_vocabularies")).where(F.col("vocab_version") == vocab_version)
    return _encode(
        cfg, events, vocab, dates=dates, label_cutoff=cutoff, vocab_version=vocab_version, run_id=run_id
    )


def run(
    spark: SparkSession, cfg: Config, *, start: dt.date, end: dt.date, run_id: str, build_vocab: bool = False
) -> SnapshotReport:
    """Build and write the snapshots of the as-of dates in [start, end]; returns what was written.

    All dates are one Spark plan and one write (no per-date loop to report from), so progress is a line
    before and one after, with the rows written per second over the whole build; in between, the stage
    watch of ``shopformer.spark`` reports each long stage every minute."""
    s = settings(cfg)
    dates = as_of_dates(start, end, cfg.settings.snapshots.every_days)
    progress = Progress("snapshots as-of dates", len(dates))
    log.info("snapshots of %d as-of dates %s..%s: one Spark plan, one write", len(dates), dates[0], dates[-1])
    silver = _silver(spark, cfg)
    cutoff = _label_cutoff(cfg, silver)
    events = _needed_events(silver, dates, s, cutoff)
    version = f"v{max(dates).isoformat()}" if build_vocab else None
    history = events.where(F.col("event_date") < F.lit(max(dates)))
    vocab = _vocabulary(spark, cfg, history, build=version, run_id=run_id)
    vocab_version = str(vocab.select("vocab_version").first()[0])
    kw: dict[str, Any] = {"label_cutoff": cutoff, "vocab_version": vocab_version, "run_id": run_id}
    if state_job.applies(cfg, dates, build_vocab=build_vocab, label_cutoff=cutoff, s=s):
        rows, night = state_job.nightly(spark, cfg, day=dates[0], s=s, vocab=vocab, encode=_with_ids, **kw)
    else:
        rows, night = _encode(cfg, events, vocab, dates=dates, **kw), state_job.Night("full")
    listed = ", ".join(f"DATE'{d.isoformat()}'" for d in dates)
    out = cfg.table("gold_user_snapshots")
    tables.replace_where(
        rows,
        out,
        predicate=f"as_of_date IN ({listed})",
        schema=snapshot_schema(s.aggregates.windows_days),
        partition_by=["as_of_date"],
        run_id=run_id,
    )
    written = tables.read(spark, out).where(F.col("as_of_date").isin(dates))
    report = _report(written, dates, vocab_version, cutoff, night)
    progress.advance(rows=report.rows, units=len(dates))  # "...: 15/15 in 2m10s, 9,120 rows/s (done)"
    return report


def _report(
    written: DataFrame, dates: list[dt.date], vocab_version: str, cutoff: dt.date, night: state_job.Night
) -> SnapshotReport:
    c = written.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count("label_propensity").alias("p"),
        F.count("label_churn").alias("c"),
        F.count("price_n_views").alias("pr"),
    ).first()
    return SnapshotReport(
        as_of_dates=[d.isoformat() for d in dates],
        vocab_version=vocab_version,
        label_cutoff=cutoff.isoformat(),
        rows=int(c["rows"]),
        rows_with_propensity_label=int(c["p"]),
        rows_with_churn_label=int(c["c"]),
        rows_with_price_label=int(c["pr"]),
        **asdict(night),
    )


ABOUT = """\
Build gold.user_snapshots for one as-of date (nightly) or many (training sets) in one pass.

As-of dates: --run-date, then every ``snapshots.every_days`` up to --end-date. Features use only events
before each as-of date; labels appear where their future window lies before the label cutoff.
--build-vocab first writes a new vocabulary version (``v<last as-of date>``) from the events before the
last as-of date; otherwise ``snapshots.vocab_version`` (default: the newest) is used.
"""


def _build(args: cli.JobArgs) -> None:
    spark = build_spark(args.cfg, "build_snapshots")
    report = run(
        spark,
        args.cfg,
        start=args.run_date,
        end=args.end_date,
        run_id=args.run_id,
        build_vocab=args.ns.build_vocab,
    )
    cli.emit("SNAPSHOTS", asdict(report))


def main(argv: list[str] | None = None) -> int:
    """``jobs/build_snapshots.py``: point-in-time snapshots of a date (or weekly dates of a range)."""
    p = cli.parser(ABOUT)
    p.add_argument("--build-vocab", action="store_true", help="build a new vocabulary version first")
    return cli.run_main("build_snapshots", p, argv, _build, tag="SNAPSHOTS")
