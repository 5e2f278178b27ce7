"""scores.user_scores on sources without views: price_elasticity from purchases (features.price_sensitivity),
one basis per source and date, null where neither views nor priced purchases say anything."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config
from shopformer.schemas import SILVER_EVENTS
from shopformer.scoring import job as scoring_job
from shopformer.scoring import transforms as scoring
from tests.features.test_snapshots import silver

T = dt.date(2024, 3, 1)
LINEAGE = scoring.Lineage("shopformer", "1", "score:t")
AT = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
WANT = "source string, user_id string, price_elasticity double, price_sensitivity_segment string"


def _scored(spark: SparkSession, rows: list[tuple[str, str, bool, float]]) -> DataFrame:
    """SCORED rows of T: (source, user, has_views, the model's elasticity), other outputs fixed."""
    full = [(s, u, T, v, 0.5, 0.5, e, [0.0], [], None, None) for s, u, v, e in rows]
    return spark.createDataFrame(full, scoring.SCORED)


def _elasticities(scores: DataFrame) -> DataFrame:
    return scores.select("source", "user_id", "price_elasticity", "price_sensitivity_segment")


def test_sources_without_views_take_the_purchase_based_elasticity(spark: SparkSession) -> None:
    scored = _scored(
        spark,
        [
            ("clicks", "v1", True, -0.5),
            ("clicks", "v2", True, -1.5),
            ("clicks", "b1", False, -0.9),  # buys only, on a source with views: stays null
            *[("retail", u, False, -0.7) for u in ("r1", "r2", "r3", "r4")],  # the head's untrained prior
        ],
    )
    bought = spark.createDataFrame(  # r4 bought nothing priced: no row
        [
            ("clicks", "b1", T, -2.0),
            ("retail", "r1", T, -0.5),
            ("retail", "r2", T, -1.0),
            ("retail", "r3", T, -2.0),
        ],
        "source string, user_id string, as_of_date date, price_elasticity double",
    )
    got = scoring.user_scores(scored, lineage=LINEAGE, scored_at=AT, purchases=bought)
    want = [("clicks", "v1", -0.5, "medium"), ("clicks", "v2", -1.5, "high"), ("clicks", "b1", None, None)]
    want += [("retail", "r1", -0.5, "low"), ("retail", "r2", -1.0, "medium"), ("retail", "r3", -2.0, "high")]
    want += [("retail", "r4", None, None)]
    assertDataFrameEqual(_elasticities(got), spark.createDataFrame(want, WANT))
    without = scoring.user_scores(scored, lineage=LINEAGE, scored_at=AT)  # no purchases: views only
    retail = without.where((F.col("source") == "retail") & F.col("price_elasticity").isNotNull())
    assert retail.count() == 0


@pytest.mark.integration  # three Delta writes through the scoring job's own write step
def test_the_scoring_job_fills_a_transactions_only_user_from_silver(spark: SparkSession, cfg: Config) -> None:
    """The job's writes read silver.events before T: a buyer who paid below the regular price is the most
    sensitive, one whose item has no regular price yet stays null (neither views nor prices)."""
    regular = [("r", f"2024-01-{d:02d} 10:00:00", "purchase", "i1", 10.0) for d in range(10, 31)]
    buys = [
        ("a", "2024-02-20 10:00:00", "purchase", "i1", 7.0),
        ("a", "2024-02-21 10:00:00", "purchase", "i1", 8.0),
        ("b", "2024-02-22 10:00:00", "purchase", "i1", 10.0),
        ("n", "2024-02-22 11:00:00", "purchase", "i9", 3.0),  # a new item: no regular price yet
        ("a", "2024-03-01 10:00:00", "purchase", "i1", 10.0),  # on T: not read for T
    ]
    events = silver(spark, regular + buys)
    tables.overwrite(events, cfg.table("silver_events"), schema=SILVER_EVENTS, run_id="t")
    scored = _scored(spark, [("shop", u, False, -0.7) for u in ("a", "b", "n", "r")])
    scoring_job._write(cfg, scored, T, LINEAGE)
    got = tables.read(spark, cfg.table("scores_user_scores")).where(F.col("as_of_date") == T)
    rows = {r["user_id"]: (r["price_elasticity"], r["price_sensitivity_segment"]) for r in got.collect()}
    assert rows["n"] == (None, None)
    assert rows["a"][0] is not None and rows["b"][0] is not None  # without purchases: null (checked)
    assert rows["a"][0] < rows["b"][0] <= 0 and rows["a"][1] == "high"
    assert rows["b"][0] == rows["r"][0]  # both always paid the regular price


def test_only_the_nights_sources_without_views_read_silver(spark: SparkSession, cfg: Config) -> None:
    """A clickstream night (every source has views) reads no silver history; otherwise only the listed
    sources' purchases are read."""
    assert scoring_job._purchase_elasticity(cfg, spark, T, []) is None  # no scan planned at all
    buys = [("a", f"2024-01-{d:02d} 10:00:00", "purchase", "i1", 10.0) for d in range(10, 31)]
    tables.overwrite(silver(spark, buys), cfg.table("silver_events"), schema=SILVER_EVENTS, run_id="t")
    listed = scoring_job._purchase_elasticity(cfg, spark, T, ["shop"])
    other = scoring_job._purchase_elasticity(cfg, spark, T, ["elsewhere"])
    assert listed is not None and other is not None
    assert [r["user_id"] for r in listed.collect()] == ["a"] and other.count() == 0
