"""Weekly table maintenance: compact small files (Delta OPTIMIZE), then remove files no version within the
retention still needs (VACUUM), for every table of the pipeline.

Nightly jobs write one partition per date, so files accumulate per date; OPTIMIZE merges the small ones
(only partitions with several small files are rewritten) and VACUUM deletes what is no longer referenced
and older than ``maintenance.retain_hours`` (default 168 h: a week of time travel, Delta's own safety
floor). VACUUM also makes ``forget_users`` deletions physical within that retention. Prints one
``MAINTAIN {json}`` line with the file counts before and after, per table.
"""

from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from shopformer import cli, tables
from shopformer.config import Config
from shopformer.spark import build_spark

log = logging.getLogger(__name__)


def maintain(spark: SparkSession, cfg: Config, *, run_id: str) -> dict[str, dict[str, int]]:
    """OPTIMIZE then VACUUM each existing table; returns {table: {files_before, files_after}}."""
    s = cfg.settings.maintenance
    out: dict[str, dict[str, int]] = {}
    for name in sorted(cfg.section("tables")):
        path = cfg.table(name)
        if not tables.exists(spark, path):
            continue
        before = tables.file_count(spark, path)
        if s.optimize:
            tables.optimize(spark, path, run_id=run_id)
        tables.vacuum(spark, path, retain_hours=s.retain_hours)
        out[name] = {"files_before": before, "files_after": tables.file_count(spark, path)}
        log.info("maintained %s: %s", name, out[name])
    return out


def _maintain(args: cli.JobArgs) -> None:
    spark = build_spark(args.cfg, "maintain_tables")
    done = maintain(spark, args.cfg, run_id=args.run_id)
    cli.emit("MAINTAIN", {"retain_hours": args.cfg.settings.maintenance.retain_hours, "tables": done})


def main(argv: list[str] | None = None) -> int:
    """``jobs/maintain_tables.py``: weekly OPTIMIZE + VACUUM of every table."""
    return cli.run_main("maintain_tables", cli.parser(__doc__), argv, _maintain)
