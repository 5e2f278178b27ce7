"""What the pipeline's tables hold, for operators and the demo: counts per layer, rejects by reason,
session shape, snapshots per as-of date, the newest scores and their quality. Reads only; small results."""

from __future__ import annotations

import logging
import sys
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shopformer import cli, registry, tables
from shopformer.config import Config
from shopformer.scoring import sql_views
from shopformer.spark import build_spark

log = logging.getLogger(__name__)


def summarize(spark: SparkSession, cfg: Config) -> dict[str, object]:
    """The SUMMARY line's content (each part only when its table exists)."""
    summary: dict[str, object] = {}
    names = (
        "bronze_events",
        "bronze_events_rejected",
        "silver_events",
        "silver_sessions",
        "gold_user_snapshots",
        "gold_item_embeddings",
    )
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
    if tables.exists(spark, cfg.table("scores_user_scores")):
        summary |= scores_summary(spark, cfg)
    summary["champion"] = champion_summary(cfg)
    return summary


def champion_summary(cfg: Config) -> dict[str, Any] | None:
    """The registered champion: version, its training run, where its report is, its holdout table."""
    uri = str(cfg.get("paths.mlflow_tracking_uri"))
    mlflow.set_tracking_uri(uri)
    name = cfg.settings.train.registered_model
    champion = registry.version_at(name)
    if champion is None:
        return None
    run = MlflowClient().get_run(champion.run_id)
    report = f"{run.info.artifact_uri}/report"
    try:
        table = mlflow.artifacts.load_text(f"{report}/table.txt")
    except mlflow.exceptions.MlflowException:  # runs trained before the table was logged
        table = None
    return {
        "name": name,
        "version": str(champion.version),
        "mlflow_run_id": run.info.run_id,
        "report": f"{report}/report.md",
        "holdout_table": table,
        "mlflow_ui": f"mlflow ui --backend-store-uri {uri}",
    }


def scores_summary(spark: SparkSession, cfg: Config) -> dict[str, object]:
    """A few rows of scores_latest_user_scores, score quality per score and metric, and where to query.

    The rows are numbered, not named: this output goes to logs, Airflow task logs and terminals, where a
    user id is personal data that ``forget_users`` cannot reach (query the view for who they are)."""
    sql_views.register_views(spark, cfg)
    top = spark.sql(
        "SELECT as_of_date, model_version, source, round(propensity_7d, 4) AS propensity_7d,"
        " round(churn_30d, 4) AS churn_30d, round(price_elasticity, 3) AS price_elasticity,"
        " price_sensitivity_segment FROM scores_latest_user_scores"
        " ORDER BY propensity_7d DESC, churn_30d DESC, user_id LIMIT 5"
    )
    quality = spark.sql(
        "SELECT score, metric, count(*) AS dates, round(avg(value), 4) AS mean_value,"
        " sum(CAST(breached AS INT)) AS breaches FROM scores_score_quality WHERE value IS NOT NULL"
        " GROUP BY score, metric ORDER BY score, metric"
    )
    rows = []
    for n, r in enumerate(top.collect(), 1):  # five rows
        row = r.asDict()
        rows.append({"as_of_date": row.pop("as_of_date"), "rank": n, **row})
    log.info("scores_latest_user_scores, top 5 by propensity_7d:\n%s", "\n".join(map(str, rows)))
    qual = {
        f"{r['score']}.{r['metric']}": [r["dates"], r["mean_value"], r["breaches"]] for r in quality.collect()
    }
    names = ("scores_user_scores", "scores_user_embeddings", "scores_user_next_items", "scores_score_quality")
    return {
        "latest_user_scores_top5": rows,
        "score_quality_dates_mean_breaches": qual,
        "score_tables": {n: cfg.table(n) for n in names},
        "query_with": "SELECT * FROM delta.`<path>` in spark-sql, or "
        "shopformer.scoring.sql_views.register_views"
        "(spark, cfg) then the views in sql/examples.sql (docs/scoring.md)",
    }


def _rows(rows: list[dict[str, Any]]) -> str:
    """Fixed-width text of a few dict rows (same keys)."""
    if not rows:
        return "  (none)"
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(width[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows]
    return "\n".join("  " + ln for ln in lines)


def render(summary: dict[str, Any]) -> str:
    """The summary for a person at a terminal: the champion's holdout table, score rows, score quality,
    where the report, the MLflow UI and the tables are, and how to query them."""
    out = ["", "=" * 100, "shopformer: what the pipeline produced", "=" * 100]
    champ = summary.get("champion")
    if champ:
        out += [f"\nModel {champ['name']} v{champ['version']} (champion), model vs baselines on the holdout:"]
        out += ["  " + ln for ln in (champ["holdout_table"] or "(no table logged)").splitlines()]
        out += [f"\nReport with plots: {champ['report']} (+ PNGs beside it)"]
        out += [f"MLflow UI: .venv/bin/{champ['mlflow_ui']}  -> http://127.0.0.1:5000"]
    if "latest_user_scores_top5" in summary:
        out += [
            "\nscores_latest_user_scores, top 5 by propensity_7d:",
            _rows(summary["latest_user_scores_top5"]),
        ]
        quality = [
            {"score.metric": k, "dates": v[0], "mean": v[1], "breaches": v[2]}
            for k, v in summary["score_quality_dates_mean_breaches"].items()
        ]
        out += ["\nscore quality of the scored dates whose outcomes are known:", _rows(quality)]
        out += ["\nScore tables (Delta):"] + [f"  {k}: {v}" for k, v in summary["score_tables"].items()]
        out += [f"Query them: {summary['query_with']}"]
    return "\n".join(out) + "\n"


ABOUT = """\
Summarize what the pipeline's tables hold: counts per layer, rejects, sessions, snapshots, latest scores.

A read-only job: the demo ends with it, and operators run it to eyeball a night's output.
"""


def _summarize(args: cli.JobArgs) -> None:
    spark = build_spark(args.cfg, "summarize_tables")
    found = summarize(spark, args.cfg)
    sys.stderr.write(render(found))  # for a person; the SUMMARY line is for machines
    cli.emit("SUMMARY", found)


def main(argv: list[str] | None = None) -> int:
    """``jobs/summarize_tables.py``: what the tables hold, for a person and as one SUMMARY line."""
    return cli.run_main("summarize_tables", cli.parser(ABOUT), argv, _summarize, tag="SUMMARY")
