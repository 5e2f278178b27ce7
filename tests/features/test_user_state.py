"""Nightly snapshots through gold.user_state equal the full recompute, night after night.

One small shop lands day by day into a real silver.events (Delta) the way sessionize writes it (a late
event rewrites its date and every later one); after each nightly ``build_snapshots`` run, the snapshot it
wrote must equal the range build's recompute from all of silver (``encoded_snapshots``), row for row.
"""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.features import job
from shopformer.features.aggregates import AggregateSettings
from shopformer.features.prices import with_relative_price
from shopformer.features.snapshots import SnapshotSettings, build_snapshots
from shopformer.features.state import advance_state, bootstrap_state, snapshot_from_state, state_events
from shopformer.features.vocab import apply_vocab, build_vocab
from shopformer.schemas import GOLD_VOCABULARIES, SILVER_EVENTS
from shopformer.sessions.transforms import assign_sessions
from tests.factories import catalog_events

D = dt.date.fromisoformat
CONF = [
    "snapshots.max_len=3",
    "snapshots.windows_days=[2, 4]",
    "snapshots.population_days=10",
    "snapshots.reference_price_days=3",
    "snapshots.state_retention_days=2",
    "vocab.min_count=1",
    "vocab.hash_buckets=2",
]
# (user, time, type, item, price, category); an event's id is its position: append, never insert.
HISTORY = [
    ("u4", "2023-12-26 09:00:00", "view", "i1", 10.0, "c1"),  # out of the 10-day population
    ("u1", "2023-12-28 10:00:00", "view", "i1", 10.0, "c1"),
    ("u1", "2024-01-02 10:00:00", "cart", "i1", 10.0, "c1"),
    ("u1", "2024-01-02 10:05:00", "purchase", "i1", 10.0, "c1"),
    ("u2", "2024-01-02 11:00:00", "view", "i2", 20.0, "c2"),
    ("u2", "2024-01-03 23:59:59", "view", "i2", 18.0, "c2"),  # T - 5 days for T = 01-08: out of 4d
    ("u1", "2024-01-03 08:00:00", "view", "i2", 20.0, "c2"),
    ("u2", "2024-01-04 00:00:00", "purchase", "i2", 16.0, "c2"),  # exactly T - 4 days: in the 4d window
    ("u1", "2024-01-04 12:00:00", "view", "i3", 5.0, None),
    ("u1", "2024-01-05 13:00:00", "purchase", "i2", 19.0, "c2"),
    ("u2", "2024-01-05 20:00:00", "view", "i1", 9.0, "c1"),
    ("u2", "2024-01-06 09:00:00", "view", "i2", 20.0, "c2"),
    ("u1", "2024-01-06 10:00:00", "view", "i1", 10.0, "c1"),
    # day 01-07: u1 has more events than max_len, the last in a session spanning midnight; u3 is new
    ("u1", "2024-01-07 10:00:00", "view", "i1", 10.0, "c1"),
    ("u1", "2024-01-07 10:01:00", "view", "i2", 20.0, "c2"),
    ("u1", "2024-01-07 10:02:00", "cart", "i2", 20.0, "c2"),
    ("u1", "2024-01-07 10:03:00", "purchase", "i2", 20.0, "c2"),
    ("u1", "2024-01-07 10:04:00", "view", "i3", 4.0, "c3"),
    ("u1", "2024-01-07 23:50:00", "view", "i1", 10.0, "c1"),
    ("u3", "2024-01-07 09:00:00", "view", "i3", 5.0, "c3"),
    ("u3", "2024-01-07 09:01:00", "purchase", "i3", 5.0, "c3"),
    ("u2", "2024-01-07 10:00:00", "view", "i2", 20.0, "c2"),
    # day 01-08
    ("u1", "2024-01-08 00:05:00", "view", "i3", 5.0, "c3"),
    ("u3", "2024-01-08 08:00:00", "view", "i1", 10.0, "c1"),
]
# Lands with day 01-07, dated 01-06: u4 is back, and i1's price that day (so its reference on 01-07) moves.
LATE = [("u4", "2024-01-06 15:00:00", "purchase", "i1", 30.0, "c1")]


def sessionized(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """Catalog rows as silver.events (the real sessionize transform, no carry-in)."""
    carry = spark.createDataFrame(
        [], "source string, user_id string, event_time timestamp, event_id string, session_start timestamp"
    )
    return catalog_events(spark, rows).transform(assign_sessions, carry_in=carry, gap_minutes=30, run_id="t")


def land(spark: SparkSession, cfg: Config, rows: list[tuple], until: dt.date, since: dt.date) -> None:
    """silver.events for the events before ``until``, rewritten from ``since`` on (as sessionize does
    from the first date its run touched)."""
    silver = sessionized(spark, rows).where(F.col("event_date") < until)
    tables.replace_where(
        silver.where(F.col("event_date") >= since),
        cfg.table("silver_events"),
        predicate=f"event_date >= DATE'{since}'",
        schema=SILVER_EVENTS,
        partition_by=["event_date"],
        run_id="t",
    )


def night(spark: SparkSession, cfg: Config, day: str) -> tuple[job.SnapshotReport, DataFrame]:
    """``build_snapshots --run-date day``; its report and the snapshot rows it wrote."""
    report = job.run(spark, cfg, start=D(day), end=D(day), run_id=f"night:{day}")
    written = tables.read(spark, cfg.table("gold_user_snapshots")).where(F.col("as_of_date") == D(day))
    return report, written


def assert_equals_full_recompute(spark: SparkSession, cfg: Config, day: str, written: DataFrame) -> None:
    full = job.encoded_snapshots(spark, cfg, dates=[D(day)], vocab_version="v1", run_id=f"night:{day}")
    assert written.count() > 0
    assertDataFrameEqual(written, full)


SETTINGS = SnapshotSettings(
    max_len=3, aggregates=AggregateSettings(windows_days=(2, 4), population_days=10, churn_active_days=4)
)


def with_ids(events: DataFrame, vocab: DataFrame) -> DataFrame:
    for kind, col in {"item": "item_id", "category": "category", "brand": "brand"}.items():
        events = events.transform(
            apply_vocab, vocab, kind=kind, column=col, out=f"{kind}_idx", hash_buckets=2
        )
    return events


def test_rolling_the_state_forward_equals_building_it_from_the_history(spark: SparkSession) -> None:
    """The pure transforms, no tables: the state of 01-07 plus the events of 01-07 (u1 has more than
    max_len of them, u3 appears) equals the state of 01-08 built from all history, and the snapshot built
    from it equals the range build's, windows' edges included (u2 bought at exactly T - 4 days)."""
    events = sessionized(spark, HISTORY).transform(with_relative_price, reference_days=3).cache()
    a, kw = SETTINGS.aggregates, {"max_len": 3, "silver_version": 0, "run_id": "t"}
    day, t = D("2024-01-07"), D("2024-01-08")
    before = bootstrap_state(events, as_of_date=day, s=a, **kw)
    state = advance_state(before, events.where(F.col("event_date") == day), day=day, s=a, **kw).cache()
    assertDataFrameEqual(state, bootstrap_state(events, as_of_date=t, s=a, **kw))
    sizes = {"item": 9, "category": 9, "brand": 9}
    vocab = build_vocab(events, version="v1", min_count=1, hash_buckets=2, max_size=sizes)
    lineage = {"label_cutoff": day, "vocab_version": "v1", "run_id": "t"}
    encoded = with_ids(state_events(state, as_of_date=t, population_days=10), vocab)
    got = snapshot_from_state(state, encoded, as_of_date=t, s=SETTINGS, **lineage).collect()
    assertDataFrameEqual(
        got, build_snapshots(with_ids(events, vocab), as_of_dates=[t], s=SETTINGS, **lineage)
    )
    u2 = next(r for r in got if r["user_id"] == "u2")
    assert (u2["n_events_4d"], u2["n_purchases_4d"], u2["n_events_2d"]) == (4, 1, 2)
    assert sorted((r["user_id"], r["seq_len"]) for r in got) == [("u1", 3), ("u2", 3), ("u3", 2)]


@pytest.fixture
def shop(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Config:
    cfg = load_config("local", [f"paths.root={tmp_path_factory.mktemp('state')}", *CONF])
    v = cfg.settings.vocab
    vocab = build_vocab(
        catalog_events(spark, HISTORY + LATE),
        version="v1",
        min_count=v.min_count,
        hash_buckets=v.hash_buckets,
        max_size=v.max_size,
    )
    tables.overwrite(vocab, cfg.table("gold_vocabularies"), schema=GOLD_VOCABULARIES, run_id="t")
    return cfg


@pytest.mark.integration  # seven whole build_snapshots runs (four nights, three full recomputes)
def test_nightly_state_equals_the_full_recompute_across_late_events_and_reruns(
    spark: SparkSession, shop: Config
) -> None:
    cfg = shop
    # First night: no state yet -> built from the whole history once.
    land(spark, cfg, HISTORY, until=D("2024-01-06"), since=D("2023-12-01"))
    report, written = night(spark, cfg, "2024-01-06")
    assert (report.path, report.night_events_read, written.count()) == ("bootstrap", 11, 2)

    # A normal night: the state of T-1 plus the events of T-1.
    land(spark, cfg, HISTORY, until=D("2024-01-07"), since=D("2024-01-06"))
    report, written = night(spark, cfg, "2024-01-07")
    assert (report.path, report.state_from, report.days_replayed) == ("incremental", "2024-01-06", 1)
    assert report.night_events_read == 2
    assert_equals_full_recompute(spark, cfg, "2024-01-07", written)
    assert written.count() == 2  # u1, u2: u4 is out of the population, u3 not yet in

    # The next night brings a late event dated two days back: replayed from the stored state of its date
    # (u1 has more than max_len events that day, u3 is new). Windows: u2's purchase at exactly T - 4 days
    # is in the 4-day window, the view a second before it is not.
    land(spark, cfg, HISTORY + LATE, until=D("2024-01-08"), since=D("2024-01-06"))
    report, written = night(spark, cfg, "2024-01-08")
    assert (report.path, report.state_from, report.days_replayed) == ("incremental", "2024-01-06", 2)
    assert report.night_events_read == 3 + 9  # days 01-06 (with the late event) and 01-07
    assert_equals_full_recompute(spark, cfg, "2024-01-08", written)
    u2 = written.where(F.col("user_id") == "u2").first()
    assert (u2["n_events_4d"], u2["n_purchases_4d"], u2["n_events_2d"]) == (4, 1, 2)

    kept = tables.read(spark, cfg.table("gold_user_state")).select("as_of_date").distinct().collect()
    assert sorted(str(r[0]) for r in kept) == ["2024-01-07", "2024-01-08"]  # 2 days kept

    # A rerun of the older night 01-07: the state of 01-06 is gone, so the state of 01-07 is rebuilt from
    # the whole history (and the late event counts now).
    report, written = night(spark, cfg, "2024-01-07")
    assert (report.path, report.night_events_read) == ("bootstrap", 14)
    assert_equals_full_recompute(spark, cfg, "2024-01-07", written)
    assert written.count() == 3  # u4 is back
