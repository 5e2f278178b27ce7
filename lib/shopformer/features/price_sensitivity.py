"""Price sensitivity from purchases, for sources without views (docs/model.md "... from purchases").

The model's elasticity is the slope of its view -> purchase head, which only views can train. Without views,
what a household pays is the evidence: a household that often buys below an item's regular price reacts to
price. Per as-of date T, over its priced purchases in ``[T - history_days, T)``:

    share = sum(w * [rel_price < 1 - discount_threshold]) / sum(w),
    w = min(quantity, max_units) * 0.5 ** (days before T / half_life_days)

``rel_price`` is price paid / the item's regular price: the line's own ``regular_price`` where the source
states it (the shelf price before any discount), else an estimate (``features.prices``: the highest daily
median purchase price of the item in the ``reference_days`` before the purchase day). A few purchases say
little, so the share is shrunk toward the population's rate of the (source, T) by empirical Bayes: a beta
prior whose strength comes from the data (method of moments over purchase lines), so a household with few
purchases lands near the population and one with many keeps its own rate. ``price_elasticity`` maps it to
the sign convention of the model's score: ``-shrunk share / population rate`` (-1 = as often on discount as
the population, -2 = twice as often; 0 never). Everything is read from events before T: no leakage.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shopformer.config import Config
from shopformer.features.prices import with_relative_price
from shopformer.features.sequences import dates_array
from shopformer.schemas import USER_KEYS, require_columns

KEYS = (*USER_KEYS, "as_of_date")
REQUIRED = (*USER_KEYS, "event_type", "event_date", "quantity", "rel_price")
EVENT_COLUMNS = (*USER_KEYS, "event_type", "event_date", "item_id", "price", "regular_price", "quantity")


@dataclass(frozen=True)
class PurchaseSensitivitySettings:
    """How purchases become a score; defaults are general, not fitted to one dataset (docs/model.md)."""

    history_days: int = 182  # purchases in [T - this, T) count
    reference_days: int = 84  # estimated regular price: max daily median purchase price in [d - this, d)
    discount_threshold: float = 0.05  # rel_price below 1 - this = bought on discount
    half_life_days: float | None = 112.0  # a purchase's weight halves every this many days before T
    max_units: int = 5  # one purchase line weighs at most this many units (bulk buys do not dominate)

    def check(self) -> None:
        bad = {
            "history_days": self.history_days >= 1,
            "reference_days": self.reference_days >= 1,
            "discount_threshold": 0 <= self.discount_threshold < 1,
            "half_life_days": self.half_life_days is None or self.half_life_days > 0,
            "max_units": self.max_units >= 1,
        }
        wrong = [k for k, ok in bad.items() if not ok]
        if wrong:
            raise ValueError(
                f"price sensitivity setting {wrong[0]} out of range: {getattr(self, wrong[0])!r}"
            )


def settings(cfg: Config) -> PurchaseSensitivitySettings:
    """The scoring job's settings: the discount threshold the snapshot aggregates use, defaults otherwise."""
    return PurchaseSensitivitySettings(discount_threshold=cfg.settings.snapshots.discount_threshold)


def priced_purchases(events: DataFrame, *, reference_days: int) -> DataFrame:
    """Purchase events with a known ``rel_price``: against the line's ``regular_price`` where the source
    states it, else against the regular price estimated from purchase prices."""
    require_columns(events, EVENT_COLUMNS, "priced_purchases")
    purchases = events.where(F.col("event_type") == "purchase").select(*EVENT_COLUMNS)
    rel = purchases.transform(with_relative_price, reference_days=reference_days, line_regular_price=True)
    return rel.where(F.col("rel_price").isNotNull()).select(*EVENT_COLUMNS, "rel_price")


def _daily(purchases: DataFrame, s: PurchaseSensitivitySettings) -> DataFrame:
    """(user, day): purchase lines, lines below the regular price, and the same in capped units."""
    qty = F.coalesce(F.col("quantity").cast("double"), F.lit(1.0))
    below = (F.col("rel_price") < 1 - s.discount_threshold).cast("double")
    units = F.least(qty, F.lit(float(s.max_units)))
    return (
        purchases.where(F.col("rel_price").isNotNull() & (qty > 0))
        .groupBy(*USER_KEYS, "event_date")
        .agg(
            F.count(F.lit(1)).alias("lines"),
            F.sum(below).alias("below_lines"),
            F.sum(units).alias("units"),
            F.sum(units * below).alias("below_units"),
        )
    )


def _per_date(daily: DataFrame, as_of_dates: Sequence[dt.date], s: PurchaseSensitivitySettings) -> DataFrame:
    """(user, T): line counts over [T - history_days, T) and unit sums weighted by recency."""
    rows = daily.withColumn("as_of_date", F.explode(dates_array(as_of_dates)))
    age = F.datediff("as_of_date", "event_date")
    rows = rows.where((age >= 1) & (age <= s.history_days))
    decay = F.lit(1.0) if s.half_life_days is None else F.pow(F.lit(0.5), age / F.lit(s.half_life_days))
    return rows.groupBy(*KEYS).agg(
        F.sum("lines").alias("n_lines"),
        F.sum("below_lines").alias("k_lines"),
        F.sum(F.col("units") * decay).alias("n_w"),
        F.sum(F.col("below_units") * decay).alias("k_w"),
    )


def _prior(users: DataFrame) -> DataFrame:
    """(source, T): the population rate ``m`` and the prior's strength in weighted units (null: none).

    Beta-binomial method of moments over lines: the spread of households' line shares around the pooled
    rate is the true spread tau^2 plus binomial noise m(1 - m) / n, so tau^2 = (S - m(1 - m) h) / (1 - h)
    with S the mean squared deviation and h the mean 1/n; the prior holds m(1 - m) / tau^2 - 1 lines. No
    spread beyond noise (tau^2 <= 0) means purchases tell households apart no better than chance.
    """
    share = F.col("k_lines") / F.col("n_lines")
    pop = users.groupBy("source", "as_of_date").agg(
        (F.sum("k_lines") / F.sum("n_lines")).alias("m_l"),
        (F.sum("k_w") / F.sum("n_w")).alias("m"),
        (F.sum("n_w") / F.sum("n_lines")).alias("w_per_line"),
        F.avg(1 / F.col("n_lines")).alias("h"),
        F.avg(share).alias("p1"),
        F.avg(share * share).alias("p2"),
    )
    spread = F.col("p2") - 2 * F.col("m_l") * F.col("p1") + F.col("m_l") * F.col("m_l")  # mean (p - m_l)^2
    var = F.col("m_l") * (1 - F.col("m_l"))
    tau2 = F.when(F.col("h") < 1, (spread - var * F.col("h")) / (1 - F.col("h")))
    lines = F.greatest(var / tau2 - 1, F.lit(0.0))
    return pop.select(
        "source", "as_of_date", "m", F.when(tau2 > 0, lines * F.col("w_per_line")).alias("prior")
    )


def _elasticity(share: Column, m: Column) -> Column:
    return F.when(m > 0, F.lit(0.0) - share / m)  # 0 - x: a share of 0 maps to 0.0, not -0.0


def purchase_sensitivity(
    purchases: DataFrame, *, as_of_dates: Sequence[dt.date], s: PurchaseSensitivitySettings
) -> DataFrame:
    """(source, user_id, as_of_date, n_priced_purchases, discount_share, price_elasticity) per user with a
    priced purchase in [T - history_days, T); ``purchases`` carry ``rel_price`` (``priced_purchases``)."""
    require_columns(purchases, REQUIRED, "purchase_sensitivity")
    s.check()
    users = _per_date(_daily(purchases.where(F.col("event_type") == "purchase"), s), as_of_dates, s)
    joined = users.join(F.broadcast(_prior(users)), ["source", "as_of_date"])
    prior, m = F.col("prior"), F.col("m")
    share = F.when(prior.isNull(), m).otherwise((F.col("k_w") + m * prior) / (F.col("n_w") + prior))
    return joined.select(
        *KEYS,
        F.col("n_lines").cast("int").alias("n_priced_purchases"),
        share.cast("double").alias("discount_share"),
        _elasticity(share, m).cast("double").alias("price_elasticity"),
    )


def from_events(
    events: DataFrame, *, as_of_dates: Sequence[dt.date], s: PurchaseSensitivitySettings
) -> DataFrame:
    """``purchase_sensitivity`` from silver events: reads only the days the dates need (history + the
    reference window before it), all before the last date; the scoring job's entry point."""
    require_columns(events, EVENT_COLUMNS, "price_sensitivity.from_events")
    first = min(as_of_dates) - dt.timedelta(days=s.history_days + s.reference_days)
    window = events.where(
        (F.col("event_date") >= F.lit(first)) & (F.col("event_date") < F.lit(max(as_of_dates)))
    )
    priced = priced_purchases(window, reference_days=s.reference_days)
    return purchase_sensitivity(priced, as_of_dates=as_of_dates, s=s)
