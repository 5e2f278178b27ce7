"""Rerunning sessionize for an old date after newer ones recomputes forward: silver never drops the late
events that landed after the old date (docs/sessionization.md "Re-running an old date recomputes forward")."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config
from shopformer.schemas import BRONZE_EVENTS
from shopformer.sessions import job as sessionize_job
from tests.factories import bronze

pytestmark = pytest.mark.integration  # sessionize job runs against Delta tables

D1, D2, D3 = dt.date(2024, 2, 11), dt.date(2024, 2, 12), dt.date(2024, 2, 13)
ROWS = [
    ("a1", "u1", "2024-02-11 10:00:00", "view", "i1", 1.0, "2024-02-11"),
    ("a2", "u1", "2024-02-11 23:50:00", "view", "i2", 1.0, "2024-02-11"),
    ("b1", "u2", "2024-02-11 12:00:00", "view", "i1", 1.0, "2024-02-11"),
    # late: event date 02-11, landed 02-12; b2 joins b1's session, a3 continues a2's across midnight
    ("b2", "u2", "2024-02-11 12:10:00", "cart", "i1", 1.0, "2024-02-12"),
    ("a3", "u1", "2024-02-11 23:59:00", "cart", "i2", 1.0, "2024-02-12"),
    ("a4", "u1", "2024-02-12 00:10:00", "purchase", "i2", 1.0, "2024-02-12"),
    ("c1", "u3", "2024-02-12 09:00:00", "view", "i3", 1.0, "2024-02-12"),
    ("c2", "u3", "2024-02-13 09:00:00", "view", "i3", 1.0, "2024-02-13"),  # ingested, not yet sessionized
]
LINEAGE = ("sessionize_run_id",)


def _tables(spark: SparkSession, cfg: Config) -> tuple[DataFrame, DataFrame]:
    events = tables.read(spark, cfg.table("silver_events")).drop(*LINEAGE)
    sessions = tables.read(spark, cfg.table("silver_sessions"))
    return events, sessions.drop(*[c for c in sessions.columns if c.endswith("run_id")])


def _run(spark: SparkSession, cfg: Config, start: dt.date, end: dt.date, **kw: bool) -> object:
    return sessionize_job.run(spark, cfg, start=start, end=end, run_id=f"s:{start}..{end}", **kw)


def test_an_old_date_rerun_recomputes_forward_and_keeps_the_late_events(
    spark: SparkSession, cfg: Config
) -> None:
    tables.replace_where(
        bronze(spark, ROWS),
        cfg.table("bronze_events"),
        predicate="true",
        schema=BRONZE_EVENTS,
        partition_by=["event_date"],
        run_id="test",
    )
    _run(spark, cfg, D1, D1)
    _run(spark, cfg, D2, D2)
    in_order = [df.collect() for df in _tables(spark, cfg)]  # rows, not pandas: a null stays null
    ids = {r.event_id for r in tables.read(spark, cfg.table("silver_events")).collect()}
    assert ids == {"a1", "a2", "b1", "b2", "a3", "a4", "c1"}
    report = _run(spark, cfg, D1, D1)  # the old date again, after 02-12
    assert (report.first_date, report.end_date) == (str(D1), str(D2))
    for got, want in zip(_tables(spark, cfg), in_order, strict=True):
        assertDataFrameEqual(got, spark.createDataFrame(want, got.schema))
    full = _run(spark, cfg, D1, D2, full=True)  # and both equal a full recompute of the same landings
    assert full.end_date == str(D2)
    for got, want in zip(_tables(spark, cfg), in_order, strict=True):
        assertDataFrameEqual(got, spark.createDataFrame(want, got.schema))
