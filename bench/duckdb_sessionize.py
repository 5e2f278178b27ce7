"""DuckDB reference: what ``jobs/ingest_events.py`` + ``jobs/sessionize.py`` compute, as one SQL query.

Reads the synthetic shop's raw Parquet or CSV landing files (``<landing>/date=YYYY-MM-DD/*``, every column a
string), drops what the ingest would reject as far as SQL on these columns expresses it, collapses duplicates
on the columns that make up an event id, starts a new session when the gap to the user's previous event is
>= ``--gap-minutes`` (or at the user's first event) and writes one row per session to Parquet.

Run by ``bench_ingest_sessionize.py`` in its own process so its peak RSS is measured like the Spark jobs'.
Prints one ``DUCKDB {json}`` line on stdout; nothing event-level ever reaches Python.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import duckdb

log = logging.getLogger("bench.duckdb")

# Mirrors docs/ingestion.md "Parsing and checks" for the REES46 mapping (trim, blank = missing; quantity is
# always '1' there, so bad_quantity cannot happen; a raw line cannot be malformed inside Parquet).
CLEAN = """
SELECT nullif(trim(user_id), '') AS user_id,
       nullif(trim(product_id), '') AS item_id,
       try_strptime(nullif(trim(event_time), ''), '%Y-%m-%d %H:%M:%S UTC') AS event_time,
       nullif(trim(event_type), '') AS event_type,
       nullif(trim(price), '') AS price_raw,
       try_cast(nullif(trim(price), '') AS DOUBLE) AS price,
       nullif(trim(user_session), '') AS source_session_id,
       CAST(date AS DATE) AS landing_date
FROM {reader}
"""
# The landing formats the synthetic shop writes (synthetic.format): every column read as text, as ingest does.
READERS = {
    "parquet": "read_parquet('{landing}/date=*/*.parquet', hive_partitioning = true)",
    "csv": "read_csv('{landing}/date=*/*.csv', header = true, all_varchar = true, hive_partitioning = true)",
}

VALID = """
WHERE user_id IS NOT NULL AND item_id IS NOT NULL AND event_time IS NOT NULL
  AND event_time <= CAST(landing_date + INTERVAL 1 DAY AS TIMESTAMP) + INTERVAL {future_hours} HOUR
  AND event_type IN ('view', 'cart', 'remove_from_cart', 'purchase')
  AND (price_raw IS NULL OR (price IS NOT NULL AND isfinite(price) AND price >= 0))
"""

SESSIONS = """
WITH clean AS ({clean}),
events AS (  -- same identity as the ingest's event_id: one row per (user, time, type, item, price, session)
  SELECT DISTINCT user_id, event_time, event_type, item_id, price, source_session_id FROM clean {valid}
),
marked AS (
  SELECT user_id, event_time, event_type,
         CASE WHEN lag(event_time) OVER w IS NULL
                OR epoch(event_time) - epoch(lag(event_time) OVER w) >= {gap_s} THEN 1 ELSE 0 END AS is_new
  FROM events WINDOW w AS (PARTITION BY user_id ORDER BY event_time)
),
numbered AS (
  SELECT *, sum(is_new) OVER (PARTITION BY user_id ORDER BY event_time
                              ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS session_no
  FROM marked
)
SELECT user_id, CAST(session_no AS BIGINT) AS session_no, min(event_time) AS session_start,
       max(event_time) AS session_end, count(*) AS n_events,
       count(*) FILTER (WHERE event_type = 'purchase') AS n_purchases
FROM numbered GROUP BY user_id, session_no
"""


def build_query(landing: Path, *, gap_minutes: int, future_hours: int, fmt: str = "parquet") -> str:
    """The whole job as one statement (the ``COPY`` body)."""
    clean = CLEAN.format(reader=READERS[fmt].format(landing=landing))
    valid = VALID.format(future_hours=future_hours)
    return SESSIONS.format(clean=clean, valid=valid, gap_s=gap_minutes * 60)


def _setting(con: duckdb.DuckDBPyConnection, name: str) -> str:
    row = con.execute(f"SELECT current_setting('{name}')").fetchone()
    return str(row[0]) if row else ""


def run(
    landing: Path, out: Path, *, threads: int, gap_minutes: int, future_hours: int, fmt: str = "parquet"
) -> dict[str, object]:
    """Run the query into ``out`` (Parquet); returns timings and counts read back from the small output."""
    out.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(config={"threads": threads, "temp_directory": str(out.parent / "duckdb_tmp")})
    t0 = time.perf_counter()
    query = build_query(landing, gap_minutes=gap_minutes, future_hours=future_hours, fmt=fmt)
    con.execute(f"COPY ({query}) TO '{out}' (FORMAT parquet)")
    query_s = time.perf_counter() - t0
    sessions, events, purchases = con.execute(
        f"SELECT count(*), sum(n_events), sum(n_purchases) FROM read_parquet('{out}')"
    ).fetchone() or (0, 0, 0)
    raw_rows = con.execute(
        f"SELECT sum(num_rows) FROM parquet_file_metadata('{landing}/date=*/*.parquet')"
        if fmt == "parquet"  # CSV: the raw rows would cost another full read; the ingest counts them
        else "SELECT NULL"
    ).fetchone()
    return {
        "duckdb_version": duckdb.__version__,
        "threads": threads,
        "memory_limit": _setting(con, "memory_limit"),
        "query_s": round(query_s, 3),
        "raw_rows": int(raw_rows[0]) if raw_rows and raw_rows[0] is not None else None,
        "events": int(events or 0),
        "sessions": int(sessions),
        "purchases": int(purchases or 0),
        "out": str(out),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--landing", type=Path, required=True, help="folder holding date=YYYY-MM-DD/*.parquet")
    p.add_argument("--out", type=Path, required=True, help="sessions Parquet file to write")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gap-minutes", type=int, default=30)
    p.add_argument("--max-future-hours", type=int, default=24)
    p.add_argument("--format", choices=sorted(READERS), default="parquet", help="landing files' format")
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run(
        ns.landing,
        ns.out,
        threads=ns.threads,
        gap_minutes=ns.gap_minutes,
        future_hours=ns.max_future_hours,
        fmt=ns.format,
    )
    log.info(
        "duckdb sessionized %s events into %s sessions in %.1f s",
        *(result[k] for k in ("events", "sessions", "query_s")),
    )
    sys.stdout.write(f"DUCKDB {json.dumps(result, sort_keys=True)}\n")


if __name__ == "__main__":
    main()
