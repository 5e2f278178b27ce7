"""Score gold.user_snapshots of --run-date with the registered model into scores.user_scores,
scores.user_embeddings and scores.user_next_items (docs/scoring.md).

The model is ``train.registered_model`` at ``scoring.model_version`` (the ``champion`` alias by default, or a
version number). Each table's --run-date partition is replaced in one atomic commit; a missing snapshot
partition or a model that does not load stops the job before anything is written. A backfill
(--end-date) scores the as-of dates --run-date, +``snapshots.every_days``, ... in one Spark session.
"""

from __future__ import annotations

from dataclasses import asdict

from shopformer import cli, scoring_run
from shopformer.snapshots_run import as_of_dates
from shopformer.spark import build_spark


def main() -> None:
    args = cli.parse(cli.parser(__doc__), "score_users")
    dates = as_of_dates(args.run_date, args.end_date, int(args.cfg.get("snapshots.every_days")))
    spark = build_spark(args.cfg, "score_users")
    # Per-date run ids, so a backfill writes the same rows as the nightly run of each date.
    runs = [
        scoring_run.run(spark, args.cfg, run_date=d, run_id=args.ns.run_id or f"score_users:{d}")
        for d in dates
    ]
    reports = [asdict(r) for r in runs]
    if len(reports) == 1:
        cli.emit("SCORES", reports[0])
    else:
        total = sum(int(r["users_scored"]) for r in reports)
        cli.emit(
            "SCORES",
            {"as_of_dates": [r["as_of_date"] for r in reports], "users_scored": total, "runs": reports},
        )


if __name__ == "__main__":
    cli.run_job(main)
