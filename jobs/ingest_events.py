"""Ingest raw event files for a run date (or range) into bronze.events / bronze.events_rejected.

Reads each landing date's folder through the source mapping ``sources.<--source or ingest.source>``,
rejects bad rows with a reason code, collapses duplicates, writes both tables atomically per
(source, landing date) and prints the reconciled counts as one JSON line on stdout.
"""

from __future__ import annotations

import json
import logging
import sys

from shopformer import cli, ingest_run
from shopformer.spark import build_spark


def _summary_logger() -> logging.Logger:
    """A logger whose records are bare JSON lines on stdout (machine-readable, e.g. for Airflow XCom)."""
    out = logging.getLogger("shopformer.jobs.ingest_events.summary")
    for old in list(out.handlers):  # bind to the current sys.stdout (it differs under test capture)
        out.removeHandler(old)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    out.addHandler(handler)
    out.setLevel(logging.INFO)
    out.propagate = False
    return out


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--source", help="source mapping name in conf `sources:` (default: ingest.source)")
    p.add_argument("--input", help="folder or file to read instead of the mapping's path (single date)")
    args = cli.parse(p, "ingest_events")
    source = args.ns.source or str(args.cfg.get("ingest.source"))
    spark = build_spark(args.cfg, "ingest_events")
    report = ingest_run.run(
        spark,
        args.cfg,
        source=source,
        start=args.run_date,
        end=args.end_date,
        run_id=args.run_id,
        input_path=args.ns.input,
    )
    _summary_logger().info(json.dumps(report.as_dict(), sort_keys=True))


if __name__ == "__main__":
    cli.run_job(main)
