"""Writes produce right-sized files: with the default Delta optimized write a multi-date write leaves one
file per written date partition, whatever the number of tasks that produced the rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, LongType, StructField, StructType

from shopformer import tables
from shopformer.config import load_config

SCHEMA = StructType([StructField("day", DateType(), False), StructField("n", LongType(), False)])


def test_the_default_config_turns_on_optimized_writes() -> None:
    conf = load_config("local").section("spark.conf")
    assert conf["spark.databricks.delta.optimizeWrite.enabled"] is True


def test_a_write_from_many_tasks_leaves_one_file_per_date(spark: SparkSession, tmp_path: Path) -> None:
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=i) for i in range(6)]
    rows = spark.range(600).select(
        F.element_at(F.array(*[F.lit(d) for d in days]), (F.col("id") % 6 + 1).cast("int")).alias("day"),
        F.col("id").alias("n"),
    )
    path = str(tmp_path / "t")
    tables.replace_where(
        rows.repartition(8),
        path,
        predicate="day >= '2024-01-01'",
        schema=SCHEMA,
        partition_by=["day"],
        run_id="t",
    )
    files = sorted(p.parent.name for p in Path(path).glob("day=*/*.parquet"))
    assert files == [f"day={d}" for d in days]  # 8 tasks x 6 dates would write up to 48 files without it
    assert tables.file_count(spark, path) == 6
    assert tables.read(spark, path).count() == 600
