"""Snapshots of a real transactions-only shop (UCI Online Retail II sample in ../shared/datasets).

The sample is ingested and sessionized with the real jobs' library calls; population, aggregates and labels
are then checked against an independent pandas computation over the same accepted events.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.features import job as snapshots_job
from shopformer.features.vocab import first_frequent_id
from shopformer.ingest import job as ingest_job
from shopformer.model import data as train_data
from shopformer.sessions import job as sessionize_job
from tests.ingest.test_real_data import _xlsx_to_csv

pytestmark = [pytest.mark.real_data, pytest.mark.integration]
AS_OF = [dt.date(2010, 6, 1), dt.date(2010, 9, 1)]
END = "2010-10-15"  # after the last as-of date's 30-day churn window


@pytest.fixture(scope="module")
def uci(spark: SparkSession, shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """The sample up to END ingested, sessionized and snapshotted at two as-of dates, once for this module."""
    root = tmp_path_factory.mktemp("uci")
    cfg = load_config("local", [f"paths.root={root}", "snapshots.every_days=92"])
    pdf = _xlsx_to_csv(
        shared_datasets / "uci_online_retail" / "online_retail_II_10_non_UK_countries.xlsx", root / "csv"
    )
    # The sample's lines before END only: every as-of date's history and label windows, ~40 % of the lines
    # (CI time: the ingest and sessionize of 2 years of lines cost ~40 s more and change no checked value).
    (csv,) = (root / "csv").iterdir()
    pdf[pd.to_datetime(pdf["InvoiceDate"]) < pd.Timestamp(END)].to_csv(csv, index=False)
    day = dt.date(2011, 12, 31)
    ingest_job.run(
        spark, cfg, source="uci_online_retail", start=day, end=day, run_id="r", input_path=str(root / "csv")
    )
    sessionize_job.run(spark, cfg, start=day, end=day, run_id="s", full=True)
    snapshots_job.run(spark, cfg, start=AS_OF[0], end=AS_OF[1], run_id="g", build_vocab=True)
    return cfg


def test_real_transactions_only_snapshots_match_an_independent_pandas_count(
    spark: SparkSession, uci: Config
) -> None:
    snaps = tables.read(spark, uci.table("gold_user_snapshots")).toPandas()
    events = (
        tables.read(spark, uci.table("bronze_events"))
        .select("user_id", "event_time", "event_type")
        .toPandas()
    )
    assert set(events["event_type"]) == {"purchase"}
    for t in AS_OF:
        t0 = pd.Timestamp(t)
        past = events[events["event_time"] < t0]
        last = past.groupby("user_id")["event_time"].max()
        population = set(last[last >= t0 - pd.Timedelta(days=180)].index)
        rows = snaps[snaps["as_of_date"] == t]
        assert set(rows["user_id"]) == population
        future = events[(events["event_time"] >= t0) & (events["event_time"] < t0 + pd.Timedelta(days=7))]
        expected = rows["user_id"].isin(set(future["user_id"])).astype(int)
        assert rows["label_propensity"].tolist() == expected.tolist()
        n30 = past[past["event_time"] >= t0 - pd.Timedelta(days=30)].groupby("user_id").size()
        assert rows.set_index("user_id")["n_events_30d"].to_dict() == {
            u: int(n30.get(u, 0)) for u in rows["user_id"]
        }
    # Transactions only: no price labels, no funnel, sequences of purchases only.
    assert snaps["price_n_views"].isna().all() and snaps["view_to_cart_rate"].isna().all()
    assert all(set(s) <= {0, 4} for s in snaps["seq_event_type"])
    assert 0 < snaps["label_propensity"].mean() < 1


def test_the_vocabulary_is_built_from_events_before_the_last_as_of_date(
    spark: SparkSession, uci: Config
) -> None:
    vocab = tables.read(spark, uci.table("gold_vocabularies"))
    assert [r[0] for r in vocab.select("vocab_version").distinct().collect()] == ["v2010-09-01"]
    counted = vocab.where(F.col("kind") == "item").agg(F.sum("count")).first()[0]
    events = tables.read(spark, uci.table("bronze_events")).where(
        F.col("event_time") < F.lit("2010-09-01").cast("timestamp")
    )
    assert counted <= events.count()
    top = events.groupBy("item_id").count().orderBy(F.desc("count"), "item_id").first()
    first = vocab.where((F.col("kind") == "item") & (F.col("id") == 66)).first()  # 2 + 64 buckets
    assert (first["token"], first["count"]) == (top["item_id"], top["count"])


def test_a_transactions_only_vocabulary_still_sizes_every_kind(spark: SparkSession, uci: Config) -> None:
    """No category or brand in the source: those tables hold the reserved ids only, so a model builds."""
    version = tables.read(spark, uci.table("gold_vocabularies")).agg(F.max("vocab_version")).first()[0]
    sizes, counts, plain = train_data.vocabulary(spark, uci, version)
    reserved = first_frequent_id(plain["hash_buckets"])
    assert (sizes["category"], sizes["brand"]) == (reserved, reserved)
    assert plain["tokens"]["category"] == plain["tokens"]["brand"] == {}
    assert sizes["item"] == reserved + len(plain["tokens"]["item"]) == len(counts)
