"""Schemas of the tables this project writes: the contract in ../shared/SPEC.md, in code."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")

# Column contracts shared by features, model and scoring (the tables below spell out their types).
USER_KEYS = ("source", "user_id")
SNAPSHOT_KEYS = (*USER_KEYS, "as_of_date")  # gold.user_snapshots and every scores.* table
ITEM_KEYS = ("source", "item_id")
# The per-position arrays of a snapshot row: integer ids / codes, and floats; SEQ_COLUMNS is table order.
SEQ_INT_COLUMNS = ("seq_item", "seq_category", "seq_brand", "seq_event_type", "seq_hour", "seq_dow")
SEQ_FLOAT_COLUMNS = ("seq_rel_price", "seq_log_gap", "seq_log_age")
SEQ_COLUMNS = (
    "seq_item",
    "seq_category",
    "seq_brand",
    "seq_event_type",
    "seq_rel_price",
    "seq_log_gap",
    "seq_log_age",
    "seq_hour",
    "seq_dow",
)
PRICE_LABEL_COLUMNS = ("price_n_views", "price_item", "price_rel_price", "price_bought")
TASK_LABELS = {"propensity": "label_propensity", "churn": "label_churn"}  # model task -> label column
TASKS = tuple(TASK_LABELS)  # propensity, churn
SCORE_LABELS = {"propensity_7d": "label_propensity", "churn_30d": "label_churn"}  # score column -> label
DRIFT_SCORES = (*SCORE_LABELS, "price_elasticity")  # scores whose drift (PSI) score quality watches

# bronze.events: one row per accepted source event. ``ingest_date`` is the landing date the row came in
# with (the run date of the ingest job); replacing (source, ingest_date) makes reruns idempotent.
BRONZE_EVENTS = StructType(
    [
        StructField("event_id", StringType(), False),
        StructField("source", StringType(), False),
        StructField("user_id", StringType(), False),
        StructField("event_time", TimestampType(), False),
        StructField("event_date", DateType(), False),
        StructField("event_type", StringType(), False),
        StructField("item_id", StringType(), False),
        StructField("category", StringType(), True),
        StructField("brand", StringType(), True),
        StructField("price", DoubleType(), True),
        # Unit price before any discount (the shelf price), as the source states it; null: it does not say.
        StructField("regular_price", DoubleType(), True),
        StructField("quantity", IntegerType(), False),
        StructField("source_session_id", StringType(), True),
        StructField("item_title", StringType(), True),
        StructField("ingest_date", DateType(), False),
        StructField("ingest_run_id", StringType(), False),
    ]
)

# bronze.events_rejected: every source row not accepted, raw record kept as JSON (or the raw CSV line).
BRONZE_REJECTED = StructType(
    [
        StructField("source", StringType(), False),
        StructField("source_file", StringType(), True),
        StructField("raw_record", StringType(), True),
        StructField("reason", StringType(), False),
        StructField("ingest_date", DateType(), False),
        StructField("ingest_run_id", StringType(), False),
    ]
)

# bronze.ingested_files: the manifest of landing files, one row per file an ingest run read (docs/ingestion.md
# "Manifest"). ``landing_date`` is the folder's date, ``ingest_date`` the landing date whose bronze rows the
# file became (a late file: a later one); replaced per (source, ingest_date) with the bronze tables.
BRONZE_INGESTED_FILES = StructType(
    [
        StructField("source", StringType(), False),
        StructField("landing_date", DateType(), False),
        StructField("file_path", StringType(), False),
        StructField("size", LongType(), False),
        StructField("modification_time", TimestampType(), False),
        StructField("ingest_date", DateType(), False),
        StructField("ingest_run_id", StringType(), False),
    ]
)

# silver.events: bronze events annotated with their session.
SILVER_EVENTS = StructType(
    [
        *[f for f in BRONZE_EVENTS.fields if f.name not in ("ingest_date", "ingest_run_id")],
        StructField("session_id", StringType(), False),
        StructField("session_start", TimestampType(), False),
        StructField("sessionize_run_id", StringType(), False),
    ]
)

# silver.sessions: one row per session, partitioned by the date the session started.
SILVER_SESSIONS = StructType(
    [
        StructField("session_id", StringType(), False),
        StructField("source", StringType(), False),
        StructField("user_id", StringType(), False),
        StructField("session_start", TimestampType(), False),
        StructField("session_end", TimestampType(), False),
        StructField("session_date", DateType(), False),
        StructField("duration_s", LongType(), False),
        StructField("n_events", LongType(), False),
        StructField("n_views", LongType(), False),
        StructField("n_carts", LongType(), False),
        StructField("n_removes", LongType(), False),
        StructField("n_purchases", LongType(), False),
        StructField("n_items", LongType(), False),
        StructField("revenue", DoubleType(), False),
        StructField("sessionize_run_id", StringType(), False),
    ]
)


# silver.published_dates: the event dates whose silver rows are whole (docs/sessionization.md "Published
# dates"). A sessionize run first removes the dates it recomputes, last writes them back: the silver views
# (scoring.sql_views) show only these dates, so a reader never sees a half-sessionized night.
SILVER_PUBLISHED_DATES = StructType(
    [
        StructField("event_date", DateType(), False),
        StructField("sessionize_run_id", StringType(), False),
        StructField("published_at", TimestampType(), False),
    ]
)

# gold.vocabularies: token -> id per kind (item | category | brand), one partition per vocab_version.
GOLD_VOCABULARIES = StructType(
    [
        StructField("vocab_version", StringType(), False),
        StructField("kind", StringType(), False),
        StructField("token", StringType(), False),
        StructField("id", IntegerType(), False),
        StructField("count", LongType(), False),
        StructField("hash_buckets", IntegerType(), False),
    ]
)


# gold.user_state: per (source, user) as of date D (events with event_date < D), what the nightly snapshot
# of D needs from the past (docs/snapshots.md "Nightly: the user state"), one partition per as_of_date.
# Events are kept raw (tokens, not vocabulary ids: the vocabulary is rebuilt weekly).
USER_STATE_EVENT = StructType(
    [
        StructField("event_time", TimestampType()),
        StructField("event_id", StringType()),
        StructField("event_date", DateType()),
        StructField("item_id", StringType()),
        StructField("category", StringType()),
        StructField("brand", StringType()),
        StructField("event_type", StringType()),
        StructField("rel_price", DoubleType()),
        StructField("gap_s", LongType()),  # seconds since the user's previous event (0 for the first)
    ]
)
# The additive per-user counts and sums the aggregates keep running totals of (features/aggregates.py
# ADDITIVE); the sums are doubles, the counts longs.
RUNNING_SUMS = ("revenue", "sum_rel_paid", "sum_rel_viewed")
RUNNING_TOTALS = (
    "n_events",
    "n_active",
    "n_views",
    "n_carts",
    "n_purchases",
    "revenue",
    "n_sessions",
    "n_disc_purchases",
    "n_priced_purchases",
    "sum_rel_paid",
    "n_priced_views",
    "sum_rel_viewed",
    "n_new_categories",
    "active_days",
)
# Running totals up to and including event_date (RUNNING_TOTALS, last times).
USER_STATE_TOTALS = StructType(
    [
        StructField("event_date", DateType()),
        *[StructField(n, DoubleType() if n in RUNNING_SUMS else LongType()) for n in RUNNING_TOTALS],
        StructField("last_time", TimestampType()),
        StructField("last_purchase_time", TimestampType()),
    ]
)
GOLD_USER_STATE = StructType(
    [
        StructField("source", StringType(), False),
        StructField("user_id", StringType(), False),
        StructField("as_of_date", DateType(), False),
        StructField("first_date", DateType(), False),
        StructField("categories", ArrayType(StringType())),
        StructField("daily_totals", ArrayType(USER_STATE_TOTALS)),
        StructField("last_events", ArrayType(USER_STATE_EVENT)),
        StructField("silver_version", LongType(), False),
        StructField("state_run_id", StringType(), False),
    ]
)


def require_columns(df: DataFrame, columns: list[str] | tuple[str, ...], where: str) -> None:
    """Fail early, naming the missing columns, instead of deep inside a query plan."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing required column(s) {missing}; have {df.columns}")


def names(schema: StructType) -> list[str]:
    return [f.name for f in schema.fields]


# gold.item_embeddings: one row per (source, item_id), the text-encoder vector of the item's latest text.
# Partitioned by source (not by date): it is current state per item, upserted in place, and readers
# (and the MERGE) go one catalog at a time. text_hash + model_name say whether a row is still fresh.
GOLD_ITEM_EMBEDDINGS = StructType(
    [
        StructField("source", StringType(), False),
        StructField("item_id", StringType(), False),
        StructField("text", StringType(), False),
        StructField("text_hash", StringType(), False),
        StructField("embedding", ArrayType(FloatType()), False),
        StructField("model_name", StringType(), False),
        StructField("dim", IntegerType(), False),
        StructField("embed_run_id", StringType(), False),
        StructField("embedded_on", DateType(), False),
    ]
)


# One driver of a score (docs/scoring.md "Reasons"): its name, the user's values in words, and how much it
# moves the calibrated score (the score minus the score with the driver at the average user's values).
REASON = StructType(
    [
        StructField("driver", StringType(), False),
        StructField("reason", StringType(), False),
        StructField("effect", DoubleType(), False),
    ]
)

# scores.*: the nightly scoring job's output (jobs/score_users.py; docs/scoring.md). One partition per
# as_of_date, replaced whole by a rerun; model_name / model_version / run_id say which model and run wrote
# each row. price_elasticity and price_sensitivity_segment are null where the user's sequence has no view;
# the reasons hold each score's top three drivers, largest effect first (null in rows of older releases).
SCORES_USER_SCORES = StructType(
    [
        StructField("source", StringType(), False),
        StructField("user_id", StringType(), False),
        StructField("as_of_date", DateType(), False),
        StructField("propensity_7d", DoubleType(), False),
        StructField("churn_30d", DoubleType(), False),
        StructField("price_elasticity", DoubleType(), True),
        StructField("price_sensitivity_segment", StringType(), True),
        StructField("propensity_reasons", ArrayType(REASON), True),
        StructField("churn_reasons", ArrayType(REASON), True),
        StructField("model_name", StringType(), False),
        StructField("model_version", StringType(), False),
        StructField("run_id", StringType(), False),
        StructField("scored_at", TimestampType(), False),
    ]
)

SCORES_USER_EMBEDDINGS = StructType(
    [
        StructField("source", StringType(), False),
        StructField("user_id", StringType(), False),
        StructField("as_of_date", DateType(), False),
        StructField("user_vector", ArrayType(FloatType()), False),
        StructField("model_name", StringType(), False),
        StructField("model_version", StringType(), False),
        StructField("run_id", StringType(), False),
    ]
)

# One row per (user, rank): rank 1 is the most likely next item; item_id is the source's own item token.
SCORES_USER_NEXT_ITEMS = StructType(
    [
        StructField("source", StringType(), False),
        StructField("user_id", StringType(), False),
        StructField("as_of_date", DateType(), False),
        StructField("rank", IntegerType(), False),
        StructField("item_id", StringType(), False),
        StructField("model_name", StringType(), False),
        StructField("model_version", StringType(), False),
        StructField("run_id", StringType(), False),
    ]
)

# scores.score_quality: one row per (source, as_of_date, score, metric) (jobs/evaluate_scores.py;
# docs/scoring.md "Score quality"). Long, not wide, so each metric carries its own threshold and breached
# flag and "quality over time" is a WHERE on metric. value is null where the metric is undefined (note
# says why); reference_date is the previous scored date a PSI row compares against (null otherwise).
SCORES_SCORE_QUALITY = StructType(
    [
        StructField("source", StringType(), False),
        StructField("as_of_date", DateType(), False),
        StructField("score", StringType(), False),
        StructField("metric", StringType(), False),
        StructField("value", DoubleType(), True),
        StructField("threshold", DoubleType(), True),
        StructField("breached", BooleanType(), False),
        StructField("n", LongType(), False),
        StructField("base_rate", DoubleType(), True),
        StructField("reference_date", DateType(), True),
        StructField("note", StringType(), True),
        StructField("model_version", StringType(), False),
        StructField("evaluated_on", DateType(), False),
        StructField("run_id", StringType(), False),
    ]
)

# scores.published_nights: one row per (source, as_of_date) whose three score tables are complete
# (docs/scoring.md "Published nights"). jobs/score_users.py writes it last with quality_verdict 'pending';
# jobs/evaluate_scores.py sets 'passed' / 'breached' as its last commit. The SQL views show only nights
# judged here, and only the rows of scoring_run_id at model_version.
PUBLISH_VERDICTS = ("pending", "passed", "breached")
SCORES_PUBLISHED_NIGHTS = StructType(
    [
        StructField("source", StringType(), False),
        StructField("as_of_date", DateType(), False),
        StructField("model_name", StringType(), False),
        StructField("model_version", StringType(), False),
        StructField("scoring_run_id", StringType(), False),
        StructField("users", LongType(), False),
        StructField("quality_verdict", StringType(), False),
        StructField("quality_evaluated_on", DateType(), True),
        StructField("quality_run_id", StringType(), True),
        StructField("published_at", TimestampType(), False),
        StructField("run_id", StringType(), False),
    ]
)
