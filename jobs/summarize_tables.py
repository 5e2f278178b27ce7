"""Summarize what the pipeline's tables hold: row counts per layer, rejects by reason, session shape.

A read-only job: the demo ends with it, and operators run it to eyeball a night's output.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from shopformer import cli, tables
from shopformer.spark import build_spark


def main() -> None:
    args = cli.parse(cli.parser(__doc__), "summarize_tables")
    cfg = args.cfg
    spark = build_spark(cfg, "summarize_tables")
    summary: dict[str, object] = {}
    names = ("bronze_events", "bronze_events_rejected", "silver_events", "silver_sessions",
             "gold_user_snapshots", "gold_item_embeddings")  # fmt: skip
    for name in names:
        path = cfg.table(name)
        summary[name] = tables.read(spark, path).count() if tables.exists(spark, path) else None
    if summary["bronze_events"]:
        by_type = tables.read(spark, cfg.table("bronze_events")).groupBy("event_type").count()
        summary["events_by_type"] = {r["event_type"]: r["count"] for r in by_type.collect()}
    if summary["bronze_events_rejected"]:
        by_reason = tables.read(spark, cfg.table("bronze_events_rejected")).groupBy("reason").count()
        summary["rejected_by_reason"] = {r["reason"]: r["count"] for r in by_reason.collect()}
    if summary["silver_sessions"]:
        s = tables.read(spark, cfg.table("silver_sessions")).agg(
            F.round(F.avg("n_events"), 2).alias("avg_events_per_session"),
            F.round(F.avg("duration_s"), 1).alias("avg_duration_s"),
            F.round(F.avg((F.col("n_purchases") > 0).cast("double")), 4).alias("sessions_with_purchase"),
            F.count_distinct("user_id").alias("users"),
        )
        summary.update(s.first().asDict())
    if summary["gold_user_snapshots"]:
        snaps = (
            tables.read(spark, cfg.table("gold_user_snapshots"))
            .groupBy("as_of_date")
            .agg(
                F.count(F.lit(1)).alias("users"),
                F.round(F.avg("label_propensity"), 4).alias("propensity_rate"),
            )
        )
        summary["snapshots_by_as_of_date"] = {
            str(r["as_of_date"]): [r["users"], r["propensity_rate"]]
            for r in snaps.orderBy("as_of_date").collect()
        }
    cli.emit("SUMMARY", summary)


if __name__ == "__main__":
    cli.run_job(main)
