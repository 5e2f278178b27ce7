"""scores.published_nights: which scored nights SQL readers see (docs/scoring.md "Published nights").

A night (source, as_of_date) is written to the three score tables in three commits and judged by score
quality in a fourth; a reader in between would see half a night. So the two jobs that complete a night end
with one MERGE into this small table, and the views of ``sql_views`` show only nights in it whose quality
was judged, and only the rows of the run and model version recorded here:

- ``publish_scored`` (last commit of jobs/score_users.py): one row per source of the date, verdict
  ``pending``, naming the scoring run and model version whose rows are now complete in all three tables;
- ``judge`` (last commit of jobs/evaluate_scores.py): the verdict of every published night in the
  evaluated window, ``breached`` when scores.score_quality holds a breached row for it, else ``passed``.

Both MERGE on (source, as_of_date), so a rerun republishes the same row and never adds one.
"""

from __future__ import annotations

import datetime as dt
import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import tables
from shopformer.config import Config
from shopformer.schemas import SCORES_PUBLISHED_NIGHTS, SCORES_SCORE_QUALITY

log = logging.getLogger(__name__)
KEYS = ("source", "as_of_date")
TABLE = "scores_published_nights"


def _merge(cfg: Config, rows: DataFrame, predicate: str, run_id: str) -> None:
    tables.merge_upsert(
        rows,
        cfg.table(TABLE),
        keys=KEYS,
        schema=SCORES_PUBLISHED_NIGHTS,
        partition_by=[],
        target_filter=predicate.replace("as_of_date", "{t}.as_of_date"),
        delete_unmatched_where=None,
        run_id=run_id,
    )


def publish_scored(spark: SparkSession, cfg: Config, *, run_date: dt.date, run_id: str) -> int:
    """Publish the run date's scored nights as ``pending``: one row per source of scores.user_scores for
    the date, read back from the table (so the row names the run and version that are really there).
    Call it after the three score tables are written; returns the rows published."""
    scores = tables.read(spark, cfg.table("scores_user_scores")).where(F.col("as_of_date") == F.lit(run_date))
    nights = scores.groupBy(
        "source", "as_of_date", "model_name", "model_version", F.col("run_id").alias("scoring_run_id")
    ).agg(F.count(F.lit(1)).alias("users"))
    rows = nights.select(
        "*",
        F.lit("pending").alias("quality_verdict"),
        F.lit(None).cast("date").alias("quality_evaluated_on"),
        F.lit(None).cast("string").alias("quality_run_id"),
        F.lit(tables.run_time(run_date)).alias("published_at"),
        F.lit(run_id).alias("run_id"),
    ).persist()
    try:
        n = rows.count()
        dupes = n - rows.select(*KEYS).distinct().count()
        if dupes:  # one replaceWhere per date makes this impossible; refuse rather than publish a mix
            raise RuntimeError(f"scores.user_scores {run_date} holds rows of several runs or models")
        _merge(cfg, rows, f"as_of_date = DATE'{run_date.isoformat()}'", run_id)
    finally:
        rows.unpersist()
    log.info("published %d night(s) of %s as pending (scoring run %s)", n, run_date, run_id)
    return n


def _verdicts(spark: SparkSession, cfg: Config, predicate: str, run_date: dt.date, run_id: str) -> DataFrame:
    """The published nights matching ``predicate`` with the verdict of their scores.score_quality rows."""
    quality = tables.read(spark, cfg.table("scores_score_quality"), SCORES_SCORE_QUALITY).where(predicate)
    breached = quality.groupBy(*KEYS).agg(F.bool_or("breached").alias("breached"))
    judged = ("quality_verdict", "quality_evaluated_on", "quality_run_id", "published_at", "run_id")
    nights = tables.read(spark, cfg.table(TABLE)).where(predicate).drop(*judged)
    verdict = F.when(F.coalesce(F.col("breached"), F.lit(False)), "breached").otherwise("passed")
    return nights.join(breached, list(KEYS), "left").select(
        *nights.columns,
        verdict.alias("quality_verdict"),
        F.lit(run_date).alias("quality_evaluated_on"),
        F.lit(run_id).alias("quality_run_id"),
        F.lit(tables.run_time(run_date)).alias("published_at"),
        F.lit(run_id).alias("run_id"),
    )


def judge(spark: SparkSession, cfg: Config, *, predicate: str, run_date: dt.date, run_id: str) -> int:
    """Set the verdict of every published night matching ``predicate`` (the evaluated window) from the
    rows of scores.score_quality just written: ``breached`` when one of the night's rows is breached, else
    ``passed`` (also when it has no metric yet). Returns the nights judged (0 when none are published)."""
    path = cfg.table(TABLE)
    if not tables.exists(spark, path):
        log.warning("no scores.published_nights at %s: no night to judge (run jobs/score_users.py)", path)
        return 0
    rows = _verdicts(spark, cfg, predicate, run_date, run_id).persist()
    try:
        n = rows.count()
        if n:
            _merge(cfg, rows, predicate, run_id)
    finally:
        rows.unpersist()
    log.info("judged %d published night(s) where %s", n, predicate)
    return n
