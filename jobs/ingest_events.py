"""Ingest raw event files for a run date (or range) into bronze.events / bronze.events_rejected.

Reads each landing date's folder through the source mapping ``sources.<--source or ingest.source>``,
rejects bad rows with a reason code, collapses duplicates, writes both tables atomically per
(source, landing date) and prints the reconciled counts as one ``INGEST {json}`` line on stdout.
"""

from __future__ import annotations

from shopformer import cli, ingest_run
from shopformer.spark import build_spark


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
    cli.emit("INGEST", report.as_dict())


if __name__ == "__main__":
    cli.run_job(main)
