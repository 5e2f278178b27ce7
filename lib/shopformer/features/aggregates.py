"""User aggregates and labels at many as-of dates in one pass: daily rows, running sums, as-of lookups.

Every windowed count over ``[T-w, T)`` is a difference of two running sums: the user's cumulative total
up to day ``T-1`` minus the total up to day ``T-w-1``. So the events are reduced once to one row per
(user, active day) with running sums, and each (user, T, offset) *query* row picks up the latest running
sum at or before its day, by a single window over the union of both (an as-of join without a range join).
Labels use the same lookups at ``T+H-1``. Offsets before T only read days before T: no leakage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shopformer.features.sequences import dates_array
from shopformer.schemas import RUNNING_SUMS, RUNNING_TOTALS, USER_KEYS, require_columns

KEYS = USER_KEYS
REQUIRED = (
    *KEYS,
    "event_id",
    "event_time",
    "event_date",
    "event_type",
    "category",
    "price",
    "quantity",
    "session_start",
    "rel_price",
)
ADDITIVE = RUNNING_TOTALS


@dataclass(frozen=True)
class AggregateSettings:
    """Windows and label definitions (conf ``snapshots``; see docs/snapshots.md)."""

    windows_days: tuple[int, ...] = (7, 30, 90)
    population_days: int = 180
    discount_threshold: float = 0.05
    propensity_horizon_days: int = 7
    churn_horizon_days: int = 30
    churn_active_days: int = 90
    activity_event_types: tuple[str, ...] = ("view", "cart", "remove_from_cart", "purchase")


def _is(event_type: str) -> Column:
    return F.col("event_type") == event_type


def day_totals(s: AggregateSettings, new_categories: Column) -> list[Column]:
    """The aggregations of one (user, day) group; ``new_categories`` counts its first-seen categories.
    The sums are null on a day without their events: ``DAY_SUMS`` are filled with 0 afterwards."""
    purchase, priced = _is("purchase"), F.col("rel_price").isNotNull()
    return [
        F.count(F.lit(1)).alias("n_events"),
        F.count(F.when(F.col("event_type").isin(*s.activity_event_types), 1)).alias("n_active"),
        F.count(F.when(_is("view"), 1)).alias("n_views"),
        F.count(F.when(_is("cart"), 1)).alias("n_carts"),
        F.count(F.when(purchase, 1)).alias("n_purchases"),
        F.sum(F.when(purchase, F.coalesce("price", F.lit(0.0)) * F.col("quantity"))).alias("revenue"),
        F.count(F.when(F.col("event_time") == F.col("session_start"), 1)).alias("n_sessions"),
        F.count(F.when(purchase & (F.col("rel_price") < 1 - s.discount_threshold), 1)).alias(
            "n_disc_purchases"
        ),
        F.count(F.when(purchase & priced, 1)).alias("n_priced_purchases"),
        F.sum(F.when(purchase, F.col("rel_price"))).alias("sum_rel_paid"),
        F.count(F.when(_is("view") & priced, 1)).alias("n_priced_views"),
        F.sum(F.when(_is("view"), F.col("rel_price"))).alias("sum_rel_viewed"),
        new_categories.alias("n_new_categories"),
        F.lit(1).alias("active_days"),
        F.max("event_time").alias("last_time"),
        F.max(F.when(purchase, F.col("event_time"))).alias("last_purchase_day_time"),
    ]


DAY_SUMS = list(RUNNING_SUMS)


def daily_rows(events: DataFrame, s: AggregateSettings) -> DataFrame:
    """One row per (user, day with events): additive counts of that day (``n_new_categories`` counts the
    categories whose first event among ``events`` falls on that day)."""
    first_cat = Window.partitionBy(*KEYS, "category").orderBy("event_time", "event_id")
    new_cat = F.col("category").isNotNull() & (F.row_number().over(first_cat) == 1)  # ranking: fixed frame
    return (
        events.withColumn("_new_cat", new_cat)
        .groupBy(*KEYS, "event_date")
        .agg(*day_totals(s, F.count(F.when(F.col("_new_cat"), 1))))
        .fillna(0.0, subset=DAY_SUMS)
    )


def running_totals(daily: DataFrame) -> DataFrame:
    """Running totals per user up to and including each active day, as one struct ``v``."""
    upto = (
        Window.partitionBy(*KEYS)
        .orderBy("event_date")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    running = [F.sum(c).over(upto).alias(c) for c in ADDITIVE]
    return daily.select(
        *KEYS,
        "event_date",
        F.struct(
            *running,
            F.col("last_time"),
            F.max("last_purchase_day_time").over(upto).alias("last_purchase_time"),
            F.min("event_date").over(upto).alias("first_date"),
        ).alias("v"),
    )


def query_offsets(s: AggregateSettings) -> dict[str, int]:
    """Query name -> day offset from T whose running total is needed (T-1, T-w-1, T+H-1)."""
    past = {f"w{w}": -w - 1 for w in (*s.windows_days, s.churn_active_days, s.population_days)}
    future = {"p_future": s.propensity_horizon_days - 1, "c_future": s.churn_horizon_days - 1}
    return {"now": -1, **past, **future}


def as_of_totals(events: DataFrame, *, as_of_dates: Sequence[dt.date], s: AggregateSettings) -> DataFrame:
    """(source, user_id, as_of_date, <one running-total struct per offset>) for users seen before T."""
    require_columns(events, REQUIRED, "as_of_totals")
    running = running_totals(daily_rows(events, s))
    offsets = query_offsets(s)
    firsts = running.groupBy(*KEYS).agg(F.min("event_date").alias("first_date"))
    queries = (
        firsts.withColumn("as_of_date", F.explode(dates_array(as_of_dates)))
        .where(F.col("first_date") < F.col("as_of_date"))
        .withColumn(
            "_q",
            F.explode(
                F.array(*[F.struct(F.lit(k).alias("q"), F.lit(o).alias("off")) for k, o in offsets.items()])
            ),
        )
        .select(*KEYS, F.date_add("as_of_date", F.col("_q.off")).alias("event_date"), "as_of_date", "_q.q")
    )
    rows = running.select(
        *KEYS,
        "event_date",
        "v",
        F.lit(None).cast("date").alias("as_of_date"),
        F.lit(None).cast("string").alias("q"),
    )
    # Same day: the day's totals (q null) sort before the queries, so a query sees its own day.
    upto = (
        Window.partitionBy(*KEYS)
        .orderBy("event_date", F.col("q").asc_nulls_first())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    looked_up = (
        rows.unionByName(queries.withColumn("v", F.lit(None).cast(running.schema["v"].dataType)))
        .withColumn("v", F.last("v", ignorenulls=True).over(upto))
        .where(F.col("q").isNotNull())
    )
    return looked_up.groupBy(*KEYS, "as_of_date").agg(
        *[F.first(F.when(F.col("q") == k, F.col("v")), ignorenulls=True).alias(k) for k in offsets]
    )


def _increase(totals: str, metric: str, base: str = "now") -> Column:
    """How much a running total grew from ``totals`` to ``base`` (a missing lookup means nothing yet: 0)."""
    return F.col(f"{base}.{metric}") - F.coalesce(F.col(f"{totals}.{metric}"), F.lit(0))


def _ratio(num: Column, den: Column) -> Column:
    return F.when(den > 0, num / den).cast("double")


def _days_since(t: Column) -> Column:
    return ((F.unix_seconds(F.col("as_of_date").cast("timestamp")) - F.unix_seconds(t)) / 86400.0).cast(
        "double"
    )


# Aggregate features by name; their order here is their order in the table and in the model's input.
RECENCY_FEATURES = ("recency_days", "purchase_recency_days", "tenure_days")
# Per window w: the metric's growth over [T - w, T), named f"{metric}_{w}d", of this type.
WINDOW_METRICS = {
    "n_events": "int",
    "n_views": "int",
    "n_carts": "int",
    "n_purchases": "int",
    "revenue": "double",
    "n_sessions": "int",
    "active_days": "int",
}


def _funnel_rate(num: str, den: str) -> Callable[[str], Column]:
    """A rate over the longest window (recent behaviour with enough volume)."""
    return lambda w: _ratio(_increase(w, num), _increase(w, den))


def _lifetime_rate(num: str, den: str) -> Callable[[str], Column]:
    """A rate over the user's whole history."""
    return lambda _: _ratio(F.col(f"now.{num}"), F.col(f"now.{den}"))


# Lifetime totals and funnel rates; each takes the longest window's lookup name (``w90``).
LIFETIME_FEATURES: dict[str, Callable[[str], Column]] = {
    "n_events_all": lambda _: F.col("now.n_events").cast("int"),
    "n_purchases_all": lambda _: F.col("now.n_purchases").cast("int"),
    "revenue_all": lambda _: F.col("now.revenue").cast("double"),
    "n_sessions_all": lambda _: F.col("now.n_sessions").cast("int"),
    "n_categories_all": lambda _: F.col("now.n_new_categories").cast("int"),
    "view_to_cart_rate": _funnel_rate("n_carts", "n_views"),
    "cart_to_purchase_rate": _funnel_rate("n_purchases", "n_carts"),
    "cart_abandonment": lambda w: F.greatest(F.lit(0.0), 1 - _funnel_rate("n_purchases", "n_carts")(w)),
    "discount_purchase_share": _lifetime_rate("n_disc_purchases", "n_priced_purchases"),
    "avg_rel_price_paid": _lifetime_rate("sum_rel_paid", "n_priced_purchases"),
    "avg_rel_price_viewed": _funnel_rate("sum_rel_viewed", "n_priced_views"),
}


def _window_features(w: int) -> list[Column]:
    return [_increase(f"w{w}", m).cast(kind).alias(f"{m}_{w}d") for m, kind in WINDOW_METRICS.items()]


def feature_names(windows_days: Sequence[int]) -> list[str]:
    """Names of the aggregate feature columns, in table order (the GBDT baseline's input), from the same
    definitions ``user_features`` computes them with."""
    per_window = [f"{m}_{w}d" for w in windows_days for m in WINDOW_METRICS]
    return [*RECENCY_FEATURES, *per_window, *LIFETIME_FEATURES]


def _lifetime_features(s: AggregateSettings) -> list[Column]:
    w = f"w{max(s.windows_days)}"
    return [build(w).alias(name) for name, build in LIFETIME_FEATURES.items()]


def _labels(s: AggregateSettings, label_cutoff: dt.date) -> list[Column]:
    """Labels only where the whole future window lies before ``label_cutoff`` (data complete before it)."""

    def ready(h: int) -> Column:
        return F.date_add("as_of_date", h) <= F.lit(label_cutoff)

    bought = _increase("now", "n_purchases", base="p_future") > 0
    active_after = _increase("now", "n_active", base="c_future") > 0
    active_before = _increase(f"w{s.churn_active_days}", "n_active") > 0
    return [
        F.when(ready(s.propensity_horizon_days), bought.cast("int")).alias("label_propensity"),
        F.when(ready(s.churn_horizon_days) & active_before, (~active_after).cast("int")).alias("label_churn"),
    ]


def _recency(recency: Column) -> tuple[Column, Column, Column]:
    """The columns of ``RECENCY_FEATURES``, in its order."""
    purchase = _days_since(F.col("now.last_purchase_time"))
    return recency, purchase, F.datediff("as_of_date", F.col("now.first_date")).cast("int")


def user_features(
    events: DataFrame, *, as_of_dates: Sequence[dt.date], s: AggregateSettings, label_cutoff: dt.date
) -> DataFrame:
    """Aggregates + labels per (user, T) for users active in ``[T - population_days, T)``."""
    totals = as_of_totals(events, as_of_dates=as_of_dates, s=s)
    return features_from_totals(totals, s=s, label_cutoff=label_cutoff)


def features_from_totals(totals: DataFrame, *, s: AggregateSettings, label_cutoff: dt.date) -> DataFrame:
    """Aggregates + labels from ``as_of_totals``-shaped rows (one running-total struct per query offset),
    whoever looked them up: the range build above or the nightly user state (features/state.py)."""
    require_columns(totals, [*KEYS, "as_of_date", *query_offsets(s)], "features_from_totals")
    recency = _days_since(F.col("now.last_time"))
    return totals.where(recency <= s.population_days).select(
        *KEYS,
        "as_of_date",
        *[c.alias(n) for n, c in zip(RECENCY_FEATURES, _recency(recency), strict=True)],
        *[c for w in s.windows_days for c in _window_features(w)],
        *_lifetime_features(s),
        *_labels(s, label_cutoff),
    )
