"""Sessionize bronze.events into silver.events (events + session_id) and silver.sessions.

Nightly: recomputes from the earliest event date the run's ingest touched (late events for yesterday
included) to --run-date/--end-date, seeded with the sessionized events just before, so the result equals
a full recompute. --full recomputes everything ingested up to --end-date.
"""

from __future__ import annotations

from dataclasses import asdict

from shopformer import cli, sessionize_run
from shopformer.spark import build_spark


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--full", action="store_true", help="recompute every session from all of bronze")
    args = cli.parse(p, "sessionize")
    spark = build_spark(args.cfg, "sessionize")
    report = sessionize_run.run(
        spark, args.cfg, start=args.run_date, end=args.end_date, run_id=args.run_id, full=args.ns.full
    )
    cli.emit("SESSIONIZE", asdict(report))


if __name__ == "__main__":
    cli.run_job(main)
