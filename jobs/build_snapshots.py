"""Build gold.user_snapshots for one as-of date (nightly) or many (training sets) in one pass.

As-of dates: --run-date, then every ``snapshots.every_days`` up to --end-date. Features use only events
before each as-of date; labels appear where their future window lies before the label cutoff.
--build-vocab first writes a new vocabulary version (``v<last as-of date>``) from the events before the
last as-of date; otherwise ``snapshots.vocab_version`` (default: the newest) is used.
"""

from __future__ import annotations

from dataclasses import asdict

from shopformer import cli, snapshots_run
from shopformer.spark import build_spark


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--build-vocab", action="store_true", help="build a new vocabulary version first")
    args = cli.parse(p, "build_snapshots")
    spark = build_spark(args.cfg, "build_snapshots")
    report = snapshots_run.run(
        spark,
        args.cfg,
        start=args.run_date,
        end=args.end_date,
        run_id=args.run_id,
        build_vocab=args.ns.build_vocab,
    )
    cli.emit("SNAPSHOTS", asdict(report))


if __name__ == "__main__":
    cli.run_job(main)
