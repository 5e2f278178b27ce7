"""Weekly maintenance on real Delta tables: OPTIMIZE compacts the small files of nightly appends into one
per partition without changing a row, VACUUM keeps a week of time travel, the job reports file counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import LongType, StringType, StructField, StructType
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.errors import ConfigError
from shopformer.ops.jobs import job_main

SCHEMA = StructType([StructField("source", StringType(), False), StructField("n", LongType(), False)])


def _append_nights(spark: SparkSession, path: str, nights: int) -> None:
    for i in range(nights):  # each night appends its own small file to the same partition
        rows = spark.createDataFrame([("shop", i)], SCHEMA)
        rows.write.format("delta").mode("append").partitionBy("source").save(path)


@pytest.mark.integration
def test_the_job_compacts_small_files_and_keeps_time_travel(
    spark: SparkSession, cfg: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    path = cfg.table("silver_sessions")  # any table of the config: maintenance walks them all
    _append_nights(spark, path, 4)
    before = tables.read(spark, path).collect()
    version = tables.version(spark, path)
    assert tables.file_count(spark, path) == 4

    assert (
        job_main("maintain_tables")(
            ["--run-date", "2024-01-08", "--set", f"paths.root={cfg.get('paths.root')}"]
        )
        == 0
    )
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("MAINTAIN "))
    report = json.loads(line.removeprefix("MAINTAIN "))
    assert report == {
        "retain_hours": 168.0,
        "tables": {"silver_sessions": {"files_before": 4, "files_after": 1}},
    }
    assertDataFrameEqual(tables.read(spark, path), before)
    # A week of time travel is kept: the version before the compaction still reads, with the same rows.
    assertDataFrameEqual(tables.read(spark, path, as_of=version), before)
    assert len(list(Path(path).glob("source=shop/*.parquet"))) == 5  # old files stay until they age out


def test_a_retention_below_a_week_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"maintenance\.retain_hours"):
        load_config("local", ["maintenance.retain_hours=24"])
