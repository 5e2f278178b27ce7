"""Purchase-based price sensitivity: the documented formula, shrinkage, recency, no leakage, nulls, sign."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from shopformer.features.price_sensitivity import (
    PurchaseSensitivitySettings,
    from_events,
    priced_purchases,
    purchase_sensitivity,
)

T = dt.date(2024, 3, 1)
PRICED = "source string, user_id string, event_type string, event_date date, quantity int, rel_price double"
EVENTS = (
    "source string, user_id string, event_type string, event_date date, item_id string, price double, "
    "quantity int, regular_price double"
)
OUT = "source string, user_id string, as_of_date date, n_priced_purchases int, discount_share double, "
OUT += "price_elasticity double"
PLAIN = PurchaseSensitivitySettings(half_life_days=None)  # no recency weighting: counts are lines


def _lines(user: str, n: int, below: int, *, day: dt.date = T - dt.timedelta(days=3)) -> list[tuple]:
    """``n`` one-unit purchases of ``user`` on ``day``, the first ``below`` at 80 % of the regular price."""
    return [("s", user, "purchase", day, 1, 0.8 if i < below else 1.0) for i in range(n)]


def _documented(users: dict[str, tuple[int, int]]) -> list[tuple]:
    """The formula of docs/model.md, in plain Python: (k below of n lines) per user -> expected rows."""
    k_all, n_all = sum(k for k, _ in users.values()), sum(n for _, n in users.values())
    m = k_all / n_all
    shares = [k / n for k, n in users.values()]
    spread = sum((p - m) ** 2 for p in shares) / len(shares)
    h = sum(1 / n for _, n in users.values()) / len(users)
    tau2 = (spread - m * (1 - m) * h) / (1 - h)
    prior = m * (1 - m) / tau2 - 1
    rows = []
    for user, (k, n) in users.items():
        share = (k + m * prior) / (n + prior)
        rows.append(("s", user, T, n, share, -share / m))
    return rows


def test_shares_are_shrunk_toward_the_population_as_documented(spark: SparkSession) -> None:
    users = {"few": (2, 2), "many": (20, 20), "never": (0, 20), "half": (5, 10)}
    rows = [r for u, (k, n) in users.items() for r in _lines(u, n, k)]
    got = purchase_sensitivity(spark.createDataFrame(rows, PRICED), as_of_dates=[T], s=PLAIN)
    rows_got = got.collect()  # one Spark job: compared, then read
    assertDataFrameEqual(rows_got, spark.createDataFrame(_documented(users), OUT).collect(), rtol=1e-9)
    share = {r["user_id"]: r["discount_share"] for r in rows_got}
    m = 27 / 52
    # Same raw share (all bought on discount), fewer purchases -> pulled further toward the population.
    assert m < share["few"] < share["many"] < 1.0
    assert 0.0 < share["never"] < m


def test_older_purchases_and_bulk_lines_weigh_less(spark: SparkSession) -> None:
    old, new = T - dt.timedelta(days=150), T - dt.timedelta(days=2)
    recent_deals = _lines("recent", 4, 4, day=new) + _lines("recent", 4, 0, day=old)
    old_deals = _lines("old", 4, 4, day=old) + _lines("old", 4, 0, day=new)
    bulk = [("s", "bulk", "purchase", new, 50, 0.8), *_lines("bulk", 10, 0, day=new)]
    rows = recent_deals + old_deals + bulk + _lines("other", 8, 2)
    s = PurchaseSensitivitySettings(half_life_days=30.0, max_units=5)
    share = {
        r["user_id"]: r["discount_share"]
        for r in purchase_sensitivity(spark.createDataFrame(rows, PRICED), as_of_dates=[T], s=s).collect()
    }
    assert share["recent"] > share["old"]
    # 50 units on discount count as 5 next to 10 full-price units: a third, not 5/6.
    capped = purchase_sensitivity(
        spark.createDataFrame(bulk, PRICED), as_of_dates=[T], s=PurchaseSensitivitySettings()
    )
    assert abs(capped.first()["discount_share"] - 5 / 15) < 1e-9  # one user: no prior, its own rate


def _shop(days: list[tuple[str, int, float]]) -> list[tuple]:
    """(user, day offset from T, price) purchases of item i1, after 30 days of it at the regular 10.0."""
    regular = [("s", "r", "purchase", T - dt.timedelta(days=40 - d), "i1", 10.0, 1, None) for d in range(30)]
    return regular + [("s", u, "purchase", T + dt.timedelta(days=d), "i1", p, 1, None) for u, d, p in days]


def test_nothing_at_or_after_t_changes_the_score(spark: SparkSession) -> None:
    """Scored with a later date too (its events are read, and move reference prices from T on), or with
    purchases at and after T added: the rows of T stay those of the events before T alone."""
    before = [("a", -5, 8.0), ("a", -4, 10.0), ("b", -3, 10.0), ("b", -2, 10.0), ("c", -1, 7.0)]
    later = [("a", 0, 2.0), ("b", 0, 3.0), ("d", 1, 1.0), ("r", 0, 99.0), ("b", 5, 4.0), ("c", 6, 12.0)]
    s = PurchaseSensitivitySettings(reference_days=28)
    alone = from_events(spark.createDataFrame(_shop(before), EVENTS), as_of_dates=[T], s=s)
    events = spark.createDataFrame(_shop(before + later), EVENTS)
    both = from_events(events, as_of_dates=[T, T + dt.timedelta(days=7)], s=s)
    both_rows, alone_rows = both.collect(), alone.collect()
    assertDataFrameEqual([r for r in both_rows if r["as_of_date"] == T], alone_rows)
    assert {r["user_id"] for r in alone_rows} == {"a", "b", "c", "r"}
    assert sum(r["as_of_date"] > T for r in both_rows) == 5  # d joins, the others move


def test_no_prices_or_no_discounts_anywhere_give_no_number(spark: SparkSession) -> None:
    day = T - dt.timedelta(days=2)
    rows = [
        *_shop([("a", -3, 8.0), ("b", -2, 10.0)]),
        ("s", "unpriced", "purchase", day, "i1", None, 1, None),
        ("s", "new_item", "purchase", day, "i9", 5.0, 1, None),  # no regular price yet
        ("s", "viewer", "view", day, "i1", 6.0, 1, None),
    ]
    got = from_events(spark.createDataFrame(rows, EVENTS), as_of_dates=[T], s=PLAIN)
    assert sorted(r["user_id"] for r in got.collect()) == ["a", "b", "r"]
    flat = from_events(spark.createDataFrame(_shop([("b", -2, 10.0)]), EVENTS), as_of_dates=[T], s=PLAIN)
    assert [r["price_elasticity"] for r in flat.collect()] == [None, None]  # nobody ever paid less


def test_elasticity_is_negative_and_more_negative_for_more_discount_buying(spark: SparkSession) -> None:
    users = {"deals": (9, 10), "some": (5, 10), "rare": (1, 10), "none": (0, 30)}
    rows = [r for u, (k, n) in users.items() for r in _lines(u, n, k)]
    got = purchase_sensitivity(spark.createDataFrame(rows, PRICED), as_of_dates=[T], s=PLAIN).collect()
    e = {r["user_id"]: r["price_elasticity"] for r in got}
    assert e["deals"] < e["some"] < e["rare"] < e["none"] < 0
    for r in got:  # -1 = as often on discount as the population (15 of 60 lines)
        assert abs(r["price_elasticity"] - -r["discount_share"] / (15 / 60)) < 1e-9


def test_the_lines_own_regular_price_comes_first_and_the_estimate_fills_in(spark: SparkSession) -> None:
    """rel_price = price / the line's ``regular_price`` where the source states it, else / the estimate
    (10.0 for i1 here: its highest daily median price); a stated regular price of 0 prices nothing."""
    day = T - dt.timedelta(days=2)
    rows = [
        *_shop([]),
        ("s", "shelf_says_deal", "purchase", day, "i1", 10.0, 1, 12.5),  # the estimate would say 1.0
        ("s", "shelf_says_full", "purchase", day, "i1", 8.0, 1, 8.0),  # the estimate would say 0.8
        ("s", "estimate", "purchase", day, "i1", 8.0, 1, None),
        ("s", "new_item", "purchase", day, "i9", 4.5, 1, 5.0),  # no estimate yet: the shelf price does it
        ("s", "free", "purchase", day, "i1", 0.0, 1, 0.0),
    ]
    got = priced_purchases(spark.createDataFrame(rows, EVENTS), reference_days=28).where("user_id != 'r'")
    want = [("shelf_says_deal", 0.8), ("shelf_says_full", 1.0), ("estimate", 0.8), ("new_item", 0.9)]
    assertDataFrameEqual(
        got.select("user_id", "rel_price"), spark.createDataFrame(want, "user_id string, rel_price double")
    )
