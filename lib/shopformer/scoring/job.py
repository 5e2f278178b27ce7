"""Orchestrates one nightly scoring run: snapshots of the run date + registered model -> scores.* tables.

Everything that can fail on bad input is checked before the first write: the snapshots of the date exist,
the model version (or alias) loads, the snapshots were built with the model's vocabulary and fit its
inputs, and that vocabulary still hashes to the fingerprint the model recorded. The model is scored once
(persisted) and written to three tables, each one atomic Delta commit that replaces the run date's
partition, so a rerun of the date replaces it exactly. The last commit publishes the night in
scores.published_nights (verdict ``pending`` until score quality judges it).
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import cli, registry, tables
from shopformer.config import Config
from shopformer.errors import ShopformerError
from shopformer.features import price_sensitivity
from shopformer.features.job import as_of_dates
from shopformer.features.vocab import check_unchanged, first_frequent_id
from shopformer.progress import Progress
from shopformer.schemas import (
    GOLD_VOCABULARIES,
    SCORES_USER_EMBEDDINGS,
    SCORES_USER_NEXT_ITEMS,
    SCORES_USER_SCORES,
    SILVER_EVENTS,
)
from shopformer.scoring import publish
from shopformer.scoring import transforms as scoring
from shopformer.spark import build_spark

log = logging.getLogger(__name__)
ARROW_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"
ROWS_PER_TASK = 20_000  # snapshot rows per scoring task: ~20-60 s of model time per core


def scoring_partitions(spark: SparkSession, rows: int) -> int | None:
    """Tasks for ``rows`` snapshot rows: at least one per core once the night exceeds one task's rows,
    more as it grows; None (read as is, no shuffle) for a night of one task's rows, where more Python
    workers would each load the model for a few seconds of work."""
    if rows <= ROWS_PER_TASK:
        return None
    return max(spark.sparkContext.defaultParallelism, math.ceil(rows / ROWS_PER_TASK))


class ScoringInputError(ShopformerError):
    """The snapshots to score are missing, empty for the date, or do not fit the model."""


class ModelLoadError(ShopformerError):
    """The registry has no such model / version / alias, or its checkpoint does not load."""


@dataclass(frozen=True)
class ScoreReport:
    as_of_date: str
    model_name: str
    model_version: str
    snapshots: int
    users_scored: int
    elasticity_null: int
    segments: dict[str, int]
    embeddings: int
    next_item_rows: int


@dataclass(frozen=True)
class RegisteredModel:
    """A registry version resolved and loaded on the driver (to check it before anything runs)."""

    name: str
    version: str
    path: str
    config: Any
    extra: dict[str, Any]


def _snapshots(spark: SparkSession, cfg: Config, run_date: dt.date) -> tuple[DataFrame, Any]:
    """The run date's snapshot rows and one row of stats (count, vocab versions, longest sequence)."""
    path = cfg.table("gold_user_snapshots")
    hint = f"run jobs/build_snapshots.py --run-date {run_date} first"
    if not tables.exists(spark, path):
        raise ScoringInputError(f"no gold.user_snapshots at {path}: {hint}")
    rows = tables.read(spark, path).where(F.col("as_of_date") == F.lit(run_date))
    stats = rows.agg(
        F.count(F.lit(1)).alias("n"),
        F.sort_array(F.collect_set("vocab_version")).alias("vocab"),
        F.max(F.size("seq_item")).alias("max_len"),
        F.sort_array(F.collect_set("source")).alias("sources"),
        F.collect_set(F.when(scoring.has_views(F.col("seq_event_type")), F.col("source"))).alias("viewed"),
    ).first()
    if stats is None or stats["n"] == 0:
        raise ScoringInputError(
            f"gold.user_snapshots at {path} has no rows for as_of_date {run_date}: {hint}"
        )
    return rows, stats


def load_registered(cfg: Config, version_or_alias: str, dst: str) -> RegisteredModel:
    """Resolve ``train.registered_model`` at a version or alias and load it; ModelLoadError otherwise."""
    from shopformer.model.network import load_checkpoint

    name, uri = cfg.settings.train.registered_model, cfg.settings.paths.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        version, path = registry.model_checkpoint(name, version_or_alias, dst)
        _, config, extra = load_checkpoint(path)
    except Exception as exc:  # MLflow, I/O and torch raise many types; all mean "cannot use this model"
        raise ModelLoadError(
            f"cannot load model {name!r} at {version_or_alias!r} (config key 'scoring.model_version') "
            f"from the registry at {uri}: {type(exc).__name__}: {exc}"
        ) from exc
    missing = [k for k in ("vocab", "calibrators") if k not in extra]
    if missing:
        raise ModelLoadError(f"model {name!r} v{version} lacks {missing} in its checkpoint: retrain it")
    return RegisteredModel(name, version, path, config, dict(extra))


def _check_fits(m: RegisteredModel, snaps: DataFrame, stats: Any) -> None:
    """Ids mean what the model learnt only with its own vocabulary; inputs must match its config."""
    wanted = str(m.extra["vocab"]["version"])
    if list(stats["vocab"]) != [wanted]:
        raise ScoringInputError(
            f"snapshots use vocabulary {list(stats['vocab'])}, model {m.name} v{m.version} was trained with "
            f"{wanted!r}: rebuild the snapshots with --set snapshots.vocab_version={wanted}"
        )
    missing = [c for c in m.config.aggregate_names if c not in snaps.columns]
    if missing or (stats["max_len"] or 0) > m.config.max_len:
        raise ScoringInputError(
            f"snapshots do not fit model {m.name} v{m.version}: missing aggregates {missing}, sequences of "
            f"{stats['max_len']} events vs max_len {m.config.max_len} (check snapshots.windows_days/max_len)"
        )


def check_vocabulary(spark: SparkSession, cfg: Config, m: RegisteredModel) -> None:
    """The model's vocabulary version must still hold the rows it was trained on (the content hash its
    registry version recorded), not just carry the same name: VocabularyChangedError (exit 2) otherwise."""
    version = str(m.extra["vocab"]["version"])
    recorded = registry.recorded_fingerprint(registry.model_version(m.name, m.version))
    rows = tables.read(spark, cfg.table("gold_vocabularies"), GOLD_VOCABULARIES)
    check_unchanged(
        rows.where(F.col("vocab_version") == version),
        version=version,
        recorded=recorded,
        model=f"model {m.name} v{m.version}",
    )


_SHIP_DIR: list[Path] = []


def _ship_dir() -> Path:
    """This process's own folder for shipped checkpoints: ``mkdtemp`` makes it fresh and readable by its
    owner only, so no other user of the host can place a file where the run will load a model from
    (a fixed shared ``/tmp`` path could be). Removed when the process exits."""
    if not _SHIP_DIR:
        folder = Path(tempfile.mkdtemp(prefix="shopformer-scoring-"))
        atexit.register(shutil.rmtree, folder, True)
        _SHIP_DIR.append(folder)
    return _SHIP_DIR[0]


def ship(spark: SparkSession, checkpoint: str) -> str:
    """Copy the checkpoint to a content-named file and ``addFile`` it; returns the name for SparkFiles.

    Naming by content lets a session ship several models (addFile refuses a name twice with new paths);
    executors check the content against the name before loading (``scoring.verify_shipped``). The copy
    is written under a temporary name and renamed: a crash never leaves half a model under the real one.
    """
    content = Path(checkpoint).read_bytes()
    target = _ship_dir() / scoring.shipped_name(content)
    if not target.exists():
        partial = target.with_suffix(".partial")
        partial.write_bytes(content)
        os.replace(partial, target)
    spark.sparkContext.addFile(str(target))
    return target.name


@contextmanager
def _arrow_batch(spark: SparkSession, rows: int) -> Iterator[None]:
    """Rows per Arrow batch into the UDF for this run only (restores the session's previous value)."""
    before = spark.conf.get(ARROW_BATCH, None)
    spark.conf.set(ARROW_BATCH, str(rows))
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(ARROW_BATCH)
        else:
            spark.conf.set(ARROW_BATCH, before)


def _purchase_elasticity(
    cfg: Config, spark: SparkSession, run_date: dt.date, buy_only: Sequence[str] | None
) -> DataFrame | None:
    """Purchase-based elasticity of the night's sources where nobody has a view (``buy_only``; None: every
    source). No such source: None, and silver's history is not read (a clickstream night skips the scan)."""
    if buy_only is not None and not buy_only:
        return None
    silver = tables.read(spark, cfg.table("silver_events"), SILVER_EVENTS)
    if buy_only is not None:
        silver = silver.where(F.col("source").isin(list(buy_only)))
    s = price_sensitivity.settings(cfg)
    return price_sensitivity.from_events(silver, as_of_dates=[run_date], s=s)


def _write(
    cfg: Config,
    scored: DataFrame,
    run_date: dt.date,
    lineage: scoring.Lineage,
    buy_only: Sequence[str] | None = None,
) -> None:
    at = tables.run_time(run_date)
    bought = _purchase_elasticity(cfg, scored.sparkSession, run_date, buy_only)
    outputs = [
        (
            "scores_user_scores",
            scoring.user_scores(scored, lineage=lineage, scored_at=at, purchases=bought),
            SCORES_USER_SCORES,
        ),
        ("scores_user_embeddings", scoring.user_embeddings(scored, lineage=lineage), SCORES_USER_EMBEDDINGS),
        ("scores_user_next_items", scoring.user_next_items(scored, lineage=lineage), SCORES_USER_NEXT_ITEMS),
    ]
    for table, rows, schema in outputs:
        tables.replace_where(
            rows,
            cfg.table(table),
            predicate=f"as_of_date = DATE'{run_date.isoformat()}'",
            schema=schema,
            partition_by=["as_of_date"],
            run_id=lineage.run_id,
        )


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date, run_id: str) -> ScoreReport:
    """Score the run date's snapshots with the configured model and replace its scores.* partitions."""
    s = cfg.settings.scoring
    snaps, stats = _snapshots(spark, cfg, run_date)
    with tempfile.TemporaryDirectory() as tmp:
        m = load_registered(cfg, s.model_version, tmp)
        _check_fits(m, snaps, stats)
        check_vocabulary(spark, cfg, m)
        shipped = ship(spark, m.path)
    spec = scoring.ScoringSpec(
        checkpoint_file=shipped,
        aggregate_names=tuple(m.config.aggregate_names),
        top_k=s.top_k,
        min_item_id=first_frequent_id(int(m.extra["vocab"]["hash_buckets"])),
        torch_threads=s.torch_threads,
    )
    lineage = scoring.Lineage(m.name, m.version, run_id)
    log.info("scoring %d snapshot rows of %s with %s v%s", stats["n"], run_date, m.name, m.version)
    with _arrow_batch(spark, s.arrow_batch_size):
        tasks = scoring_partitions(spark, int(stats["n"]))
        scored = scoring.score_snapshots(snaps, spec=spec, partitions=tasks).persist()  # one model pass
        try:
            buy_only = sorted(set(stats["sources"]) - set(stats["viewed"]))  # no view: elasticity from buys
            _write(cfg, scored, run_date, lineage, buy_only)
        finally:
            scored.unpersist()
    publish.publish_scored(spark, cfg, run_date=run_date, run_id=run_id)  # last: the night is complete
    return _report(spark, cfg, run_date, m, int(stats["n"]))


def _report(spark: SparkSession, cfg: Config, run_date: dt.date, m: RegisteredModel, n: int) -> ScoreReport:
    """Counts read back from the written partitions."""

    def written(table: str) -> DataFrame:
        return tables.read(spark, cfg.table(table)).where(F.col("as_of_date") == F.lit(run_date))

    seg = written("scores_user_scores").groupBy("price_sensitivity_segment").count().collect()
    counts = {str(r[0]): int(r[1]) for r in seg}
    return ScoreReport(
        as_of_date=run_date.isoformat(),
        model_name=m.name,
        model_version=m.version,
        snapshots=n,
        users_scored=sum(counts.values()),
        elasticity_null=counts.pop("None", 0),
        segments=counts,
        embeddings=written("scores_user_embeddings").count(),
        next_item_rows=written("scores_user_next_items").count(),
    )


ABOUT = """\
Score gold.user_snapshots of --run-date with the registered model into scores.user_scores,
scores.user_embeddings and scores.user_next_items (docs/scoring.md).

The model is ``train.registered_model`` at ``scoring.model_version`` (the ``champion`` alias by default, or a
version number). Each table's --run-date partition is replaced in one atomic commit, then the night is
published in scores.published_nights (pending until evaluate_scores judges it); a missing snapshot
partition or a model that does not load stops the job before anything is written. A backfill
(--end-date) scores the as-of dates --run-date, +``snapshots.every_days``, ... in one Spark session.
"""


def _score(args: cli.JobArgs) -> None:
    dates = as_of_dates(args.run_date, args.end_date, args.cfg.settings.snapshots.every_days)
    spark = build_spark(args.cfg, "score_users")
    progress = Progress("score_users dates", len(dates))
    reports = []
    for d in dates:  # per-date run ids: a backfill writes the same rows as the nightly run of each date
        reports.append(asdict(run(spark, args.cfg, run_date=d, run_id=args.ns.run_id or f"score_users:{d}")))
        progress.advance(rows=int(reports[-1]["users_scored"]))
    if len(reports) == 1:
        cli.emit("SCORES", reports[0])
        return
    total = sum(int(r["users_scored"]) for r in reports)
    cli.emit(
        "SCORES", {"as_of_dates": [r["as_of_date"] for r in reports], "users_scored": total, "runs": reports}
    )


def main(argv: list[str] | None = None) -> int:
    """``jobs/score_users.py``: the champion's scores of a date's snapshots (or of a range's dates)."""
    return cli.run_main("score_users", cli.parser(ABOUT), argv, _score, tag="SCORES")
