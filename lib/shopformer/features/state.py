"""gold.user_state: what the nightly snapshot of date D needs from the past, per user, so a night costs
the night's events and the users' state instead of the whole history.

Per (source, user_id) as of D (events with ``event_date < D``):

* ``last_events``: the newest ``max_len`` events, raw (tokens, not vocabulary ids: the vocabulary is
  rebuilt weekly, so ids are given when a snapshot is built), each with its relative price and the seconds
  since the user's previous event (which may lie before the kept ones);
* ``daily_totals``: the running totals of ``aggregates.ADDITIVE`` at each active day later than
  ``D - keep_days - 1`` plus the newest one at or before it (``keep_days`` = the longest window): every
  window ``[D-w, D)`` is ``total(D-1) - total(D-w-1)``, exactly as ``aggregates.as_of_totals`` looks it up;
  the last entry is the lifetime total;
* ``categories``: the user's distinct categories (their count is the lifetime ``n_categories_all``).

``advance_state`` rolls a state forward by one day the way the range build's running sums are formed
(``total(d) = total(d-1) + day(d)``), so ``snapshot_from_state`` equals ``snapshots.build_snapshots`` for the
same date (``tests/features/test_user_state.py``). Labels are never due on this path: the job uses it only
when no label window of the date is complete.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, StringType

from shopformer.features.aggregates import (
    ADDITIVE,
    DAY_SUMS,
    KEYS,
    AggregateSettings,
    daily_rows,
    day_totals,
    features_from_totals,
    query_offsets,
    running_totals,
)
from shopformer.features.aggregates import REQUIRED as AGG_REQUIRED
from shopformer.features.sequences import event_values, gap_seconds, log_gap, sequence_arrays, type_id
from shopformer.features.snapshots import SnapshotSettings, snapshot_rows
from shopformer.schemas import (
    GOLD_USER_STATE,
    PRICE_LABEL_COLUMNS,
    USER_STATE_EVENT,
    USER_STATE_TOTALS,
    names,
    require_columns,
)

REQUIRED = (*AGG_REQUIRED, "item_id", "brand")
DAY_TIMES = ("last_time", "last_purchase_day_time")
TOTAL_TYPES = {f.name: f.dataType for f in USER_STATE_TOTALS.fields}


def _empty(element: DataType) -> Column:
    return F.array().cast(ArrayType(element))


def keep_days(s: AggregateSettings) -> int:
    """Days of running totals a state keeps beyond the lifetime one: the longest feature window."""
    return max(s.windows_days)


def _last(values: Column) -> Column:
    """The last element of an array, null when it is empty (``get`` does not fail in ANSI mode)."""
    return F.get(values, F.size(values) - 1)


def _last_n(values: Column, n: int) -> Column:
    return F.slice(values, F.greatest(F.size(values) - n + 1, F.lit(1)), n)


def _pruned(totals: Column, as_of: dt.date, keep: int) -> Column:
    """Entries later than ``as_of - keep - 1`` plus the newest at or before it: enough to look up every
    running total a window of at most ``keep`` days needs, and the lifetime one."""
    edge = F.lit(as_of - dt.timedelta(days=keep + 1))
    older = F.filter(totals, lambda r: r["event_date"] <= edge)
    newer = F.filter(totals, lambda r: r["event_date"] > edge)
    return F.concat(_last_n(older, 1), newer)


def _event(gap: Column) -> Column:
    """A kept event (``USER_STATE_EVENT``) of an events row; ``gap``: seconds since the previous one."""
    values = {f.name: F.col(f.name) for f in USER_STATE_EVENT.fields} | {"gap_s": gap}
    return F.struct(*[values[f.name].cast(f.dataType).alias(f.name) for f in USER_STATE_EVENT.fields])


def _totals(values: dict[str, Column]) -> Column:
    """A ``USER_STATE_TOTALS`` struct from a value per field."""
    return F.struct(*[values[f.name].cast(f.dataType).alias(f.name) for f in USER_STATE_TOTALS.fields])


def _lineage(silver_version: int, run_id: str) -> list[Column]:
    return [F.lit(silver_version).alias("silver_version"), F.lit(run_id).alias("state_run_id")]


def bootstrap_state(
    events: DataFrame,
    *,
    as_of_date: dt.date,
    max_len: int,
    s: AggregateSettings,
    silver_version: int,
    run_id: str,
) -> DataFrame:
    """The state as of ``as_of_date`` from all events before it (with ``rel_price``): the one run that
    reads the whole history, with the range build's own running sums."""
    require_columns(events, REQUIRED, "bootstrap_state")
    before = events.where(F.col("event_date") < F.lit(as_of_date))
    newest = Window.partitionBy(*KEYS).orderBy(F.desc("event_time"), F.desc("event_id"))
    last = (
        before.withColumn("_rank", F.row_number().over(newest))  # ranking: Spark fixes the frame
        .withColumn("_gap", F.coalesce(gap_seconds(), F.lit(0)))
        .where(F.col("_rank") <= max_len)
        .groupBy(*KEYS)
        .agg(F.sort_array(F.collect_list(_event(F.col("_gap")))).alias("last_events"))
    )
    running = running_totals(daily_rows(before, s)).select(
        *KEYS, "event_date", _totals({"event_date": F.col("event_date"), **_fields("v")}).alias("t")
    )
    totals = running.groupBy(*KEYS).agg(
        F.min("event_date").alias("first_date"),
        _pruned(F.sort_array(F.collect_list("t")), as_of_date, keep_days(s)).alias("daily_totals"),
    )
    cats = before.groupBy(*KEYS).agg(F.array_sort(F.collect_set("category")).alias("categories"))
    return (
        totals.join(last, list(KEYS))
        .join(cats, list(KEYS))
        .select(
            *KEYS,
            F.lit(as_of_date).alias("as_of_date"),
            "first_date",
            "categories",
            "daily_totals",
            "last_events",
            *_lineage(silver_version, run_id),
        )
    )


def _fields(struct: str) -> dict[str, Column]:
    return {n: F.col(f"{struct}.{n}") for n in TOTAL_TYPES if n != "event_date"}


def _night(night: DataFrame, s: AggregateSettings) -> DataFrame:
    """Per user with events in ``night`` (one day): the day's totals as struct ``d`` (its new categories
    are counted against the state's, in ``advance_state``), its events (gaps within the day; the first
    one's is filled from the state) and its categories. One shuffle: the gaps' window feeds the group."""
    return (
        night.withColumn("_gap", gap_seconds())
        .groupBy(*KEYS)
        .agg(
            *day_totals(s, F.lit(0)),
            F.sort_array(F.collect_list(_event(F.col("_gap")))).alias("_events"),
            F.array_sort(F.collect_set("category")).alias("_cats"),
        )
        .fillna(0.0, subset=DAY_SUMS)
        .select(*KEYS, "_events", "_cats", F.struct(*ADDITIVE, *DAY_TIMES).alias("d"))
    )


def advance_state(
    state: DataFrame,
    night: DataFrame,
    *,
    day: dt.date,
    max_len: int,
    s: AggregateSettings,
    silver_version: int,
    run_id: str,
) -> DataFrame:
    """The state as of ``day + 1`` from the state as of ``day`` and the events dated ``day`` (with
    ``rel_price``): every user of either, the others' entries pruned to the new date."""
    require_columns(state, names(GOLD_USER_STATE), "advance_state(state)")
    require_columns(night, REQUIRED, "advance_state(night)")
    today = _night(night.where(F.col("event_date") == F.lit(day)), s)
    joined = state.where(F.col("as_of_date") == F.lit(day)).join(today, list(KEYS), "full_outer")
    prev, seen = _last(F.col("daily_totals")), F.col("_events").isNotNull()
    cats = F.array_sort(
        F.array_union(
            F.coalesce("categories", _empty(StringType())), F.coalesce("_cats", _empty(StringType()))
        )
    )
    sums = {n: F.coalesce(prev[n], F.lit(0)) + F.col(f"d.{n}") for n in ADDITIVE}
    total = _totals(
        {
            "event_date": F.lit(day),
            **sums,
            "n_new_categories": F.size(cats),
            "last_time": F.col("d.last_time"),
            "last_purchase_time": F.greatest(prev["last_purchase_time"], F.col("d.last_purchase_day_time")),
        }
    )
    prev_time = F.unix_seconds(_last(F.col("last_events"))["event_time"])
    fresh = F.transform(  # the day's first event: its gap reaches back to the state's newest event
        "_events",
        lambda e: e.withField(
            "gap_s", F.coalesce(e["gap_s"], F.unix_seconds(e["event_time"]) - prev_time, F.lit(0))
        ),
    )
    totals = F.concat(
        F.coalesce("daily_totals", _empty(USER_STATE_TOTALS)),
        F.when(seen, F.array(total)).otherwise(_empty(USER_STATE_TOTALS)),
    )
    events = F.concat(
        F.coalesce("last_events", _empty(USER_STATE_EVENT)), F.coalesce(fresh, _empty(USER_STATE_EVENT))
    )
    return joined.select(
        *KEYS,
        F.lit(day + dt.timedelta(days=1)).alias("as_of_date"),
        F.coalesce("first_date", F.lit(day)).alias("first_date"),
        cats.alias("categories"),
        _pruned(totals, day + dt.timedelta(days=1), keep_days(s)).alias("daily_totals"),
        _last_n(events, max_len).alias("last_events"),
        *_lineage(silver_version, run_id),
    )


def state_events(state: DataFrame, *, as_of_date: dt.date, population_days: int) -> DataFrame:
    """One row per kept event of the users that may be in the snapshot of ``as_of_date`` (an event in
    the last ``population_days`` + 1 days: a superset, ``features_from_totals`` applies the exact test):
    the rows to give vocabulary ids (``item_id``, ``category``, ``brand``) before ``snapshot_from_state``."""
    require_columns(state, names(GOLD_USER_STATE), "state_events")
    since = dt.datetime.combine(as_of_date - dt.timedelta(days=population_days + 1), dt.time())
    live = state.where(
        (F.col("as_of_date") == F.lit(as_of_date))
        & (_last(F.col("daily_totals"))["last_time"] >= F.lit(since))
    )
    return live.select(*KEYS, F.explode("last_events").alias("e")).select(
        *KEYS, *[F.col(f"e.{f.name}").alias(f.name) for f in USER_STATE_EVENT.fields]
    )


def _at_or_before(totals: Column, day: dt.date) -> Column:
    """The newest running-total entry dated ``day`` or earlier (null when there is none)."""
    return _last(F.filter(totals, lambda r: r["event_date"] <= F.lit(day)))


def _lookups(as_of_date: dt.date, s: AggregateSettings) -> list[Column]:
    """The running-total struct per ``aggregates.query_offsets`` name, as ``as_of_totals`` looks them up:
    the newest entry at or before ``T + offset``. Offsets beyond the kept days or after T only feed labels,
    which this path never fills: null."""
    first = F.col("first_date")
    now = _last(F.col("daily_totals")).withField("first_date", first)
    out = []
    for name, offset in query_offsets(s).items():
        if offset == -1:
            out.append(now.alias(name))
        elif -keep_days(s) - 1 <= offset < -1:
            found = _at_or_before(F.col("daily_totals"), as_of_date + dt.timedelta(days=offset))
            out.append(F.when(found.isNotNull(), found.withField("first_date", first)).alias(name))
        else:
            out.append(F.lit(None).cast(now_type()).alias(name))
    return out


def now_type() -> str:
    fields = ", ".join(f"{f.name}: {f.dataType.simpleString()}" for f in USER_STATE_TOTALS.fields)
    return f"struct<{fields}, first_date: date>"


def snapshot_from_state(
    state: DataFrame,
    encoded: DataFrame,
    *,
    as_of_date: dt.date,
    s: SnapshotSettings,
    label_cutoff: dt.date,
    vocab_version: str,
    run_id: str,
) -> DataFrame:
    """Snapshot rows of ``as_of_date`` (``snapshots.snapshot_schema``, labels null) from the state as of
    it and ``encoded``: ``state_events`` with ``item_idx``, ``category_idx``, ``brand_idx``."""
    require_columns(state, names(GOLD_USER_STATE), "snapshot_from_state(state)")
    require_columns(encoded, [*KEYS, "item_idx", "category_idx", "brand_idx"], "snapshot_from_state")
    a = s.aggregates
    t = F.lit(as_of_date)
    totals = state.where(F.col("as_of_date") == t).select(*KEYS, "as_of_date", *_lookups(as_of_date, a))
    feats = features_from_totals(totals, s=a, label_cutoff=label_cutoff)
    kept = (
        encoded.withColumn("event_type_id", type_id(F.col("event_type")))
        .withColumn("log_gap", log_gap(F.col("gap_s")))
        .groupBy(*KEYS)
        .agg(F.sort_array(F.collect_list(F.struct("event_time", "event_id", *event_values()))).alias("_k"))
    )
    seqs = kept.select(
        *KEYS,
        t.alias("as_of_date"),
        F.size("_k").cast("int").alias("seq_len"),
        *sequence_arrays(F.col("_k"), t, s.max_len),
    )
    joined = feats.join(seqs, [*KEYS, "as_of_date"], "left").select(
        "*", *[F.lit(None).alias(c) for c in PRICE_LABEL_COLUMNS]
    )
    return snapshot_rows(joined, s=s, vocab_version=vocab_version, run_id=run_id)
