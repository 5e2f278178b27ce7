"""Helpers for the ingestion tests: inline raw rows, configs with test mappings, landing files."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from shopformer.config import Config
from shopformer.ingest import job as ingest_job
from shopformer.ingest import transforms as ingest
from shopformer.ingest.sources import CORRUPT, SourceMapping, parse_mapping

REES_COLS = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
]
HEADER = ",".join(REES_COLS)


def rees_mapping(**changes: Any) -> SourceMapping:
    section = copy.deepcopy(dict(_base_cfg().get("sources.rees46")))
    section.update(changes)
    return parse_mapping("shop", section)


def _base_cfg() -> Config:
    from shopformer.config import load_config

    return load_config("local")


def with_mapping(cfg: Config, name: str, **changes: Any) -> Config:
    """``cfg`` plus a mapping ``name``: a copy of rees46 with ``changes``."""
    data = copy.deepcopy(dict(cfg.data))
    section = copy.deepcopy(data["sources"]["rees46"])
    section.update(changes)
    data["sources"][name] = section
    return dataclasses.replace(cfg, data=data, origin=cfg.origin + " + test mapping")


def raw_frame(
    spark: SparkSession,
    rows: list[tuple[str | None, ...]],
    *,
    columns: list[str] = REES_COLS,
    ingest_date: str = "2024-01-01",
    source_file: str = "file:/landing/part-0.csv",
) -> DataFrame:
    """Rows as ``raw.read_raw`` returns them; a row one longer than ``columns`` carries a corrupt line."""
    schema = StructType([StructField(c, StringType()) for c in [*columns, CORRUPT]])
    data = [r if len(r) == len(columns) + 1 else (*r, None) for r in rows]
    df = spark.createDataFrame(data, schema)
    raw_json = F.to_json(F.struct(*[F.col(f"`{c}`") for c in columns]), {"ignoreNullFields": "false"})
    return df.select(
        *[F.col(f"`{c}`") for c in columns],
        F.col(CORRUPT),
        F.coalesce(F.col(CORRUPT), raw_json).alias("_raw_record"),
        F.lit(source_file).alias("_source_file"),
        F.lit(dt.date.fromisoformat(ingest_date)).alias("_ingest_date"),
    )


def classified(raw: DataFrame, m: SourceMapping, *, hours: int = 24) -> DataFrame:
    """Every row as the job stages it: ids, reason (NULL: valid), raw record for rejects only."""
    return ingest_job.candidates(raw, m, max_future_hours=hours).transform(ingest.staged_rows)


def resolve(
    raw: DataFrame, m: SourceMapping, *, existing: DataFrame | None = None, hours: int = 24
) -> DataFrame:
    """The valid rows resolved: one row per event id, its copies, known to bronze or not."""
    spark = raw.sparkSession
    ids = existing if existing is not None else spark.createDataFrame([], "event_id string")
    return classified(raw, m, hours=hours).transform(ingest.resolve_duplicates, existing_ids=ids)


def rees_row(
    when: str = "2024-01-01 10:00:00 UTC",
    etype: str | None = "view",
    item: str | None = "p1",
    price: str | None = "1.50",
    user: str | None = "u1",
    session: str | None = "s1",
    brand: str | None = "acme",
) -> tuple[str | None, ...]:
    return (when, etype, item, "100", "cat.sub", brand, price, user, session)


def expected_event_id(*parts: str | None) -> str:
    """Independent re-implementation: sha256 of the parts joined by \\x01, NULL as \\x00, 32 hex chars."""
    text = "\x01".join("\x00" if p is None else p for p in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def land(root: Path, source: str, day: str, name: str, text: str) -> Path:
    """Write one raw file into the landing folder of ``source`` for ``day``."""
    folder = root / "landing" / source / f"date={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder
