"""gold.user_snapshots: one row per (user, as-of date T) = sequence arrays + aggregates + labels.

Everything but the labels is computed from events with ``event_time < T`` (relative prices included: their
reference prices use days before each event). Labels look at ``[T, T+H)`` and are null until that window
has fully passed (``label_cutoff``). docs/snapshots.md describes every column.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from shopformer.features.aggregates import KEYS, AggregateSettings, feature_names, user_features
from shopformer.features.sequences import REQUIRED as SEQ_REQUIRED
from shopformer.features.sequences import last_events
from shopformer.schemas import PRICE_LABEL_COLUMNS, SEQ_COLUMNS, SEQ_FLOAT_COLUMNS, require_columns


@dataclass(frozen=True)
class SnapshotSettings:
    """conf ``snapshots`` (see conf/base.yaml for the meaning of each key)."""

    max_len: int = 50
    price_horizon_days: int = 7
    price_conversion_hours: int = 24
    price_max_views: int = 32
    aggregates: AggregateSettings = field(default_factory=AggregateSettings)

    @property
    def price_label_days(self) -> int:
        """Days after T a price label needs: the view horizon plus the conversion window, rounded up."""
        return self.price_horizon_days + math.ceil(self.price_conversion_hours / 24)


def _converted(views: DataFrame, purchases: DataFrame, hours: int) -> DataFrame:
    """View event ids followed by a purchase of the same item by the same user within ``hours``."""
    p = purchases.select(*KEYS, F.col("item_id").alias("_item"), F.col("event_time").alias("_pt"))
    v = views.select(*KEYS, "event_id", "item_id", "event_time")
    hit = (
        (F.col("_pt") >= F.col("event_time"))
        & (F.col("_pt") < F.col("event_time") + F.make_dt_interval(hours=F.lit(hours)))
        & (F.col("item_id") == F.col("_item"))
    )
    return v.join(p, [*KEYS], "inner").where(hit).select("event_id").distinct()


def price_labels(
    events: DataFrame, *, as_of_dates: Sequence[dt.date], s: SnapshotSettings, label_cutoff: dt.date
) -> DataFrame:
    """Per (user, T) with complete data: the first ``price_max_views`` views in ``[T, T+H)`` with their
    item id, relative price and whether they were bought. Sources without any view get no row."""
    require_columns(events, [*SEQ_REQUIRED, "item_id"], "price_labels")
    days = dt.timedelta(days=s.price_label_days)
    dates = [d for d in sorted(set(as_of_dates)) if d + days <= label_cutoff]
    if not dates:
        return events.sparkSession.createDataFrame([], _price_schema(with_keys=True))
    spark = events.sparkSession
    views = events.where((F.col("event_type") == "view") & F.col("rel_price").isNotNull())
    bought = _converted(views, events.where(F.col("event_type") == "purchase"), s.price_conversion_hours)
    t = spark.createDataFrame([(d,) for d in dates], "as_of_date date")
    in_window = (F.col("event_date") >= F.col("as_of_date")) & (
        F.col("event_date") < F.date_add("as_of_date", s.price_horizon_days)
    )
    view = F.struct(
        "event_time", "event_id", "item_idx", F.col("rel_price").cast("float").alias("rel"), "bought"
    )
    per_user = (
        views.join(bought.withColumn("bought", F.lit(1)), "event_id", "left")
        .fillna(0, subset=["bought"])
        .join(F.broadcast(t), in_window)
        .groupBy(*KEYS, "as_of_date")
        .agg(F.slice(F.sort_array(F.collect_list(view)), 1, s.price_max_views).alias("_v"))
    )
    return per_user.select(*KEYS, "as_of_date", *_price_arrays(F.col("_v"), s.price_max_views))


def _no_views_is_zero(
    rows: DataFrame, *, events: DataFrame, s: SnapshotSettings, label_cutoff: dt.date
) -> DataFrame:
    """A complete price window without views is an empty label (0 views), not a missing one; sources
    without any view event (transactions only) keep null price labels: there is nothing to learn from."""
    with_views = events.where(F.col("event_type") == "view").select("source").distinct()
    ready = (F.date_add("as_of_date", s.price_label_days) <= F.lit(label_cutoff)) & F.col("_views")
    m = s.price_max_views
    fill = {
        "price_n_views": F.lit(0),
        "price_item": F.array_repeat(F.lit(0), m),
        "price_rel_price": F.array_repeat(F.lit(0.0).cast("float"), m),
        "price_bought": F.array_repeat(F.lit(0), m),
    }
    out = rows.join(F.broadcast(with_views.withColumn("_views", F.lit(True))), "source", "left").fillna(
        False, subset=["_views"]
    )
    for name, value in fill.items():
        out = out.withColumn(name, F.when(F.col(name).isNull() & ready, value).otherwise(F.col(name)))
    return out.drop("_views")


def _price_arrays(v: Column, m: int) -> list[Column]:
    def right_pad(values: Column, pad: Column) -> Column:
        return F.concat(values, F.array_repeat(pad, F.lit(m) - F.size(values)))

    return [
        F.size(v).cast("int").alias("price_n_views"),
        right_pad(F.transform(v, lambda e: e["item_idx"]), F.lit(0)).alias("price_item"),
        right_pad(F.transform(v, lambda e: e["rel"]), F.lit(0.0).cast("float")).alias("price_rel_price"),
        right_pad(F.transform(v, lambda e: e["bought"]), F.lit(0)).alias("price_bought"),
    ]


def _price_schema(*, with_keys: bool) -> StructType:
    keys = "source string, user_id string, as_of_date date, " if with_keys else ""
    return StructType.fromDDL(
        keys
        + "price_n_views int, price_item array<int>, price_rel_price array<float>, price_bought array<int>"
    )


def snapshot_schema(windows_days: Sequence[int]) -> StructType:
    """The column contract of gold.user_snapshots for the configured windows."""
    ints = {"tenure_days"} | {c for c in feature_names(windows_days) if c.startswith(("n_", "active_days"))}
    ddl = ["source string not null", "user_id string not null", "as_of_date date not null", "seq_len int"]
    ddl += [f"{c} array<{'float' if c in SEQ_FLOAT_COLUMNS else 'int'}>" for c in SEQ_COLUMNS]
    ddl += [f"{c} {'int' if c in ints else 'double'}" for c in feature_names(windows_days)]
    ddl += ["seq_distinct_categories int", "label_propensity int", "label_churn int"]
    ddl += [f"{f.name} {f.dataType.simpleString()}" for f in _price_schema(with_keys=False).fields]
    ddl += ["propensity_horizon_days int", "churn_horizon_days int", "vocab_version string not null"]
    ddl += ["snapshot_run_id string not null"]
    return StructType.fromDDL(", ".join(ddl))


def build_snapshots(
    events: DataFrame,
    *,
    as_of_dates: Sequence[dt.date],
    s: SnapshotSettings,
    label_cutoff: dt.date,
    vocab_version: str,
    run_id: str,
) -> DataFrame:
    """Snapshot rows (``snapshot_schema``) from events carrying vocabulary ids and relative prices.

    ``events`` must reach up to ``label_cutoff`` for labels; a row's features read only events before T.
    """
    require_columns(
        events, [*SEQ_REQUIRED, "category", "price", "quantity", "session_start"], "build_snapshots"
    )
    a = s.aggregates
    keys = [*KEYS, "as_of_date"]
    feats = user_features(events, as_of_dates=as_of_dates, s=a, label_cutoff=label_cutoff)
    seqs = last_events(events, as_of_dates=as_of_dates, max_len=s.max_len)
    prices = price_labels(events, as_of_dates=as_of_dates, s=s, label_cutoff=label_cutoff)
    joined = (
        feats.join(seqs, keys, "left")
        .join(prices, keys, "left")
        .transform(_no_views_is_zero, events=events, s=s, label_cutoff=label_cutoff)
    )
    return snapshot_rows(joined, s=s, vocab_version=vocab_version, run_id=run_id)


def snapshot_rows(joined: DataFrame, *, s: SnapshotSettings, vocab_version: str, run_id: str) -> DataFrame:
    """The table's columns (``snapshot_schema``) from features joined with sequences and price labels:
    what the range build and the nightly state path (features/state.py) share."""
    require_columns(joined, [*KEYS, "as_of_date", "seq_category", *PRICE_LABEL_COLUMNS], "snapshot_rows")
    a = s.aggregates
    distinct_cats = F.size(F.array_distinct(F.filter("seq_category", lambda c: c > 0)))
    schema = snapshot_schema(a.windows_days)
    return (
        joined.withColumn("seq_distinct_categories", distinct_cats.cast("int"))
        .withColumn("propensity_horizon_days", F.lit(a.propensity_horizon_days))
        .withColumn("churn_horizon_days", F.lit(a.churn_horizon_days))
        .withColumn("vocab_version", F.lit(vocab_version))
        .withColumn("snapshot_run_id", F.lit(run_id))
        .select(*[F.col(f.name).cast(f.dataType) for f in schema.fields])
    )
