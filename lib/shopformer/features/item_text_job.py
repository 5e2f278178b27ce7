"""Embed item texts from bronze.events into gold.item_embeddings (all-MiniLM-L6-v2, 384-dim, L2-normalized).

Text per item = latest title | category | brand. Only items whose text (or the model) changed since the
last run are encoded and MERGEd in; items are never deleted. Items without any text are counted, not
embedded. Events ingested after --run-date are ignored, so a rerun of a date gives the same table.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import cli, tables
from shopformer.config import Config
from shopformer.errors import SourceError
from shopformer.features.item_text import KEYS, EncoderSettings, changed_items, embed, item_texts
from shopformer.schemas import BRONZE_EVENTS, GOLD_ITEM_EMBEDDINGS
from shopformer.spark import build_spark

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedReport:
    """Counts of one run; ``embedded`` + ``unchanged`` + ``items_without_text`` = ``items_seen``."""

    items_seen: int
    items_without_text: int
    embedded: int
    unchanged: int
    model: str
    dim: int


def _bronze(spark: SparkSession, cfg: Config, run_date: dt.date) -> DataFrame:
    """bronze.events as of the run date (rows ingested later do not count, so a rerun agrees)."""
    path = cfg.table("bronze_events")
    if not tables.exists(spark, path):
        raise SourceError(f"bronze.events not found: no Delta table at {path} (run jobs/ingest_events.py)")
    return tables.read(spark, path, BRONZE_EVENTS).where(F.col("ingest_date") <= F.lit(run_date))


def _sql_list(values: list[str]) -> str:
    return ", ".join("'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in values)


def _write(vectors: DataFrame, cfg: Config, *, sources: list[str], run_id: str) -> None:
    """MERGE new/changed rows on (source, item_id); items are never deleted (a catalog only grows)."""
    tables.merge_upsert(
        vectors,
        cfg.table("gold_item_embeddings"),
        keys=list(KEYS),
        schema=GOLD_ITEM_EMBEDDINGS,
        partition_by=["source"],
        target_filter=f"{{t}}.source IN ({_sql_list(sources)})",
        delete_unmatched_where=None,
        run_id=run_id,
    )


def _encode_and_merge(
    changed: DataFrame, cfg: Config, encoder: EncoderSettings, *, run_date: dt.date, run_id: str
) -> int:
    """Encode once (persisted: MERGE reads its source twice) and upsert; returns rows encoded."""
    spark = changed.sparkSession
    per_source = {r["source"]: int(r["count"]) for r in changed.groupBy("source").count().collect()}
    n = sum(per_source.values())
    if n == 0:
        return 0
    tasks = max(1, min(spark.sparkContext.defaultParallelism, n // max(1, encoder.min_items_per_task)))
    vectors = embed(changed, encoder=encoder, partitions=tasks, run_id=run_id, run_date=run_date).persist()
    try:
        started = time.perf_counter()
        vectors.count()
        seconds = time.perf_counter() - started
        log.info("encoded %d items in %.1fs on %d task(s): %.1f items/s", n, seconds, tasks, n / seconds)
        _write(vectors, cfg, sources=sorted(per_source), run_id=run_id)
    finally:
        vectors.unpersist()
    return n


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date, run_id: str) -> EmbedReport:
    """Embed every item of bronze.events (as of ``run_date``) whose text or model changed."""
    encoder = EncoderSettings.from_config(cfg)
    model_name = cfg.settings.embeddings.model_name
    items = item_texts(_bronze(spark, cfg, run_date)).persist()
    try:
        stats = items.agg(
            F.count(F.lit(1)).alias("seen"), F.count(F.when(F.col("text").isNull(), 1)).alias("no_text")
        ).first()
        existing = tables.read(spark, cfg.table("gold_item_embeddings"), GOLD_ITEM_EMBEDDINGS)
        changed = changed_items(items, existing, model_name=model_name)
        embedded = _encode_and_merge(changed, cfg, encoder, run_date=run_date, run_id=run_id)
    finally:
        items.unpersist()
    seen, no_text = int(stats["seen"]), int(stats["no_text"])
    report = EmbedReport(seen, no_text, embedded, seen - no_text - embedded, model_name, encoder.dim)
    log.info("embed items summary %s", asdict(report))
    return report


def _embed(args: cli.JobArgs) -> None:
    spark = build_spark(args.cfg, "embed_items")
    report = run(spark, args.cfg, run_date=args.run_date, run_id=args.run_id)
    cli.emit("EMBED_ITEMS", asdict(report))


def main(argv: list[str] | None = None) -> int:
    """``jobs/embed_items.py``: new or changed item texts -> gold.item_embeddings."""
    return cli.run_main("embed_items", cli.parser(__doc__), argv, _embed)
