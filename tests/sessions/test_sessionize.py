"""Sessionization: gap rule, carry-in across midnight, session summaries, incremental == full."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config
from shopformer.schemas import BRONZE_EVENTS, SILVER_EVENTS, SILVER_SESSIONS
from shopformer.sessions import job as sessionize_job
from shopformer.sessions.transforms import CARRY_IN_COLUMNS, assign_sessions, summarize_sessions
from tests.factories import bronze, expected_session_id, ts


def _empty_carry(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame([], SILVER_EVENTS).select(*CARRY_IN_COLUMNS)


def _sessions_of(df: DataFrame) -> DataFrame:
    return df.select("event_id", "session_start", "session_id")


def _expected(spark: SparkSession, rows: list[tuple[str, str, str]], user: str = "u1") -> DataFrame:
    data = [(eid, ts(start), expected_session_id("shop", user, start)) for eid, start, _ in rows]
    return spark.createDataFrame(data, "event_id string, session_start timestamp, session_id string")


def test_no_events_gives_no_sessions(spark: SparkSession) -> None:
    out = assign_sessions(bronze(spark, []), carry_in=_empty_carry(spark), gap_minutes=30, run_id="r")
    assert [(f.name, f.dataType) for f in out.schema] == [(f.name, f.dataType) for f in SILVER_EVENTS]
    assert out.count() == 0


def test_gap_of_exactly_30_minutes_starts_a_new_session(spark: SparkSession) -> None:
    events = bronze(
        spark,
        [
            ("e1", "u1", "2024-01-01 10:00:00", "view", "i1", 1.0, "2024-01-01"),
            ("e2", "u1", "2024-01-01 10:29:59", "view", "i1", 1.0, "2024-01-01"),
            ("e3", "u1", "2024-01-01 10:59:59", "cart", "i1", 1.0, "2024-01-01"),  # exactly 30 min later
            ("e4", "u1", "2024-01-01 10:59:59", "purchase", "i1", 1.0, "2024-01-01"),  # same second
        ],
    )
    out = assign_sessions(events, carry_in=_empty_carry(spark), gap_minutes=30, run_id="r")
    assertDataFrameEqual(
        _sessions_of(out),
        _expected(
            spark,
            [
                ("e1", "2024-01-01 10:00:00", ""),
                ("e2", "2024-01-01 10:00:00", ""),
                ("e3", "2024-01-01 10:59:59", ""),
                ("e4", "2024-01-01 10:59:59", ""),
            ],
        ),
    )


def test_users_and_sources_are_sessionized_apart(spark: SparkSession) -> None:
    rows = [("a1", "u1", "2024-01-01 10:00:00", "view", "i1", 1.0, "2024-01-01")]
    events = bronze(spark, rows).unionByName(bronze(spark, [("b1", *rows[0][1:])], source="other"))
    events = events.unionByName(
        bronze(spark, [("c1", "u2", "2024-01-01 10:05:00", "view", "i", None, "2024-01-01")])
    )
    out = assign_sessions(events, carry_in=_empty_carry(spark), gap_minutes=30, run_id="r")
    expected = spark.createDataFrame(
        [
            ("a1", expected_session_id("shop", "u1", "2024-01-01 10:00:00")),
            ("b1", expected_session_id("other", "u1", "2024-01-01 10:00:00")),
            ("c1", expected_session_id("shop", "u2", "2024-01-01 10:05:00")),
        ],
        "event_id string, session_id string",
    )
    assertDataFrameEqual(out.select("event_id", "session_id"), expected)


def test_carry_in_continues_a_session_across_midnight(spark: SparkSession) -> None:
    carry = spark.createDataFrame(
        [("shop", "u1", ts("2024-01-01 23:50:00"), "e0", ts("2024-01-01 23:20:00"))],
        "source string, user_id string, event_time timestamp, event_id string, session_start timestamp",
    )
    events = bronze(
        spark,
        [
            ("e1", "u1", "2024-01-02 00:10:00", "view", "i1", 1.0, "2024-01-02"),
            ("e2", "u1", "2024-01-02 01:00:00", "view", "i1", 1.0, "2024-01-02"),
        ],
    )
    out = assign_sessions(events, carry_in=carry, gap_minutes=30, run_id="r")
    assertDataFrameEqual(
        _sessions_of(out),
        _expected(spark, [("e1", "2024-01-01 23:20:00", ""), ("e2", "2024-01-02 01:00:00", "")]),
    )


def test_non_positive_gap_is_rejected(spark: SparkSession) -> None:
    with pytest.raises(ValueError, match="gap_minutes"):
        assign_sessions(bronze(spark, []), carry_in=_empty_carry(spark), gap_minutes=0, run_id="r")


def test_summarize_sessions_counts_funnel_and_revenue(spark: SparkSession) -> None:
    events = bronze(
        spark,
        [
            ("e1", "u1", "2024-01-01 23:55:00", "view", "i1", 10.0, "2024-01-01"),
            ("e2", "u1", "2024-01-01 23:58:00", "cart", "i1", 10.0, "2024-01-01"),
            ("e3", "u1", "2024-01-02 00:01:00", "remove_from_cart", "i1", 10.0, "2024-01-02"),
            ("e4", "u1", "2024-01-02 00:02:00", "purchase", "i2", 2.5, "2024-01-02"),
            ("e5", "u1", "2024-01-02 00:03:00", "purchase", "i3", None, "2024-01-02"),
        ],
    )
    silver = assign_sessions(events, carry_in=_empty_carry(spark), gap_minutes=30, run_id="r")
    start = ts("2024-01-01 23:55:00")
    expected = spark.createDataFrame(
        [
            (
                expected_session_id("shop", "u1", "2024-01-01 23:55:00"),
                "shop",
                "u1",
                start,
                ts("2024-01-02 00:03:00"),
                dt.date(2024, 1, 1),
                480,
                5,
                1,
                1,
                1,
                2,
                3,
                2.5,
                "s",
            )
        ],
        SILVER_SESSIONS,
    )
    assertDataFrameEqual(summarize_sessions(silver, run_id="s"), expected)


# ---------------------------------------------------------------------------------------------------------
# Incremental runs against Delta must equal a full recompute.

DAY1 = [
    ("d1a", "u1", "2024-01-01 10:00:00", "view", "i1", 5.0),
    ("d1b", "u1", "2024-01-01 23:45:00", "view", "i2", 5.0),  # session crossing midnight ...
    ("d1c", "u2", "2024-01-01 12:00:00", "view", "i1", 5.0),
]
DAY2 = [
    ("d2a", "u1", "2024-01-02 00:05:00", "cart", "i2", 5.0),  # ... continues here
    ("d2b", "u1", "2024-01-02 00:20:00", "purchase", "i2", 5.0),
    ("d2c", "u2", "2024-01-02 09:00:00", "view", "i3", 7.0),
    ("d2d", "u2", "2024-01-02 09:50:00", "view", "i3", 7.0),  # separate session (50 min gap) ...
    ("d2e", "u3", "2024-01-02 23:59:59", "view", "i3", 7.0),
]
DAY3 = [
    ("d3a", "u2", "2024-01-02 09:25:00", "view", "i3", 7.0),  # ... until this late event bridges them
    ("d3b", "u3", "2024-01-03 00:00:30", "cart", "i3", 7.0),
    ("d3c", "u1", "2024-01-03 15:00:00", "view", "i1", 4.0),
]


def _ingest(spark: SparkSession, cfg: Config, day: str, rows: list[tuple]) -> None:
    df = bronze(spark, [(*r, day) for r in rows])
    tables.replace_where(
        df,
        cfg.table("bronze_events"),
        predicate=f"ingest_date = DATE'{day}'",
        schema=BRONZE_EVENTS,
        partition_by=["event_date"],
        run_id="test",
    )


def _without_lineage(df: DataFrame) -> DataFrame:
    return df.drop("sessionize_run_id")


def _read(spark: SparkSession, cfg: Config, name: str, *, as_of: int | None = None) -> DataFrame:
    return _without_lineage(tables.read(spark, cfg.table(name), as_of=as_of))


@pytest.mark.integration  # five sessionize job runs against Delta
def test_nightly_incremental_equals_full_recompute_and_reruns_are_idempotent(
    spark: SparkSession, cfg: Config
) -> None:
    days = [("2024-01-01", DAY1), ("2024-01-02", DAY2), ("2024-01-03", DAY3)]
    for day, rows in days:
        _ingest(spark, cfg, day, rows)
        d = dt.date.fromisoformat(day)
        sessionize_job.run(spark, cfg, start=d, end=d, run_id=f"sessionize:{day}")
    # Pinned to the version before the rerun: a DataFrame not yet executed reads the newest version when it
    # first runs, so unpinned frames would compare the rerun's table with itself.
    versions = {n: tables.version(spark, cfg.table(n)) for n in ("silver_events", "silver_sessions")}
    incremental = {n: _read(spark, cfg, n, as_of=v) for n, v in versions.items()}

    sessionize_job.run(spark, cfg, start=dt.date(2024, 1, 3), end=dt.date(2024, 1, 3), run_id="rerun")
    for name, df in incremental.items():
        assert tables.version(spark, cfg.table(name)) > versions[name]  # the rerun did rewrite the day
        assertDataFrameEqual(_read(spark, cfg, name), df)

    full_cfg = dataclasses.replace(
        cfg,
        data={
            **cfg.data,
            "tables": {
                **cfg.data["tables"],
                "silver_events": cfg.table("silver_events") + "_full",
                "silver_sessions": cfg.table("silver_sessions") + "_full",
            },
        },
        origin="test",
    )
    d3 = dt.date(2024, 1, 3)
    report = sessionize_job.run(spark, full_cfg, start=d3, end=d3, run_id="full", full=True)
    assert report.first_date == "2024-01-01"
    for name, df in incremental.items():
        assertDataFrameEqual(_read(spark, full_cfg, name), df)

    # The facts the scenario was built for, checked directly on the sessions table.
    sessions = incremental["silver_sessions"].orderBy("user_id", "session_start")
    got = [(r.user_id, str(r.session_start), r.n_events) for r in sessions.collect()]
    assert got == [
        ("u1", "2024-01-01 10:00:00", 1),
        ("u1", "2024-01-01 23:45:00", 3),  # crossed midnight, one session
        ("u1", "2024-01-03 15:00:00", 1),
        ("u2", "2024-01-01 12:00:00", 1),
        ("u2", "2024-01-02 09:00:00", 3),  # the late event merged two sessions; the stale one is gone
        ("u3", "2024-01-02 23:59:59", 2),
    ]
    assert incremental["silver_events"].where(F.col("event_id") == "d3a").count() == 1
