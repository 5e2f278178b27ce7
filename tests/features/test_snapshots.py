"""Point-in-time snapshots: relative prices, vocabularies, sequences, aggregates, labels, no leakage."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer.features.aggregates import AggregateSettings, user_features
from shopformer.features.prices import with_relative_price
from shopformer.features.sequences import last_events
from shopformer.features.snapshots import SnapshotSettings, build_snapshots
from shopformer.features.vocab import apply_vocab, build_vocab
from shopformer.sessions.transforms import assign_sessions
from tests.factories import catalog_events

D = dt.date.fromisoformat
BUCKETS = 2  # hashed ids 2..3, frequent ids from 4


def silver(spark: SparkSession, rows: list[tuple]) -> DataFrame:
    """Catalog rows -> sessionized events (the real transform, empty carry-in)."""
    events = catalog_events(spark, rows)
    carry = spark.createDataFrame(
        [], "source string, user_id string, event_time timestamp, event_id string, session_start timestamp"
    )
    return events.transform(assign_sessions, carry_in=carry, gap_minutes=30, run_id="t")


def vocab_of(events: DataFrame) -> DataFrame:
    return build_vocab(
        events,
        version="v1",
        min_count=1,
        hash_buckets=BUCKETS,
        max_size={"item": 100, "category": 100, "brand": 100},
    )


def prepared(events: DataFrame, vocab: DataFrame | None = None) -> DataFrame:
    """Silver events + relative price + vocabulary ids: the input of build_snapshots."""
    vocab = vocab_of(events) if vocab is None else vocab
    out = events.transform(with_relative_price, reference_days=28)
    for kind, col in {"item": "item_id", "category": "category", "brand": "brand"}.items():
        out = out.transform(
            apply_vocab, vocab, kind=kind, column=col, out=f"{kind}_idx", hash_buckets=BUCKETS
        )
    return out


# ---------------------------------------------------------------------------------- prices


def test_relative_price_uses_only_days_before_the_event(spark: SparkSession) -> None:
    rows = [
        ("u", "2024-01-01 10:00", "view", "i1", 10.0),  # first day of the item: no reference yet
        ("u", "2024-01-01 11:00", "view", "i1", 12.0),  # day median 11
        ("u", "2024-01-02 10:00", "view", "i1", 8.8),  # promotion: 8.8 / 11
        ("u", "2024-01-03 10:00", "view", "i1", 11.0),  # reference still the max of 11 and 8.8
        ("u", "2024-02-20 10:00", "view", "i1", 9.0),  # nothing in the 28 days before: no reference
        ("u", "2024-01-02 12:00", "view", "i2", None),  # unpriced event
    ]
    got = catalog_events(spark, rows).transform(with_relative_price, reference_days=28)
    expected = spark.createDataFrame(
        [
            ("e00000", None),
            ("e00001", None),
            ("e00002", 0.8),
            ("e00003", 1.0),
            ("e00004", None),
            ("e00005", None),
        ],
        "event_id string, rel_price double",
    )
    assertDataFrameEqual(got.select("event_id", F.round("rel_price", 6).alias("rel_price")), expected)


# ---------------------------------------------------------------------------------- vocabularies


def test_vocab_ranks_by_frequency_and_hashes_rare_and_unseen_tokens(spark: SparkSession) -> None:
    rows = [
        ("u", f"2024-01-01 10:0{n}", "view", item, 1.0, cat)
        for n, (item, cat) in enumerate(
            [("a1", "x"), ("a1", "x"), ("a1", None), ("b1", "x"), ("b1", "y"), ("c1", "x")]
        )
    ]
    events = catalog_events(spark, rows)
    vocab = build_vocab(
        events, version="v1", min_count=2, hash_buckets=4, max_size={"item": 1, "category": 10, "brand": 10}
    )
    assertDataFrameEqual(
        vocab.select("kind", "token", "id", "count"),
        spark.createDataFrame(
            [("item", "a1", 6, 3), ("category", "x", 6, 4), ("brand", "a", 6, 3), ("brand", "b", 7, 2)],
            "kind string, token string, id int, count long",
        ),
    )
    probe = spark.createDataFrame(
        [("a1", None), ("b1", "x"), ("c1", "y"), ("never-seen", "z")], "item_id string, category string"
    )
    got = probe.transform(
        apply_vocab, vocab, kind="item", column="item_id", out="i", hash_buckets=4
    ).transform(apply_vocab, vocab, kind="category", column="category", out="c", hash_buckets=4)
    ids = {r["item_id"]: (r["i"], r["c"]) for r in got.collect()}
    assert ids["a1"] == (6, 1)  # frequent item; missing category -> 1
    assert ids["b1"][1] == 6  # frequent category
    # b1 is cut by max_size, c1 by min_count, the last never seen: all land in the hashed range 2..5.
    assert all(2 <= ids[t][0] <= 5 for t in ("b1", "c1", "never-seen"))
    again = probe.transform(apply_vocab, vocab, kind="item", column="item_id", out="i", hash_buckets=4)
    assert {r["item_id"]: r["i"] for r in again.collect()} == {t: v[0] for t, v in ids.items()}


# ---------------------------------------------------------------------------------- sequences

SEQ_ROWS = [
    ("u1", "2024-01-01 10:00:00", "view", "i1", 5.0),
    ("u1", "2024-01-02 11:00:00", "cart", "i1", 5.0),
    ("u1", "2024-01-02 12:00:00", "purchase", "i1", 5.0),
    ("u1", "2024-01-02 23:59:59", "view", "i2", 7.0),
    ("u1", "2024-01-03 00:00:00", "view", "i3", 9.0),  # exactly at the first as-of date: not before it
    ("u1", "2024-01-04 08:00:00", "view", "i2", 7.0),
    ("u2", "2024-01-04 09:00:00", "view", "i2", 7.0),  # no history before the first as-of date
    ("u3", "2024-01-06 09:00:00", "view", "i1", 5.0),  # after every as-of date
]


def test_last_events_edge_cases(spark: SparkSession) -> None:
    events = prepared(silver(spark, SEQ_ROWS))  # item ids by frequency: i1=4, i2=5, i3=6
    got = events.transform(last_events, as_of_dates=[D("2024-01-03"), D("2024-01-05")], max_len=3)
    expected = spark.createDataFrame(
        [
            ("u1", D("2024-01-03"), 3, [4, 4, 5], [2, 4, 1], [12, 13, 24]),  # the last 3 of 4
            ("u1", D("2024-01-05"), 3, [5, 6, 5], [1, 1, 1], [24, 1, 9]),
            ("u2", D("2024-01-05"), 1, [0, 0, 5], [0, 0, 1], [0, 0, 10]),  # left-padded with 0
        ],
        "user_id string, as_of_date date, seq_len int, seq_item array<int>, seq_event_type array<int>, "
        "seq_hour array<int>",
    )
    cols = ["user_id", "as_of_date", "seq_len", "seq_item", "seq_event_type", "seq_hour"]
    assertDataFrameEqual(got.select(*cols), expected)


def random_rows(seed: int, users: int = 12, n: int = 400, days: int = 40) -> list[tuple]:
    """A small random shop: users browse, cart and buy a handful of items at varying prices."""
    rnd = random.Random(seed)
    start = dt.datetime(2024, 1, 1)
    rows = []
    for _ in range(n):
        t = start + dt.timedelta(seconds=rnd.randrange(days * 86400))
        item = f"i{rnd.randrange(15)}"
        etype = rnd.choice(["view"] * 6 + ["cart", "purchase"])
        price = round(10 * (1 + int(item[1:])) * rnd.choice([1.0, 1.0, 0.8]), 2)
        rows.append(
            (f"u{rnd.randrange(users)}", t.isoformat(sep=" "), etype, item, price, f"c{int(item[1:]) % 4}")
        )
    return rows


def test_many_as_of_dates_in_one_pass_equal_one_date_at_a_time(spark: SparkSession) -> None:
    events = prepared(silver(spark, random_rows(seed=3))).cache()
    dates = [D("2024-01-05"), D("2024-01-12"), D("2024-01-19"), D("2024-01-26")]
    together = events.transform(last_events, as_of_dates=dates, max_len=8)
    one_by_one = [events.transform(last_events, as_of_dates=[d], max_len=8) for d in dates]
    union = one_by_one[0].unionByName(one_by_one[1]).unionByName(one_by_one[2]).unionByName(one_by_one[3])
    assertDataFrameEqual(together, union)
    assert together.where(F.col("seq_len") == 8).count() > 0  # some sequences were cut to the last 8


# ---------------------------------------------------------------------------------- aggregates, labels

AGG = AggregateSettings(windows_days=(7, 30), population_days=60, churn_active_days=30)
T = D("2024-01-10")
AGG_ROWS = [
    ("u1", "2023-12-20 10:00", "purchase", "i1", 10.0),  # 21 days before T
    ("u1", "2024-01-05 10:00", "view", "i1", 10.0),
    ("u1", "2024-01-05 10:10", "purchase", "i1", 8.0),  # at a discount: 8 / 10
    ("u2", "2024-01-09 23:50", "view", "i2", 5.0),  # a session spanning T ...
    ("u2", "2024-01-10 00:05", "purchase", "i2", 5.0),  # ... whose purchase is at T: a label, not a feature
    ("u3", "2023-10-01 10:00", "view", "i2", 5.0),  # inactive for longer than population_days
    ("u1", "2024-02-15 10:00", "view", "i1", 10.0),  # u1 comes back after the churn window
]


def features(spark: SparkSession, cutoff: dt.date) -> DataFrame:
    events = prepared(silver(spark, AGG_ROWS))
    return events.transform(user_features, as_of_dates=[T], s=AGG, label_cutoff=cutoff)


def test_window_aggregates_and_a_session_spanning_the_as_of_date(spark: SparkSession) -> None:
    got = features(spark, cutoff=T).select(
        "user_id",
        "n_events_7d",
        "n_events_30d",
        "n_purchases_30d",
        "revenue_30d",
        "n_sessions_7d",
        "tenure_days",
        F.round("recency_days", 4).alias("recency_days"),
        "discount_purchase_share",
        "label_propensity",
        "label_churn",
    )
    expected = spark.createDataFrame(
        [
            ("u1", 2, 3, 2, 18.0, 1, 21, round(4 + 14 / 24 - 10 / 1440, 4), 1.0, None, None),
            ("u2", 1, 1, 0, 0.0, 1, 1, round(10 / 1440, 4), None, None, None),
        ],
        "user_id string, n_events_7d int, n_events_30d int, n_purchases_30d int, revenue_30d double, "
        "n_sessions_7d int, tenure_days int, recency_days double, discount_purchase_share double, "
        "label_propensity int, label_churn int",
    )
    assertDataFrameEqual(got, expected)


@pytest.mark.parametrize(
    ("cutoff", "labels"),
    [
        (D("2024-01-16"), {"u1": (None, None), "u2": (None, None)}),  # T + 7d not yet passed
        (D("2024-01-17"), {"u1": (0, None), "u2": (1, None)}),  # propensity window complete
        (D("2024-02-09"), {"u1": (0, 1), "u2": (1, 0)}),  # churn window complete too
    ],
)
def test_labels_appear_only_once_their_window_has_passed(
    spark: SparkSession, cutoff: dt.date, labels: dict[str, tuple]
) -> None:
    got = features(spark, cutoff).select("user_id", "label_propensity", "label_churn").collect()
    assert {r["user_id"]: (r["label_propensity"], r["label_churn"]) for r in got} == labels


# ---------------------------------------------------------------------------------- no leakage

SETTINGS = SnapshotSettings(max_len=6, price_max_views=5, aggregates=AggregateSettings(windows_days=(3, 10)))
AS_OF = D("2024-01-21")
LABELS = ["label_propensity", "label_churn", "price_n_views", "price_item", "price_rel_price", "price_bought"]


def snapshot(spark: SparkSession, rows: list[tuple], vocab: DataFrame, cutoff: dt.date) -> DataFrame:
    events = prepared(silver(spark, rows), vocab)
    return build_snapshots(
        events,
        as_of_dates=[AS_OF, AS_OF + dt.timedelta(days=7)],
        s=SETTINGS,
        label_cutoff=cutoff,
        vocab_version="v1",
        run_id="t",
    )


def tamper(rows: list[tuple], since: dt.datetime, seed: int) -> list[tuple]:
    """Delete, reprice, retype and add events at or after ``since``; keep everything before it."""
    rnd = random.Random(seed)
    out = []
    for user, when, etype, item, price, cat in rows:
        if dt.datetime.fromisoformat(when) < since:
            out.append((user, when, etype, item, price, cat))
        elif rnd.random() < 0.7:
            out.append((user, when, rnd.choice(["purchase", "cart", "view"]), item, price * 3, cat))
    extra = [(f"u{n % 15}", since.isoformat(sep=" "), "purchase", f"i{n}", 99.0, "c9") for n in range(8)]
    return out + extra


@pytest.mark.integration  # three whole snapshot builds over a random shop
def test_a_snapshot_does_not_change_when_events_at_or_after_the_as_of_date_change(
    spark: SparkSession,
) -> None:
    rows = random_rows(seed=11, users=15, n=600, days=45)
    since = dt.datetime.combine(AS_OF, dt.time())
    vocab = vocab_of(
        catalog_events(spark, [r for r in rows if dt.datetime.fromisoformat(r[1]) < since])
    ).cache()
    before = snapshot(spark, rows, vocab, cutoff=D("2024-03-01")).where(F.col("as_of_date") == AS_OF)
    after = snapshot(spark, tamper(rows, since, seed=1), vocab, cutoff=D("2024-03-01")).where(
        F.col("as_of_date") == AS_OF
    )
    assert before.count() >= 10
    assertDataFrameEqual(after.drop(*LABELS), before.drop(*LABELS))
    # The labels did see the tampering (so the comparison above could have failed), ...
    changed = before.select("user_id", *LABELS).subtract(after.select("user_id", *LABELS))
    assert changed.count() > 0
    # ... and they depend on [T, T+H) only: tampering after the longest horizon changes no row at all.
    late = since + dt.timedelta(days=31)
    untouched = snapshot(spark, tamper(rows, late, seed=2), vocab, cutoff=D("2024-03-01"))
    assertDataFrameEqual(untouched.where(F.col("as_of_date") == AS_OF), before)


# ---------------------------------------------------------------------------------- transactions only


@pytest.mark.integration  # two whole snapshot builds
def test_a_transactions_only_source_gets_purchase_sequences_and_no_price_labels(spark: SparkSession) -> None:
    rows = [r for r in random_rows(seed=5, users=6, n=200, days=45) if r[2] == "purchase"]
    got = snapshot(spark, rows, vocab_of(catalog_events(spark, rows)), cutoff=D("2024-03-01")).cache()
    assert got.count() > 0
    assert got.where(F.exists("seq_event_type", lambda t: (t != 0) & (t != 4))).count() == 0
    assert got.where(F.col("price_n_views").isNotNull() | F.col("view_to_cart_rate").isNotNull()).count() == 0
    assert got.where(F.col("label_propensity").isNull()).count() == 0


# ---------------------------------------------------------------------------------- sparse shop shape


def test_many_users_many_dates_few_events_each_match_an_independent_count(spark: SparkSession) -> None:
    """The shape of a real transactions file that stalled the build at scale (issue 15: 23,570 customers,
    ~3 lines each, 39 weekly dates): every date's population and propensity labels, counted in Python."""
    rnd = random.Random(11)
    start, cutoff = dt.date(2024, 1, 1), D("2024-05-20")
    rows = []
    for u in range(240):  # 1-3 events each, at noon on random days of 140
        for _ in range(rnd.randint(1, 3)):
            day = start + dt.timedelta(days=rnd.randrange(140))
            etype = rnd.choice(["view", "purchase"])
            rows.append((f"u{u:03d}", f"{day} 12:00", etype, f"i{rnd.randrange(9)}", 10.0))
    dates = [D("2024-01-08") + dt.timedelta(days=7 * i) for i in range(20)]
    agg = AggregateSettings(windows_days=(7, 30), population_days=60, churn_active_days=30)
    got = build_snapshots(
        prepared(silver(spark, rows)),
        as_of_dates=dates,
        s=SnapshotSettings(max_len=4, price_max_views=3, aggregates=agg),
        label_cutoff=cutoff,
        vocab_version="v1",
        run_id="t",
    ).select("user_id", "as_of_date", "label_propensity")
    days = {(u, D(t[:10]), e) for u, t, e, *_ in rows}
    expected = []
    for t in dates:
        for u in sorted({u for u, d, _ in days if t - dt.timedelta(days=60) <= d < t}):
            bought = any(x == u and e == "purchase" and t <= d < t + dt.timedelta(days=7) for x, d, e in days)
            ready = t + dt.timedelta(days=7) <= cutoff
            expected.append((u, t, int(bought) if ready else None))
    schema = "user_id string, as_of_date date, label_propensity int"
    assertDataFrameEqual(got, spark.createDataFrame(expected, schema))
    assert len(expected) > 1500 and len({d for _, d, _ in expected}) == 20
