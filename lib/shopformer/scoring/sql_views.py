"""Spark SQL temporary views over the path-based Delta tables, and the documented example queries.

The tables live at paths (no metastore), so SQL users either write ``delta.`/path``` or call
``register_views(spark, cfg)`` once per session and query ``scores_user_scores``,
``scores_latest_user_scores``, ``scores_user_embeddings``, ``scores_user_next_items``,
``scores_published_nights``, ``scores_score_quality``, ``gold_user_snapshots``, ``silver_events``,
``silver_sessions`` and ``silver_published_dates`` by name
(docs/scoring.md "SQL"; the queries in sql/examples.sql use these names).

Views are SQL text (``CREATE TEMP VIEW ... AS SELECT * FROM delta.`path```), not DataFrames: Spark
re-analyses a SQL view on every query, so a view created before tonight's run shows tonight's rows.

The score views show published nights only (``scoring.publish``): a night of scores.published_nights
whose quality was judged, and of it only the rows of the recorded scoring run and model version, so a
night whose three tables are not all written yet, or that a rerun is rewriting, is not seen half-done.
The silver views show published event dates only (``sessions.job``): the events of a date of
silver.published_dates, and the sessions that end on one, so a sessionize run between its commits (or
killed there) hides its dates instead of showing events without their sessions.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql.types import StructType

from shopformer import tables
from shopformer.config import Config
from shopformer.features.snapshots import snapshot_schema
from shopformer.schemas import (
    SCORES_PUBLISHED_NIGHTS,
    SCORES_SCORE_QUALITY,
    SCORES_USER_EMBEDDINGS,
    SCORES_USER_NEXT_ITEMS,
    SCORES_USER_SCORES,
    SILVER_EVENTS,
    SILVER_PUBLISHED_DATES,
    SILVER_SESSIONS,
)

log = logging.getLogger(__name__)
EXAMPLES = Path(__file__).resolve().parents[3] / "sql" / "examples.sql"
_NAME = re.compile(r"^--\s*name:\s*(\S+)\s*$", re.MULTILINE)

# The newest as_of_date per source: what CRM tools want without knowing which night ran last.
LATEST = """
CREATE OR REPLACE TEMP VIEW scores_latest_user_scores AS
SELECT s.*
FROM scores_user_scores AS s
JOIN (SELECT source, max(as_of_date) AS as_of_date FROM scores_user_scores GROUP BY source) AS m
  ON s.source = m.source AND s.as_of_date = m.as_of_date
"""

# A score table's rows of published, judged nights: those of the run and model version the night names.
PUBLISHED = """
CREATE OR REPLACE TEMP VIEW {name} AS
SELECT s.*
FROM {table} AS s
LEFT SEMI JOIN scores_published_nights AS p
  ON s.source = p.source AND s.as_of_date = p.as_of_date
 AND s.model_version = p.model_version AND s.run_id = p.scoring_run_id
 AND p.quality_verdict <> 'pending'
"""
# Silver's rows of published event dates. A session belongs to the date of its last event (its end, as
# days since the epoch: no session time zone): the date of the last run that rewrote it.
SILVER_PUBLISHED = {
    "silver_events": "e.event_date",
    "silver_sessions": "date_from_unix_date(CAST(floor(unix_seconds(e.session_end) / 86400) AS INT))",
}
SILVER_VIEW = """
CREATE OR REPLACE TEMP VIEW {name} AS
SELECT e.*
FROM {table} AS e
LEFT SEMI JOIN silver_published_dates AS p ON {day} = p.event_date
"""
SCORE_TABLES = {
    "scores_user_scores": SCORES_USER_SCORES,
    "scores_user_embeddings": SCORES_USER_EMBEDDINGS,
    "scores_user_next_items": SCORES_USER_NEXT_ITEMS,
}


def delta_ref(path: str) -> str:
    """The path-based table name Spark SQL understands: delta.`/path` (backticks in the path doubled)."""
    return "delta.`" + path.replace("`", "``") + "`"


def _view(spark: SparkSession, name: str, path: str, schema: StructType) -> None:
    """A view of the Delta table at ``path``; an absent table becomes an empty view of its schema, so
    the example queries still run (and return nothing) before the first night has written it."""
    if tables.exists(spark, path):
        spark.sql(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {delta_ref(path)}")
    else:
        log.warning("no Delta table at %s: %s is an empty view", path, name)
        spark.createDataFrame([], schema).createOrReplaceTempView(name)


def _published_view(spark: SparkSession, name: str, path: str, schema: StructType) -> None:
    """A score table's view restricted to published nights (empty, of its schema, when it is absent)."""
    if tables.exists(spark, path):
        spark.sql(PUBLISHED.format(name=name, table=delta_ref(path)))
    else:
        _view(spark, name, path, schema)


def _silver_views(spark: SparkSession, cfg: Config) -> list[str]:
    """silver_published_dates, then silver_events and silver_sessions restricted to its dates (empty,
    of their schema, while a table is absent: nothing is published before the first sessionize run)."""
    _view(spark, "silver_published_dates", cfg.table("silver_published_dates"), SILVER_PUBLISHED_DATES)
    published = tables.exists(spark, cfg.table("silver_published_dates"))
    for (name, day), schema in zip(SILVER_PUBLISHED.items(), (SILVER_EVENTS, SILVER_SESSIONS), strict=True):
        path = cfg.table(name)
        if published and tables.exists(spark, path):
            spark.sql(SILVER_VIEW.format(name=name, table=delta_ref(path), day=day))
        else:
            spark.createDataFrame([], schema).createOrReplaceTempView(name)
    return ["silver_published_dates", *SILVER_PUBLISHED]


def register_views(spark: SparkSession, cfg: Config) -> list[str]:
    """Create (or replace) the session's temporary views; returns their names."""
    windows = list(cfg.settings.snapshots.windows_days)
    sources = {
        "scores_published_nights": ("scores_published_nights", SCORES_PUBLISHED_NIGHTS),
        "scores_score_quality": ("scores_score_quality", SCORES_SCORE_QUALITY),
        "gold_user_snapshots": ("gold_user_snapshots", snapshot_schema(windows)),
    }
    for name, (table, schema) in sources.items():
        _view(spark, name, cfg.table(table), schema)
    for name, schema in SCORE_TABLES.items():  # after scores_published_nights, which they join
        _published_view(spark, name, cfg.table(name), schema)
    spark.sql(LATEST)
    names = [*sources, *SCORE_TABLES, "scores_latest_user_scores", *_silver_views(spark, cfg)]
    log.info("temporary views: %s", names)
    return names


def example_queries(path: str | Path = EXAMPLES) -> dict[str, str]:
    """The example queries by name: each starts at a ``-- name: <id>`` line and ends at the next one
    (trailing ``;`` removed, comments kept: they document the query)."""
    text = Path(path).read_text()
    marks = list(_NAME.finditer(text))
    if not marks:
        raise ValueError(f"{path}: no '-- name: ...' lines")
    out: dict[str, str] = {}
    for mark, nxt in zip(marks, [*marks[1:], None], strict=True):
        body = text[mark.end() : nxt.start() if nxt else len(text)].strip()
        out[mark.group(1)] = body.rstrip(";").strip()
    return out
