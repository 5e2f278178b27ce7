"""Train the sequence model on gold.user_snapshots and register it; print the model-vs-baselines table.

Time-based split (train / valid / holdout by as-of date), next-item pretraining then fine-tuning of the
heads through TorchDistributor with Petastorm data, calibration on valid, evaluation on the holdout next to
the baselines, an MLflow run with the report, and the `champion` alias moved only if the gate passes.
"""

from __future__ import annotations

import sys
from dataclasses import asdict

from shopformer import cli, train_run
from shopformer.spark import build_spark


def main() -> None:
    args = cli.parse(cli.parser(__doc__), "train")
    spark = build_spark(args.cfg, "train")
    report = train_run.run(spark, args.cfg, run_date=args.run_date, run_id=args.run_id)
    sys.stderr.write(report.table + "\n")
    cli.emit("TRAIN", {k: v for k, v in asdict(report).items() if k != "table"})


if __name__ == "__main__":
    cli.run_job(main)
