"""Relative price: what an event's price is worth next to the item's recent regular price.

Price response is only identifiable against a reference: a 40 EUR shirt is cheap if it usually costs 60.
The reference for an event on day ``d`` is the highest daily median price of the item in
``[d - reference_days, d)``: promotions lower prices, so the recent maximum tracks the regular price, and
using days strictly before ``d`` keeps every relative price computable from the past alone (no leakage
into snapshots, whose events all lie before their as-of date). Where a source states a line's regular
price (``regular_price``), price sensitivity from purchases uses it instead (``line_regular_price``).
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shopformer.schemas import require_columns

REQUIRED = ("source", "item_id", "event_date", "price")


def _day_number(col: str) -> Column:
    return F.datediff(F.col(col), F.lit("1970-01-01").cast("date"))


def item_reference_prices(events: DataFrame, *, reference_days: int) -> DataFrame:
    """(source, item_id, event_date, ref_price): each day an item was seen, its trailing reference price.

    ``ref_price`` is null when the item has no priced day in the trailing window (new items).
    """
    require_columns(events, REQUIRED, "item_reference_prices")
    if reference_days < 1:
        raise ValueError(f"snapshots.reference_price_days must be >= 1, got {reference_days}")
    daily = (
        events.where(F.col("price").isNotNull() & (F.col("price") > 0))
        .groupBy("source", "item_id", "event_date")
        .agg(F.median("price").alias("day_price"))
        .withColumn("_day", _day_number("event_date"))
    )
    trailing = Window.partitionBy("source", "item_id").orderBy("_day").rangeBetween(-reference_days, -1)
    return daily.withColumn("ref_price", F.max("day_price").over(trailing)).select(
        "source", "item_id", "event_date", F.col("ref_price").cast("double")
    )


def with_relative_price(
    events: DataFrame, *, reference_days: int, line_regular_price: bool = False
) -> DataFrame:
    """``events`` plus ``rel_price`` = price / reference price (null when either is unknown).

    With ``line_regular_price`` the reference of an event whose source states its ``regular_price`` is
    that price (the shelf price the line was sold against, which an estimate can only guess); the
    estimate stands in where it is null."""
    require_columns(events, REQUIRED, "with_relative_price")
    if line_regular_price:
        require_columns(events, ["regular_price"], "with_relative_price(line_regular_price)")
    refs = item_reference_prices(events, reference_days=reference_days)
    joined = events.join(refs, ["source", "item_id", "event_date"], "left")
    ref = F.coalesce(F.col("regular_price"), F.col("ref_price")) if line_regular_price else F.col("ref_price")
    rel = F.when(ref > 0, F.col("price") / ref)
    return joined.select(*events.columns, rel.cast("double").alias("rel_price"))
