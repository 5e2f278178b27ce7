"""A vocabulary version is immutable: rebuilding it with the same contents (a rerun) writes nothing and
reuses it; rebuilding it with other contents (the catalogue grew) is refused, and it keeps its rows."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config
from shopformer.errors import UsageError
from shopformer.features import job as snapshots_job
from shopformer.features.vocab import fingerprint
from tests.factories import catalog_events

V = "v2024-02-12"
SHOP = [("u1", f"2024-02-0{d} 10:00:00", "view", item, 1.0) for d in (1, 2, 3) for item in ("a1", "a2", "b1")]
GROWN = [*SHOP, *[("u2", "2024-02-04 10:00:00", "view", "c9", 1.0)] * 3]  # a new item, frequent enough


@pytest.mark.integration
def test_a_version_is_built_once_reused_on_rerun_and_never_rewritten(
    spark: SparkSession, cfg: Config
) -> None:
    path = cfg.table("gold_vocabularies")
    first = snapshots_job._vocabulary(spark, cfg, catalog_events(spark, SHOP), build=V, run_id="b1")
    rows = first.toPandas()
    version = tables.version(spark, path)
    again = snapshots_job._vocabulary(spark, cfg, catalog_events(spark, SHOP), build=V, run_id="b2")
    assert tables.version(spark, path) == version  # the rerun committed nothing
    assertDataFrameEqual(again, spark.createDataFrame(rows, again.schema))
    with pytest.raises(UsageError, match=rf"vocabulary {V} exists with other contents"):
        snapshots_job._vocabulary(spark, cfg, catalog_events(spark, GROWN), build=V, run_id="b3")
    assert tables.version(spark, path) == version
    held = tables.read(spark, path)
    assertDataFrameEqual(held, spark.createDataFrame(rows, held.schema))
    assert "c9" not in {r.token for r in held.collect()}


def test_the_fingerprint_sees_any_changed_row(spark: SparkSession) -> None:
    schema = "vocab_version string, kind string, token string, id int, count long, hash_buckets int"
    base = [(V, "item", "a1", 66, 3, 64), (V, "item", "a2", 67, 2, 64)]
    same = spark.createDataFrame(list(reversed(base)), schema)  # order does not matter
    assert fingerprint(spark.createDataFrame(base, schema)) == fingerprint(same)
    swapped = [(V, "item", "a1", 67, 3, 64), (V, "item", "a2", 66, 2, 64)]  # ids swapped: other meaning
    assert fingerprint(spark.createDataFrame(swapped, schema)) != fingerprint(same)
    assert fingerprint(spark.createDataFrame([], schema)) == (0, 0)
