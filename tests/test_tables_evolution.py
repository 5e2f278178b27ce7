"""Schema evolution of existing tables (docs/tables.md "Schema evolution"): a deployment's tables created
before ``regular_price`` existed read it as null, take the column on the next nightly write, at its place
in the schema, and keep their old rows (null there). Only additive nullable columns evolve."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StructField, StructType
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config
from shopformer.schemas import BRONZE_EVENTS
from tests.factories import bronze

pytestmark = pytest.mark.integration  # writes Delta tables

OLD_DAY = [("a1", "u1", "2024-03-01 10:00:00", "purchase", "i1", 2.0, "2024-03-01")]
NEW_DAY = [("a2", "u1", "2024-03-02 10:00:00", "purchase", "i1", 1.5, "2024-03-02")]
NIGHT = "ingest_date = DATE'2024-03-02'"  # what the ingest job replaces for landing date 2024-03-02
OUT = "event_id string, price double, regular_price double"


def _old_bronze(spark: SparkSession, path: str) -> None:
    """bronze.events as an older release wrote it: no ``regular_price`` column."""
    bronze(spark, OLD_DAY).drop("regular_price").write.format("delta").partitionBy("event_date").save(path)


def test_an_old_table_takes_the_column_on_the_next_nightly_write(spark: SparkSession, cfg: Config) -> None:
    path = cfg.table("bronze_events")
    _old_bronze(spark, path)
    before = tables.read(spark, path, BRONZE_EVENTS).select("event_id", "price", "regular_price")
    assertDataFrameEqual(before, spark.createDataFrame([("a1", 2.0, None)], OUT))  # readers: null already

    new = bronze(spark, NEW_DAY).withColumn("regular_price", F.lit(2.0))
    tables.replace_where(
        new, path, predicate=NIGHT, schema=BRONZE_EVENTS, partition_by=["event_date"], run_id="night"
    )
    table = tables.read(spark, path)
    assert table.schema.names == BRONZE_EVENTS.names  # the column sits where a new table has it
    got = table.select("event_id", "price", "regular_price")
    assertDataFrameEqual(got, spark.createDataFrame([("a1", 2.0, None), ("a2", 1.5, 2.0)], OUT))


def test_a_missing_required_column_stops_the_write_before_anything_changes(
    spark: SparkSession, cfg: Config
) -> None:
    path = cfg.table("bronze_events")
    _old_bronze(spark, path)
    before = tables.version(spark, path)
    schema = StructType([*BRONZE_EVENTS.fields, StructField("must_have", LongType(), False)])
    new = bronze(spark, NEW_DAY).withColumn("must_have", F.lit(1))
    with pytest.raises(ValueError, match=r"non-nullable column\(s\) \['must_have'\]"):
        tables.replace_where(
            new, path, predicate=NIGHT, schema=schema, partition_by=["event_date"], run_id="night"
        )
    assert tables.version(spark, path) == before
    assert "regular_price" not in tables.read(spark, path).columns


def test_a_merge_into_an_old_table_adds_the_column_too(spark: SparkSession, cfg: Config) -> None:
    path = cfg.table("silver_sessions")
    old = StructType([StructField("k", LongType(), False), StructField("v", LongType(), True)])
    spark.createDataFrame([(1, 10)], old).write.format("delta").save(path)
    new = StructType([*old.fields, StructField("w", LongType(), True)])
    tables.merge_upsert(
        spark.createDataFrame([(2, 20, 200)], new),
        path,
        keys=["k"],
        schema=new,
        partition_by=[],
        target_filter="true",
        delete_unmatched_where=None,
        run_id="night",
    )
    assertDataFrameEqual(tables.read(spark, path), spark.createDataFrame([(1, 10, None), (2, 20, 200)], new))
