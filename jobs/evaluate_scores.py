"""Evaluate the nightly scores into scores.score_quality (docs/scoring.md "Score quality").

For every scored as-of date in [--run-date - quality.lookback_days, --run-date]: ROC-AUC, PR-AUC, log loss,
ECE and top-decile lift of propensity_7d and churn_30d where gold.user_snapshots has matured labels, and PSI
of each score against the source's previous scored date. Thresholds are in conf ``quality``; a breach is
written to the table first, then the job exits 3 with one line naming it (1: the job itself failed).
"""

from __future__ import annotations

from dataclasses import asdict

from shopformer import cli, quality_run
from shopformer.spark import build_spark


def main() -> None:
    p = cli.parser(__doc__)
    args = cli.parse(p, "evaluate_scores")
    if args.end_date != args.run_date:
        p.error("evaluate_scores evaluates a window ending at --run-date: drop --end-date")
    spark = build_spark(args.cfg, "evaluate_scores")
    try:
        report = quality_run.run(spark, args.cfg, run_date=args.run_date, run_id=args.run_id)
    except quality_run.QualityBreachError as exc:
        cli.emit("QUALITY", asdict(exc.report))  # the summary line even when the run fails
        raise
    cli.emit("QUALITY", asdict(report))


if __name__ == "__main__":
    cli.run_job(main)
