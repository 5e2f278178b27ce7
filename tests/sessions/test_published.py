"""Whole nights for readers of silver: the silver views show published event dates only, so a sessionize
run killed between its commits hides the dates it rewrites instead of showing events without their
sessions (issue 16 item 1; docs/sessionization.md "Published dates")."""

from __future__ import annotations

import datetime as dt
import os
import shutil

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config
from shopformer.schemas import BRONZE_EVENTS
from shopformer.scoring import sql_views
from shopformer.sessions import job as sessionize_job
from tests.factories import bronze

pytestmark = pytest.mark.integration  # sessionize runs against Delta tables

D0, D1, D2 = dt.date(2024, 2, 10), dt.date(2024, 2, 11), dt.date(2024, 2, 12)
ROWS = [
    ("b1", "u2", "2024-02-10 12:00:00", "view", "i1", 1.0, "2024-02-10"),
    ("a1", "u1", "2024-02-11 10:00:00", "view", "i1", 1.0, "2024-02-11"),
    ("a2", "u1", "2024-02-11 23:50:00", "view", "i2", 1.0, "2024-02-11"),
    # the night of 02-12: a3 continues a2's session across midnight, so that session is rewritten whole
    ("a3", "u1", "2024-02-12 00:10:00", "purchase", "i2", 1.0, "2024-02-12"),
    ("c1", "u3", "2024-02-12 09:00:00", "view", "i3", 1.0, "2024-02-12"),
]
COMMITS = 4  # unpublish, silver.events, the silver.sessions MERGE, publish
VIEWS = ("silver_events", "silver_sessions")


class Killed(BaseException):
    """Raised by the kill switch's ``os._exit`` here: no ``except Exception`` of the job catches it."""


def _setup(spark: SparkSession, cfg: Config) -> None:
    """bronze.events of the three days; silver sessionized up to 02-11."""
    tables.replace_where(
        bronze(spark, ROWS),
        cfg.table("bronze_events"),
        predicate="true",
        schema=BRONZE_EVENTS,
        partition_by=["event_date"],
        run_id="test",
    )
    sessionize_job.run(spark, cfg, start=D0, end=D1, run_id="s:history")


def _night(spark: SparkSession, cfg: Config) -> object:
    return sessionize_job.run(spark, cfg, start=D2, end=D2, run_id="s:night")


def _views(spark: SparkSession, cfg: Config) -> dict[str, list]:
    sql_views.register_views(spark, cfg)
    return {v: spark.table(v).collect() for v in VIEWS}


def _published(spark: SparkSession, cfg: Config) -> list[tuple[dt.date, str]]:
    rows = tables.read(spark, cfg.table("silver_published_dates")).orderBy("event_date").collect()
    return [(r.event_date, r.sessionize_run_id) for r in rows]


def _killed_before(k: int, spark: SparkSession, cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """The night killed by the real switch before its k-th write (``os._exit`` raising here)."""

    def die(code: int) -> None:
        raise Killed(code)

    with monkeypatch.context() as mp:
        mp.setenv(tables.KILL_ENV, str(k))
        mp.setattr(tables, "_attempts", [0])
        mp.setattr(os, "_exit", die)
        with pytest.raises(Killed):
            _night(spark, cfg)


def _before(df: DataFrame, day_col: F.Column, day: dt.date) -> DataFrame:
    return df.where(day_col < F.lit(day))


def test_a_night_killed_at_each_commit_hides_the_dates_it_rewrites_and_the_rerun_publishes_them(
    spark: SparkSession, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup(spark, cfg)
    assert _published(spark, cfg) == [(D0, "s:history"), (D1, "s:history")]
    before = _views(spark, cfg)
    for view in VIEWS:  # everything is published: the views are the tables
        assertDataFrameEqual(before[view], tables.read(spark, cfg.table(view)))
    ended = F.to_date("session_end")
    # Readers keep seeing 02-10 (b1, its session) while the night rewrites a2's session, which started
    # on 02-11: from the first commit on, 02-11 and 02-12 are hidden until the last.
    shown = {v: spark.createDataFrame(before[v], spark.table(v).schema) for v in VIEWS}
    still_shown = {
        "silver_events": _before(shown["silver_events"], F.col("event_date"), D1),
        "silver_sessions": _before(shown["silver_sessions"], ended, D1),
    }
    assert [r.event_id for r in still_shown["silver_events"].collect()] == ["b1"]
    for k in range(1, COMMITS + 1):
        _killed_before(k, spark, cfg, monkeypatch)
        seen = _views(spark, cfg)
        for view in VIEWS:
            if k == 1:  # nothing committed: the views show what they showed
                assertDataFrameEqual(seen[view], before[view])
            else:  # the night's dates hidden, the older ones exactly as before
                assertDataFrameEqual(seen[view], still_shown[view])
    assert tables.read(spark, cfg.table("silver_events")).where("event_id = 'a3'").count() == 1  # written
    _night(spark, cfg)  # the rerun to the end
    assert _published(spark, cfg) == [(D0, "s:history"), (D1, "s:night"), (D2, "s:night")]
    after = _views(spark, cfg)
    for view in VIEWS:
        assertDataFrameEqual(after[view], tables.read(spark, cfg.table(view)))
    a = [r for r in after["silver_sessions"] if r.user_id == "u1" and r.session_start.hour == 23]
    assert [(r.n_events, r.session_end.date()) for r in a] == [(2, D2)]  # a2 + a3, across midnight


def test_a_silver_written_before_the_published_dates_gets_its_other_dates_published(
    spark: SparkSession, cfg: Config
) -> None:
    _setup(spark, cfg)
    shutil.rmtree(cfg.table("silver_published_dates"))  # as a silver of an older release
    assert _views(spark, cfg) == {"silver_events": [], "silver_sessions": []}  # nothing published yet
    _night(spark, cfg)
    assert _published(spark, cfg) == [(D0, "s:history"), (D1, "s:night"), (D2, "s:night")]
    after = _views(spark, cfg)
    for view in VIEWS:
        assertDataFrameEqual(after[view], tables.read(spark, cfg.table(view)))
