"""Sessionization transforms: a new session starts after ``gap_minutes`` of inactivity.

Incremental runs stay exact because the few events just before the recomputed range (``carry_in``,
already sessionized) seed the window: a session that crossed midnight keeps its id and start.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shopformer.schemas import BRONZE_EVENTS, SILVER_EVENTS, SILVER_SESSIONS, names, require_columns

EVENT_COLUMNS = [c for c in names(BRONZE_EVENTS) if c not in ("ingest_date", "ingest_run_id")]
CARRY_IN_COLUMNS = ["source", "user_id", "event_time", "event_id", "session_start"]


def session_id(source: Column, user_id: Column, start: Column) -> Column:
    """Deterministic 128-bit id of a session: same events -> same id in any run."""
    micros = F.unix_micros(start).cast("string")
    return F.substring(F.sha2(F.concat_ws("\u0001", source, user_id, micros), 256), 1, 32)


def assign_sessions(events: DataFrame, *, carry_in: DataFrame, gap_minutes: int, run_id: str) -> DataFrame:
    """Annotate events with ``session_id``/``session_start``.

    ``carry_in`` holds already-sessionized events from just before the range (may be empty); they
    only provide context and are not returned.
    """
    require_columns(events, EVENT_COLUMNS, "assign_sessions(events)")
    require_columns(carry_in, CARRY_IN_COLUMNS, "assign_sessions(carry_in)")
    if gap_minutes <= 0:
        raise ValueError(f"sessionize.gap_minutes must be positive, got {gap_minutes}")
    new = events.select(
        *EVENT_COLUMNS, F.lit(False).alias("_ctx"), F.lit(None).cast("timestamp").alias("_start")
    )
    ctx = carry_in.select(
        *[F.col(c) if c in CARRY_IN_COLUMNS else F.lit(None).alias(c) for c in EVENT_COLUMNS],
        F.lit(True).alias("_ctx"),
        F.col("session_start").alias("_start"),
    )
    order = Window.partitionBy("source", "user_id").orderBy("event_time", "event_id")
    gap_s = gap_minutes * 60
    # lag() is an offset function: Spark fixes its frame, so none is named here.
    prev = F.lag("event_time").over(order)
    is_new = prev.isNull() | (F.unix_seconds(F.col("event_time")) - F.unix_seconds(prev) >= gap_s)
    marker = F.when(F.col("_ctx"), F.col("_start")).when(is_new, F.col("event_time"))
    upto_here = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    return (
        new.unionByName(ctx)
        .withColumn("session_start", F.max(marker).over(upto_here))
        .where(~F.col("_ctx"))
        .withColumn("session_id", session_id(F.col("source"), F.col("user_id"), F.col("session_start")))
        .withColumn("sessionize_run_id", F.lit(run_id))
        .select(*names(SILVER_EVENTS))
    )


def _count_type(event_type: str) -> Column:
    return F.count(F.when(F.col("event_type") == event_type, 1))


def summarize_sessions(silver_events: DataFrame, *, run_id: str) -> DataFrame:
    """One row per session from all of its events (pass every event of each session)."""
    require_columns(silver_events, names(SILVER_EVENTS), "summarize_sessions")
    purchase_value = F.when(
        F.col("event_type") == "purchase", F.coalesce(F.col("price"), F.lit(0.0)) * F.col("quantity")
    )
    return (
        silver_events.groupBy("session_id", "source", "user_id", "session_start")
        .agg(
            F.max("event_time").alias("session_end"),
            F.count(F.lit(1)).alias("n_events"),
            _count_type("view").alias("n_views"),
            _count_type("cart").alias("n_carts"),
            _count_type("remove_from_cart").alias("n_removes"),
            _count_type("purchase").alias("n_purchases"),
            F.count_distinct("item_id").alias("n_items"),
            F.coalesce(F.sum(purchase_value), F.lit(0.0)).alias("revenue"),
        )
        .withColumn("session_date", F.to_date("session_start"))
        .withColumn("duration_s", F.unix_seconds("session_end") - F.unix_seconds("session_start"))
        .withColumn("sessionize_run_id", F.lit(run_id))
        .select(*names(SILVER_SESSIONS))
    )
