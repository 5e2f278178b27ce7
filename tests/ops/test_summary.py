"""The human-readable end of the demo: what summarize_tables writes to stderr for a person."""

from __future__ import annotations

from shopformer.ops.summary import render

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
        {"user_id": "u1", "propensity_7d": 0.91, "price_sensitivity_segment": "high"},
        {"user_id": "u22", "propensity_7d": 0.5, "price_sensitivity_segment": None},
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
        "  user_id  propensity_7d  price_sensitivity_segment",
        "  u1       0.91           high                     ",
        "  u22      0.5            None                     ",
    ]
    assert "  score.metric           dates  mean  breaches" in lines
    assert "  propensity_7d.roc_auc  4      0.86  0       " in lines
    assert "  scores_user_scores: data/warehouse/scores/user_scores" in lines
