"""Tiny inline rows for tests, with explicit schemas."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from shopformer.schemas import BRONZE_EVENTS

# The suite's small local Spark, as `--set` overrides: one partition per shuffle, RDD, Delta log replay and
# partition discovery. The two xdist workers already keep both cores busy, so a second task per stage only
# adds scheduling, files and log entries (2026-12-05, 40 in-process tests alone, machine CPU-s: 354 / 397 /
# 366 with 2, 326 / 310 / 300 with 1). The test session (conftest.py) and every harness that starts jobs as
# processes use it; the product's defaults (conf/base.yaml) are for real data.
SMALL_SPARK = (
    "spark.conf.spark.sql.shuffle.partitions=1",
    "spark.conf.spark.default.parallelism=1",
    "spark.conf.spark.databricks.delta.snapshotPartitions=1",
    "spark.conf.spark.sql.sources.parallelPartitionDiscovery.parallelism=1",
)


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def expected_session_id(source: str, user_id: str, start: str) -> str:
    """Independent re-implementation of the session id (sha256 of source, user, start micros)."""
    micros = int(ts(start).replace(tzinfo=dt.UTC).timestamp() * 1_000_000)
    return hashlib.sha256(f"{source}\x01{user_id}\x01{micros}".encode()).hexdigest()[:32]


def bronze(spark: SparkSession, rows: list[tuple], source: str = "shop") -> DataFrame:
    """Rows of (event_id, user_id, event_time, event_type, item_id, price, ingest_date) as bronze.events."""
    full = [
        (
            eid,
            source,
            user,
            ts(when),
            ts(when).date(),
            etype,
            item,
            None,
            None,
            price,
            None,
            1,
            None,
            None,
            dt.date.fromisoformat(ingested),
            f"test:{ingested}",
        )
        for eid, user, when, etype, item, price, ingested in rows
    ]
    return spark.createDataFrame(full, BRONZE_EVENTS)


def catalog_events(spark: SparkSession, rows: list[tuple], source: str = "shop") -> DataFrame:
    """Rows of (user_id, event_time, event_type, item_id, price[, category]) as bronze.events; the brand
    is the item's first letter, the event id is the row's position (unique, stable)."""
    full = []
    for n, row in enumerate(rows):
        user, when, etype, item, price, *rest = row
        category = rest[0] if rest else f"cat-{item[0]}"
        t = ts(when)
        full.append(
            (
                f"e{n:05d}",
                source,
                user,
                t,
                t.date(),
                etype,
                item,
                category,
                item[0],
                price,
                None,
                1,
                None,
                None,
                t.date(),
                "test",
            )
        )
    return spark.createDataFrame(full, BRONZE_EVENTS)


def tiny_model_dir(folder: Path, *, seed: int = 0, vocab_version: str = "v2024-01-01") -> Path:
    """A folder laid out as a registered shopformer version (``artifacts/model.pt``, a tiny real
    checkpoint that names its vocabulary, as training's do), for registering versions with
    ``MlflowClient.create_model_version(source=...)``."""
    import torch

    from shopformer.model.network import ModelConfig, ShopformerModel, save_checkpoint

    torch.manual_seed(seed)
    sizes = {"item_vocab_size": 30, "category_vocab_size": 7, "brand_vocab_size": 9, "max_len": 8}
    config = ModelConfig.preset("tiny", **sizes)
    (folder / "artifacts").mkdir(parents=True)
    extra = {"vocab": {"version": vocab_version}}
    save_checkpoint(folder / "artifacts" / "model.pt", ShopformerModel(config), extra=extra)
    return folder
