"""The last N events before each as-of date, as fixed-length left-padded arrays (model and Petastorm input).

K as-of dates cost one pass, not K: each event gets the index ``b`` of the first as-of date it precedes
(its *bucket*), only the newest N events of every (user, bucket) are kept (no snapshot can need more),
those are gathered per user once, and each as-of date then slices its own last N from that short list
with Spark's higher-order array functions. Positions hold 0 where there is no event (padding).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shopformer.schemas import require_columns

EVENT_TYPE_IDS = {"view": 1, "cart": 2, "remove_from_cart": 3, "purchase": 4}
REQUIRED = (
    "source",
    "user_id",
    "event_id",
    "event_time",
    "event_date",
    "event_type",
    "item_idx",
    "category_idx",
    "brand_idx",
    "rel_price",
)


def dates_array(as_of_dates: Sequence[dt.date]) -> Column:
    return F.array(*[F.lit(d) for d in sorted(set(as_of_dates))])


def bucket_of(event_date: Column, as_of_dates: Sequence[dt.date]) -> Column:
    """How many as-of dates are <= the event's date: the event precedes exactly the dates from there on."""
    return F.aggregate(
        dates_array(as_of_dates), F.lit(0), lambda acc, d: acc + F.when(d <= event_date, 1).otherwise(0)
    )


def gap_seconds() -> Column:
    """Seconds since the user's previous event (null for a first event), over ``event_time, event_id``."""
    order = Window.partitionBy("source", "user_id").orderBy("event_time", "event_id")
    # lag() is an offset function: Spark fixes its frame, so none is named here.
    return F.unix_seconds(F.col("event_time")) - F.unix_seconds(F.lag("event_time").over(order))


def log_gap(seconds: Column) -> Column:
    """``seq_log_gap`` of an event ``seconds`` after the user's previous one (0 for a first event)."""
    return F.log1p(F.coalesce(seconds, F.lit(0)).cast("double"))


def with_gaps(events: DataFrame) -> DataFrame:
    """``log_gap``: log1p(seconds since the user's previous event), 0 for a first event. Past-only."""
    return events.withColumn("log_gap", log_gap(gap_seconds()))


def type_id(event_type: Column) -> Column:
    """The event type's code in ``seq_event_type`` (null for an unknown type)."""
    type_ids = F.create_map(*[x for k, v in EVENT_TYPE_IDS.items() for x in (F.lit(k), F.lit(v))])
    return F.element_at(type_ids, event_type)


def event_values() -> list[Column]:
    """What a kept event carries after its sort keys (``event_time``, ``event_id``): ``sequence_arrays``
    reads these by name. Needs ``item_idx``, ``category_idx``, ``brand_idx``, ``event_type_id``,
    ``rel_price``, ``log_gap``."""
    return [
        F.col("item_idx"),
        F.col("category_idx"),
        F.col("brand_idx"),
        F.coalesce(F.col("event_type_id"), F.lit(0)).alias("event_type_id"),
        F.coalesce(F.col("rel_price"), F.lit(1.0)).cast("float").alias("rel_price"),
        F.col("log_gap").cast("float").alias("log_gap"),
    ]


def _kept_events(events: DataFrame, as_of_dates: Sequence[dt.date], max_len: int) -> DataFrame:
    """Per user, the sorted list of the newest ``max_len`` events of every bucket."""
    newest = Window.partitionBy("source", "user_id", "b").orderBy(F.desc("event_time"), F.desc("event_id"))
    event = F.struct("event_time", "event_id", "b", *event_values())
    return (
        events.withColumn("b", bucket_of(F.col("event_date"), as_of_dates))
        .where(F.col("b") < len(set(as_of_dates)))
        .withColumn("event_type_id", type_id(F.col("event_type")))
        .transform(with_gaps)
        # row_number is a ranking function: Spark fixes its frame.
        .withColumn("_rank", F.row_number().over(newest))
        .where(F.col("_rank") <= max_len)
        .groupBy("source", "user_id")
        .agg(F.sort_array(F.collect_list(event)).alias("kept"))
    )


def _padded(values: Column, max_len: int, pad: Column) -> Column:
    return F.concat(F.array_repeat(pad, F.lit(max_len) - F.size(values)), values)


def sequence_arrays(last: Column, as_of: Column, max_len: int) -> list[Column]:
    """The per-position feature arrays of the kept events ``last`` (oldest first, at most ``max_len``,
    fields of ``event_values`` plus ``event_time``), left-padded."""
    t_end = F.unix_seconds(as_of.cast("timestamp"))
    parts = {
        "seq_item": (lambda e: e["item_idx"], F.lit(0)),
        "seq_category": (lambda e: e["category_idx"], F.lit(0)),
        "seq_brand": (lambda e: e["brand_idx"], F.lit(0)),
        "seq_event_type": (lambda e: e["event_type_id"], F.lit(0)),
        "seq_rel_price": (lambda e: e["rel_price"], F.lit(0.0).cast("float")),
        "seq_log_gap": (lambda e: e["log_gap"], F.lit(0.0).cast("float")),
        "seq_log_age": (
            lambda e: F.log1p((t_end - F.unix_seconds(e["event_time"])) / 3600.0).cast("float"),
            F.lit(0.0).cast("float"),
        ),
        "seq_hour": (lambda e: F.hour(e["event_time"]) + 1, F.lit(0)),
        "seq_dow": (lambda e: F.dayofweek(e["event_time"]), F.lit(0)),
    }
    return [_padded(F.transform(last, fn), max_len, pad).alias(name) for name, (fn, pad) in parts.items()]


def last_events(events: DataFrame, *, as_of_dates: Sequence[dt.date], max_len: int) -> DataFrame:
    """(source, user_id, as_of_date, seq_len, seq_* arrays of length ``max_len``) for every as-of date
    before which the user has at least one event. Uses only events with ``event_time < as_of_date``."""
    require_columns(events, REQUIRED, "last_events")
    if max_len < 1 or not as_of_dates:
        raise ValueError("last_events needs max_len >= 1 and at least one as-of date")
    k = len(set(as_of_dates))
    kept = _kept_events(events, as_of_dates, max_len)
    first_bucket = F.array_min(F.transform(F.col("kept"), lambda e: e["b"]))
    per_date = kept.withColumn("j", F.explode(F.sequence(first_bucket, F.lit(k - 1))))
    before = F.filter(F.col("kept"), lambda e: e["b"] <= F.col("j"))
    last = F.slice(before, F.greatest(F.size(before) - max_len + 1, F.lit(1)), max_len)
    as_of = F.element_at(dates_array(as_of_dates), F.col("j") + 1)
    return per_date.select(
        "source",
        "user_id",
        as_of.alias("as_of_date"),
        F.least(F.size(before), F.lit(max_len)).cast("int").alias("seq_len"),
        *sequence_arrays(last, as_of, max_len),
    )
