"""Summarize what the pipeline's tables hold: counts per layer, rejects, sessions, snapshots, latest scores.

A read-only job: the demo ends with it, and operators run it to eyeball a night's output.
"""

from __future__ import annotations

import sys

from shopformer import cli, summary
from shopformer.spark import build_spark


def main() -> None:
    args = cli.parse(cli.parser(__doc__), "summarize_tables")
    spark = build_spark(args.cfg, "summarize_tables")
    found = summary.summarize(spark, args.cfg)
    sys.stderr.write(summary.render(found))  # for a person; the SUMMARY line is for machines
    cli.emit("SUMMARY", found)


if __name__ == "__main__":
    cli.run_job(main)
