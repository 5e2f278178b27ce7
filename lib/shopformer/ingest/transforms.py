"""Ingestion transforms: raw string rows -> classified canonical events. Pure: no session, no actions.

Chain (see ``ingest.job``): ``join_lookup`` -> ``map_fields`` -> ``parse_values`` -> ``classify`` ->
``assign_event_ids`` -> ``staged_rows`` (every row once; the job stages it) -> ``rejected_records`` and
``resolve_duplicates`` (one row per valid event id) -> ``accepted_events``; ``accounting`` ->
``disposition_counts`` and ``copies_total`` state the accounting: every row read is rejected, accepted
or a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from shopformer.ingest.sources import CORRUPT, INGEST_DATE, RESERVED, quoted
from shopformer.schemas import BRONZE_EVENTS, BRONZE_REJECTED, names, require_columns

ACCEPTED, DUPLICATE, REJECTED = "accepted", "duplicate", "rejected"
_NULL = "\u0000"  # stands for NULL inside the event-id hash, so (a, NULL) and (NULL, a) differ

MAPPED = [
    "source",
    "user_id",
    "item_id",
    "category",
    "brand",
    "source_session_id",
    "item_title",
    "event_time_raw",
    "event_type_raw",
    "price_raw",
    "regular_price_raw",
    "quantity_raw",
    "excluded",
    "malformed",
    "raw_record",
    "source_file",
    "ingest_date",
]
PARSED = [c for c in MAPPED if c not in ("event_type_raw", "quantity_raw")] + [
    "event_time",
    "event_type",
    "price",
    "regular_price",
    "quantity",
]
EVENT_COLUMNS = [
    "source",
    "user_id",
    "event_time",
    "event_date",
    "event_type",
    "item_id",
    "category",
    "brand",
    "price",
    "regular_price",
    "quantity",
    "source_session_id",
    "item_title",
    "ingest_date",
]
CLASSIFIED = [*EVENT_COLUMNS, "source_file", "raw_record", "reason"]
IDENTIFIED = ["event_id", *CLASSIFIED]
RESOLVED = ["event_id", *EVENT_COLUMNS, "copies", "known"]
# Which copy of an event id is kept: the first landing date, then file, then descriptive attributes (the
# only columns in which copies of one id can differ), so the choice is the same in every run.
KEEP_ORDER = ["ingest_date", "source_file", "category", "brand", "item_title", "regular_price"]


def join_lookup(raw: DataFrame, *, lookup: DataFrame | None, key: str | None) -> DataFrame:
    """Attach a side file's columns (e.g. item category/brand) by ``key``.

    Side files repeat keys (the cosmetics item.csv does), and a plain join would multiply events: each
    column collapses to its max per key, a deterministic pick.
    """
    if lookup is None or key is None:
        return raw
    require_columns(raw, [key], "join_lookup(raw)")
    require_columns(lookup, [key], "join_lookup(lookup)")
    extra = [c for c in lookup.columns if c != key and c not in raw.columns]
    side = lookup.groupBy(F.col(quoted(key))).agg(*[F.max(F.col(quoted(c))).alias(c) for c in extra])
    return raw.join(side, on=[key], how="left").select(*[F.col(quoted(c)) for c in raw.columns + extra])


def _clean(c: Column) -> Column:
    """Trimmed string; blank counts as missing (CSV writers disagree on empty vs absent)."""
    return F.nullif(F.trim(c.cast("string")), F.lit(""))


def _exclusion(exclude: Mapping[str, str]) -> Column:
    """The first matching exclude rule's reason code (rules apply in config order)."""
    reason: Column | None = None
    for code, condition in exclude.items():
        hit = F.coalesce(F.expr(condition).cast("boolean"), F.lit(False))
        reason = F.when(hit, F.lit(code)) if reason is None else reason.when(hit, F.lit(code))
    return F.lit(None).cast("string") if reason is None else reason


def map_fields(
    raw: DataFrame, *, source: str, fields: Mapping[str, str], exclude: Mapping[str, str]
) -> DataFrame:
    """Evaluate the mapping's SQL over raw string columns; keep the raw record for rejects."""
    require_columns(raw, list(RESERVED), "map_fields")

    def field(name: str) -> Column:
        return _clean(F.expr(fields.get(name) or "NULL"))

    return raw.select(
        F.lit(source).alias("source"),
        *[field(c).alias(c) for c in ("user_id", "item_id", "category", "brand")],
        *[field(c).alias(c) for c in ("source_session_id", "item_title")],
        *[
            field(c).alias(f"{c}_raw")
            for c in ("event_time", "event_type", "price", "regular_price", "quantity")
        ],
        _exclusion(exclude).alias("excluded"),
        F.col(CORRUPT).isNotNull().alias("malformed"),
        F.col("_raw_record").alias("raw_record"),
        F.col("_source_file").alias("source_file"),
        F.col(INGEST_DATE).alias("ingest_date"),
    )


def _event_type(raw: Column, event_types: Mapping[str, str]) -> Column:
    mapped: Column | None = None
    for source_type, canonical in event_types.items():
        hit = raw == F.lit(source_type)
        mapped = F.when(hit, F.lit(canonical)) if mapped is None else mapped.when(hit, F.lit(canonical))
    return F.lit(None).cast("string") if mapped is None else mapped


def _quantity(raw: Column) -> Column:
    """Whole positive numbers ("2" or "2.0") -> int; absent -> 1; anything else -> NULL (rejected)."""
    q = raw.try_cast("decimal(38,6)")
    whole = q.isNotNull() & (q == F.floor(q)) & (q > 0) & (q <= F.lit(2_147_483_647))
    return F.when(raw.isNull(), F.lit(1)).when(whole, q.try_cast("int"))


def parse_values(
    mapped: DataFrame, *, time_formats: Sequence[str], time_zone: str, event_types: Mapping[str, str]
) -> DataFrame:
    """Typed values with ANSI-safe parsers: unparseable input becomes NULL, never an exception.

    Naive local times are read in the session zone (UTC, see spark.py) and then shifted from
    ``time_zone`` to UTC.
    """
    require_columns(mapped, MAPPED, "parse_values")
    raw_time = F.col("event_time_raw")
    parsed = [F.try_to_timestamp(raw_time, F.lit(f)) for f in time_formats]
    local = parsed[0] if len(parsed) == 1 else F.coalesce(*parsed)
    utc = local if time_zone.upper() == "UTC" else F.to_utc_timestamp(local, time_zone)
    return mapped.select(
        *[c for c in MAPPED if c not in ("event_type_raw", "quantity_raw")],
        utc.alias("event_time"),
        _event_type(F.col("event_type_raw"), event_types).alias("event_type"),
        F.col("price_raw").try_cast("double").alias("price"),
        F.col("regular_price_raw").try_cast("double").alias("regular_price"),
        _quantity(F.col("quantity_raw")).alias("quantity"),
    )


def _unparseable(value: Column) -> Column:
    """A number that did not parse, or one that is not finite (NaN, +-inf)."""
    return value.isNull() | F.isnan(value) | (F.abs(value) == F.lit(float("inf")))


def _reason(max_future_hours: int, max_age_days: int) -> Column:
    """First failing check wins; the order is documented in docs/ingestion.md."""
    day_end = F.date_add(F.col("ingest_date"), 1).cast("timestamp")
    latest = F.timestamp_add("HOUR", F.lit(max_future_hours), day_end)
    earliest = F.date_sub(F.col("ingest_date"), max_age_days).cast("timestamp")
    price, regular = F.col("price"), F.col("regular_price")
    return (
        F.when(F.col("malformed"), F.lit("malformed_record"))
        .when(F.col("excluded").isNotNull(), F.col("excluded"))
        .when(F.col("user_id").isNull(), F.lit("missing_user_id"))
        .when(F.col("item_id").isNull(), F.lit("missing_item_id"))
        .when(F.col("event_time").isNull(), F.lit("bad_event_time"))
        .when(F.col("event_time") > latest, F.lit("event_time_in_future"))
        .when(F.col("event_time") < earliest, F.lit("event_time_too_old"))
        .when(F.col("event_type").isNull(), F.lit("unknown_event_type"))
        .when(F.col("price_raw").isNotNull() & _unparseable(price), F.lit("bad_price"))
        .when(price < 0, F.lit("negative_price"))
        .when(F.col("regular_price_raw").isNotNull() & _unparseable(regular), F.lit("bad_regular_price"))
        .when(regular < 0, F.lit("negative_regular_price"))
        .when(F.col("quantity").isNull(), F.lit("bad_quantity"))
    )


def classify(parsed: DataFrame, *, max_future_hours: int, max_age_days: int = 3650) -> DataFrame:
    """Give each row its reject reason (NULL = valid); the event date is the UTC date of the event."""
    require_columns(parsed, PARSED, "classify")
    return parsed.select(
        *[c for c in EVENT_COLUMNS if c != "event_date"],
        F.to_date("event_time").alias("event_date"),
        "source_file",
        "raw_record",
        _reason(max_future_hours, max_age_days).alias("reason"),
    ).select(*CLASSIFIED)


def event_id(*parts: Column) -> Column:
    """Deterministic 128-bit id over canonical content; NULLs hash as a marker, not as absent."""
    joined = F.concat_ws("\u0001", *[F.coalesce(p, F.lit(_NULL)) for p in parts])
    return F.substring(F.sha2(joined, 256), 1, 32)


def assign_event_ids(classified: DataFrame) -> DataFrame:
    """Id = what the event is (who, when, what, which item, at what price and quantity, in which session)."""
    require_columns(classified, CLASSIFIED, "assign_event_ids")
    eid = event_id(
        F.col("source"),
        F.col("user_id"),
        F.unix_micros(F.col("event_time")).cast("string"),
        F.col("event_type"),
        F.col("item_id"),
        F.col("price").cast("string"),
        F.col("quantity").cast("string"),
        F.col("source_session_id"),
    )
    return classified.select(eid.alias("event_id"), *CLASSIFIED)


def staged_rows(identified: DataFrame) -> DataFrame:
    """Every row once, split by its reason right after parsing: only a rejected row keeps its raw record
    (an accepted row is fully described by its columns), so what the run stages and shuffles stays narrow."""
    require_columns(identified, IDENTIFIED, "staged_rows")
    raw = F.when(F.col("reason").isNotNull(), F.col("raw_record")).alias("raw_record")
    return identified.select(*[raw if c == "raw_record" else F.col(c) for c in IDENTIFIED])


def resolve_duplicates(staged: DataFrame, *, existing_ids: DataFrame) -> DataFrame:
    """One row per event id among the valid rows, with its ``copies`` in the batch and whether it is
    ``known`` (already in bronze from another landing date: ``existing_ids``; then every copy is a
    duplicate). The kept copy is the smallest (``KEEP_ORDER``), so reruns keep the same one.

    A sort-based aggregation over narrow rows (no raw record): Spark spills it to disk when it does not fit,
    where a window over wide rows held them in memory. Rejected rows never take part: a duplicate of a
    rejected row is still a rejection."""
    require_columns(staged, IDENTIFIED, "resolve_duplicates")
    require_columns(existing_ids, ["event_id"], "resolve_duplicates(existing_ids)")
    ordered = [*KEEP_ORDER, *[c for c in EVENT_COLUMNS if c not in KEEP_ORDER]]
    groups = (
        staged.where(F.col("reason").isNull())
        .groupBy("event_id")
        .agg(F.min(F.struct(*ordered)).alias("kept"), F.count(F.lit(1)).alias("copies"))
    )
    seen = existing_ids.select("event_id").distinct().withColumn("known", F.lit(True))
    return groups.join(seen, on="event_id", how="left").select(
        "event_id",
        *[F.col(f"kept.{c}").alias(c) for c in EVENT_COLUMNS],
        "copies",
        F.coalesce(F.col("known"), F.lit(False)).alias("known"),
    )


def accepted_events(resolved: DataFrame, *, run_id: str) -> DataFrame:
    """Rows for bronze.events: the kept copy of every id not already in bronze."""
    require_columns(resolved, RESOLVED, "accepted_events")
    return (
        resolved.where(~F.col("known"))
        .withColumn("ingest_run_id", F.lit(run_id))
        .select(*names(BRONZE_EVENTS))
    )


def rejected_records(staged: DataFrame, *, run_id: str) -> DataFrame:
    """Rows for bronze.events_rejected: raw record, reason, where it came from."""
    require_columns(staged, IDENTIFIED, "rejected_records")
    return (
        staged.where(F.col("reason").isNotNull())
        .withColumn("ingest_run_id", F.lit(run_id))
        .select(*names(BRONZE_REJECTED))
    )


def accounting(staged: DataFrame, resolved: DataFrame) -> DataFrame:
    """Narrow entries (disposition, reason, landing date, +1/-1) whose sums are the run's dispositions: each
    rejected row is +1 rejected; each valid row starts as +1 duplicate; each kept copy of an id new to
    bronze moves one from duplicate to accepted, on its own landing date (a kept copy is one of that date's
    valid rows). So a duplicate counts on the landing date it was read on."""
    require_columns(staged, IDENTIFIED, "accounting(staged)")
    require_columns(resolved, RESOLVED, "accounting(resolved)")
    no_reason = F.lit(None).cast("string").alias("reason")

    def entry(df: DataFrame, disposition: str, reason: Column, n: int) -> DataFrame:
        return df.select(F.lit(disposition).alias("disposition"), reason, "ingest_date", F.lit(n).alias("n"))

    rejected = staged.where(F.col("reason").isNotNull())
    valid = staged.where(F.col("reason").isNull())
    kept = resolved.where(~F.col("known"))
    return (
        entry(rejected, REJECTED, F.col("reason"), 1)
        .unionByName(entry(valid, DUPLICATE, no_reason, 1))
        .unionByName(entry(kept, ACCEPTED, no_reason, 1))
        .unionByName(entry(kept, DUPLICATE, no_reason, -1))
    )


def disposition_counts(entries: DataFrame) -> DataFrame:
    """One row per (disposition, reason, landing date) with its row count: the run's whole accounting, per
    landing date, in one aggregate over ``accounting``'s entries."""
    require_columns(entries, ["disposition", "reason", "ingest_date", "n"], "disposition_counts")
    return (
        entries.groupBy("disposition", "reason", "ingest_date")
        .agg(F.sum("n").alias("n"))
        .where(F.col("n") != 0)
        .select("disposition", "reason", "n", "ingest_date")
    )


def copies_total(resolved: DataFrame) -> DataFrame:
    """One row: the valid rows the resolution accounted for (must equal the valid rows staged)."""
    require_columns(resolved, RESOLVED, "copies_total")
    return resolved.agg(F.coalesce(F.sum("copies"), F.lit(0)).cast("long").alias("copies")).select("copies")
