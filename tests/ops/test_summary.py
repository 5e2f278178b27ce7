"""The human-readable end of the demo: what summarize_tables writes to stderr for a person, and that
neither it nor the logs or the SUMMARY line name a user."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from shopformer import tables
from shopformer.config import load_config
from shopformer.ops.jobs import job_main
from shopformer.ops.summary import render
from shopformer.schemas import SCORES_PUBLISHED_NIGHTS, SCORES_USER_SCORES

CHAMPION = {
    "name": "shopformer",
    "version": "3",
    "mlflow_run_id": "abc",
    "report": "file:///tmp/mlruns/1/abc/artifacts/report/report.md",
    "holdout_table": "task  model  roc_auc\npropensity  shopformer *  0.860",
    "mlflow_ui": "mlflow ui --backend-store-uri sqlite:///data/mlflow.db",
}
SCORES = {
    "latest_user_scores_top5": [
        {"rank": 1, "propensity_7d": 0.91, "price_sensitivity_segment": "high"},
        {"rank": 2, "propensity_7d": 0.5, "price_sensitivity_segment": None},
    ],
    "score_quality_dates_mean_breaches": {"propensity_7d.roc_auc": [4, 0.86, 0]},
    "score_tables": {"scores_user_scores": "data/warehouse/scores/user_scores"},
    "query_with": "SELECT * FROM delta.`<path>`",
}


def test_render_without_a_champion_or_scores_shows_only_the_heading() -> None:
    text = render({"bronze_events": 10, "champion": None})
    assert "what the pipeline produced" in text
    assert "champion" not in text and "scores_latest_user_scores" not in text


def test_render_shows_the_holdout_table_the_report_and_the_mlflow_ui() -> None:
    lines = render({"champion": CHAMPION}).splitlines()
    assert "Model shopformer v3 (champion), model vs baselines on the holdout:" in lines
    assert "  propensity  shopformer *  0.860" in lines
    assert f"Report with plots: {CHAMPION['report']} (+ PNGs beside it)" in lines
    assert any(ln.startswith("MLflow UI: .venv/bin/mlflow ui --backend-store-uri sqlite:///") for ln in lines)


def test_render_aligns_score_rows_and_lists_quality_and_tables() -> None:
    lines = render({"champion": None, **SCORES}).splitlines()
    i = lines.index("scores_latest_user_scores, top 5 by propensity_7d:")
    assert lines[i + 1 : i + 4] == [
        "  rank  propensity_7d  price_sensitivity_segment",
        "  1     0.91           high                     ",
        "  2     0.5            None                     ",
    ]
    assert "  score.metric           dates  mean  breaches" in lines
    assert "  propensity_7d.roc_auc  4      0.86  0       " in lines
    assert "  scores_user_scores: data/warehouse/scores/user_scores" in lines


@pytest.mark.integration  # in-process job on Spark/Delta, MLflow (SQLite) for the champion lookup
def test_the_summary_names_no_user_in_its_logs_or_its_result_line(
    spark: SparkSession,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The top five rows of the latest published night are numbered, with their scores, and no user id
    reaches stdout, stderr or any log record (before: each row carried its user id, in all three)."""
    cfg = load_config("local", [f"paths.root={tmp_path}"])
    night, at = dt.date(2024, 2, 19), dt.datetime(2024, 2, 19, tzinfo=dt.UTC)
    users = [f"5120{n:05d}-shop#{n}" for n in range(8)]
    scores = [
        (
            "shop",
            u,
            night,
            0.9 - n / 10,
            0.1 * n,
            -1.0 - n,
            "high",
            None,
            None,
            "shopformer",
            "2",
            "score:1",
            at,
        )
        for n, u in enumerate(users)
    ]
    published = [("shop", night, "shopformer", "2", "score:1", 8, "passed", night, "q:1", at, "score:1")]
    for name, rows, schema in (
        ("scores_user_scores", scores, SCORES_USER_SCORES),
        ("scores_published_nights", published, SCORES_PUBLISHED_NIGHTS),
    ):
        tables.overwrite(spark.createDataFrame(rows, schema), cfg.table(name), schema=schema, run_id="t")
    with caplog.at_level(logging.INFO):
        assert (
            job_main("summarize_tables")(["--run-date", "2024-02-19", "--set", f"paths.root={tmp_path}"]) == 0
        )
    out, err = capsys.readouterr()
    for text in (out, err, caplog.text):
        assert not [u for u in users if u in text or u.split("-")[0] in text]  # not even the bare number
    line = json.loads(
        next(ln for ln in out.splitlines() if ln.startswith("SUMMARY ")).removeprefix("SUMMARY ")
    )
    assert line["latest_user_scores_top5"] == [
        {
            "as_of_date": "2024-02-19",
            "rank": n + 1,
            "model_version": "2",
            "source": "shop",
            "propensity_7d": round(0.9 - n / 10, 4),
            "churn_30d": round(0.1 * n, 4),
            "price_elasticity": -1.0 - n,
            "price_sensitivity_segment": "high",
        }
        for n in range(5)
    ]
    assert "top 5 by propensity_7d" in caplog.text and "rank" in err
