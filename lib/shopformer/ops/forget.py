"""Right to be forgotten: delete given users' rows from every table that holds user rows (docs/operations.md).

Which rows: every table with a ``user_id`` column (bronze, silver, gold snapshots and user state, scores.*) by
(``source``,) ``user_id``; ``bronze.events_rejected`` has no user column, only the raw record, so its rows
whose ``raw_record`` holds the id as a whole token (a JSON value such as ``"user_id":"42"`` or a delimited
field of a raw line; a float export ``42.0`` counts too) are deleted. That match is deliberately generous:
a reject of another user that carries the same string in another field goes too (rejects feed nothing).

What stays out of reach: raw landing files, MLflow artifacts and the Delta files of older table versions
until VACUUM; the job documents what to do about each (docs/operations.md).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from shopformer import cli, tables
from shopformer.config import Config
from shopformer.errors import ConfigError
from shopformer.spark import build_spark

log = logging.getLogger(__name__)

USER_TABLES = (
    "bronze_events",
    "silver_events",
    "silver_sessions",
    "gold_user_snapshots",
    "gold_user_state",
    "scores_user_scores",
    "scores_user_embeddings",
    "scores_user_next_items",
)
RAW_TABLES = ("bronze_events_rejected",)
_WORD = r"A-Za-z0-9_.\-"  # characters that continue an id token: a match must not sit inside a longer one


def parse_users(spec: str) -> list[str]:
    """User ids, taken literally: from a file, one id per line (a line whose first non-blank character is
    ``#`` is a comment, blank lines are skipped, and a ``#`` inside an id is part of it), or from a
    comma-separated list (no comment syntax at all). ``512000020#x`` never deletes user ``512000020``."""
    path = Path(spec)
    if path.is_file():
        lines = [line.strip() for line in path.read_text().splitlines()]
        users = {line for line in lines if line and not line.startswith("#")}
    else:
        users = {u.strip() for u in spec.split(",")} - {""}
    if not users:
        raise ConfigError("--users names no user id (a file of ids, one a line, or id1,id2,...)")
    return sorted(users)


def user_keys(spark: SparkSession, users: Sequence[str], source: str | None) -> tuple[DataFrame, str]:
    """The ids as a small DataFrame ``k`` and the MERGE condition on a table ``t`` with ``user_id``."""
    return _keys(spark, "user_id", users, source, "t.user_id = k.user_id")


def raw_record_keys(spark: SparkSession, users: Sequence[str], source: str | None) -> tuple[DataFrame, str]:
    """Per id a regex matching it as a whole token of ``raw_record`` (optionally ``.0``), and the MERGE
    condition on ``bronze.events_rejected`` (``t``)."""
    patterns = [_token_pattern(u) for u in users]
    return _keys(spark, "pattern", patterns, source, "t.raw_record RLIKE k.pattern")


def _keys(
    spark: SparkSession, column: str, values: Sequence[str], source: str | None, on: str
) -> tuple[DataFrame, str]:
    keys = spark.createDataFrame([(v, source) for v in values], f"{column} string, source string")
    return keys, on + ("" if source is None else " AND t.source = k.source")


def _token_pattern(user: str) -> str:
    quoted = r"\Q" + user.replace(r"\E", r"\E\\E\Q") + r"\E"
    return f"(?<![{_WORD}]){quoted}(?:\\.0+)?(?![{_WORD}])"


def forget(
    spark: SparkSession,
    cfg: Config,
    users: Iterable[str],
    *,
    source: str | None,
    run_id: str,
    vacuum_hours: float | None = None,
) -> dict[str, int]:
    """Delete the users' rows from every user table (absent tables count 0); rows deleted per table.

    With ``vacuum_hours`` every one of these tables is vacuumed afterwards, so the rows leave the disk too."""
    ids = sorted(set(users))
    deleted: dict[str, int] = {}
    for name in (*USER_TABLES, *RAW_TABLES):
        keys, on = (raw_record_keys if name in RAW_TABLES else user_keys)(spark, ids, source)
        deleted[name] = tables.delete_matching(spark, cfg.table(name), keys, on, run_id=run_id)
    if vacuum_hours is not None:  # every table, so a rerun also clears what an earlier run left behind
        for name in deleted:
            tables.vacuum(spark, cfg.table(name), retain_hours=vacuum_hours)
    log.info("forgot %d user(s): %d rows", len(ids), sum(deleted.values()))
    return deleted


ABOUT = """\
Delete users' data from every table that holds user rows (right to be forgotten; docs/operations.md).

``--users`` is a file (one id per line) or a comma-separated list; ``--source`` limits the deletion to one
source's ids (ids are per source), otherwise every source's rows of those ids go. One Delta commit (a MERGE
that deletes, so the commit log does not record the ids) per table that has matching rows, so a rerun
deletes 0 rows. Deleted rows stay in older table versions
(time travel) until VACUUM: ``--vacuum-hours H`` vacuums every user table afterwards, keeping H hours of
history (0 removes the old files now; run it when no other job uses the tables). Raw landing files and
MLflow artifacts are outside its reach (docs/operations.md says what to do). The printed line holds counts
only, never the ids: ``FORGET {"users": n, "source": ..., "deleted": {table: rows}, "total": rows, ...}``.
"""


def _forget(args: cli.JobArgs) -> None:
    users = parse_users(args.ns.users)
    spark = build_spark(args.cfg, "forget_users")
    deleted = forget(
        spark, args.cfg, users, source=args.ns.source, run_id=args.run_id, vacuum_hours=args.ns.vacuum_hours
    )
    total = sum(deleted.values())
    cli.emit(
        "FORGET",
        {
            "users": len(users),
            "source": args.ns.source,
            "deleted": deleted,
            "total": total,
            "vacuum_hours": args.ns.vacuum_hours,
        },
    )


def main(argv: list[str] | None = None) -> int:
    """``jobs/forget_users.py``: delete users' rows from every table."""
    p = cli.parser(ABOUT)
    p.add_argument(
        "--users", required=True, help="a file of user ids (one a line, whole-line # comments) or id1,id2,..."
    )
    p.add_argument("--source", help="only this source's rows (default: every source)")
    p.add_argument("--vacuum-hours", type=float, help="VACUUM the user tables afterwards, retaining H hours")
    return cli.run_main("forget_users", p, argv, _forget, tag="FORGET")
