"""Score quality and the SQL surface on real Spark + Delta: hand-made scores and labels with metrics worked
out by hand, written with tables.py, evaluated by quality_job.run, queried through the temporary views."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.features.snapshots import snapshot_schema
from shopformer.schemas import SCORES_USER_SCORES
from shopformer.scoring import publish, quality_job, sql_views

pytestmark = pytest.mark.integration  # the score-quality job against Delta tables

D1, D2 = dt.date(2024, 3, 4), dt.date(2024, 3, 11)
SETTINGS = [
    "quality.min_rows=4",
    "quality.psi_bins=2",
    "quality.max_ece.propensity_7d=0.5",
    "quality.max_psi.propensity_7d=0.5",
    "quality.min_roc_auc.churn_30d=0.99",  # crossed, but churn has 3 labelled rows < min_rows: no breach
]
USERS = [f"u{i}" for i in range(1, 9)]
# D1: matured propensity labels; ROC-AUC by hand: positives beat 4+4+2+2 of the 16 pairs = 0.75.
P1 = [0.9, 0.8, 0.4, 0.3, 0.7, 0.6, 0.2, 0.1]
Y1 = [1, 1, 1, 1, 0, 0, 0, 0]
CHURN = [0.2, 0.7, 0.9, 0.6, 0.1, 0.3, 0.05, 0.8]  # the same on both dates: PSI exactly 0
CHURN_REASONS = {  # churn_reasons of two users (the others have none: rows of an older release)
    "u3": [("purchase_recency", "no purchase in 41 days", 0.2), ("recency", "last active 9 days ago", 0.05)],
    "u8": [("tenure", "customer for 3 days", 0.1)],
}
CHURN_Y1 = [0, 1, 0, None, None, None, None, None]  # 3 labelled rows only
E1 = [-3.0, -2.5, -0.5, -1.0, -2.8, -1.2, -1.5, -2.0]
# D2: labels not matured yet. 6 of 8 propensities fall below D1's median (0.5).
P2 = [0.45, 0.35, 0.3, 0.25, 0.2, 0.1, 0.95, 0.85]
E2 = [-3.0, -2.5, -0.5, -1.0, -2.8, None, -1.5, -2.0]
SEG2 = ["high", "high", "low", "medium", "high", None, "medium", "high"]
REVENUE_90D = [500.0, 400.0, 300.0, 50.0, 0.0, 20.0, 10.0, 450.0]


def _scores(date: dt.date, p: list[float], e: list[float | None], seg: list[str | None]) -> list[tuple]:
    at = dt.datetime.combine(date, dt.time(), tzinfo=dt.UTC)
    return [
        (
            "shop",
            u,
            date,
            p[i],
            CHURN[i],
            e[i],
            seg[i],
            None,
            CHURN_REASONS.get(u),
            "shopformer",
            "3",
            f"score:{date}",
            at,
        )
        for i, u in enumerate(USERS)
    ]


def _snapshots(spark: SparkSession, cfg: Config, rows: list[dict[str, Any]]) -> None:
    """gold.user_snapshots rows holding only keys, labels and revenue; every other column null."""
    schema = snapshot_schema([int(w) for w in cfg.get("snapshots.windows_days")])
    given = {k for r in rows for k in r}
    df = spark.createDataFrame(
        [tuple(r.get(k) for k in sorted(given)) for r in rows], schema=_sub_schema(schema, sorted(given))
    )
    filled = df.select(
        *[F.col(f.name) if f.name in given else F.lit(None).cast(f.dataType).alias(f.name) for f in schema]
    )
    tables.replace_where(
        filled,
        cfg.table("gold_user_snapshots"),
        predicate="true",
        schema=schema,
        partition_by=["as_of_date"],
        run_id="snap",
    )


def _sub_schema(schema: StructType, cols: list[str]) -> StructType:
    return StructType([schema[c] for c in cols])


def write_world(spark: SparkSession, root: Path, *extra: str) -> Config:
    """Two scored dates of one source and their snapshots, under ``root``."""
    cfg = load_config("local", [f"paths.root={root}", *SETTINGS, *extra])
    scores = _scores(D1, P1, E1, ["high"] * 8) + _scores(D2, P2, E2, SEG2)
    tables.replace_where(
        spark.createDataFrame(scores, SCORES_USER_SCORES),
        cfg.table("scores_user_scores"),
        predicate="true",
        schema=SCORES_USER_SCORES,
        partition_by=["as_of_date"],
        run_id="score",
    )
    base = {"source": "shop", "vocab_version": "v1", "snapshot_run_id": "snap"}
    d1 = [
        base | {"user_id": u, "as_of_date": D1, "label_propensity": Y1[i], "label_churn": CHURN_Y1[i]}
        for i, u in enumerate(USERS)
    ]
    d2 = [
        base
        | {"user_id": u, "as_of_date": D2, "label_propensity": None, "label_churn": None}
        | {"revenue_90d": REVENUE_90D[i], "n_purchases_90d": 2}
        for i, u in enumerate(USERS)
    ]
    d1 = [r | {"revenue_90d": None, "n_purchases_90d": None} for r in d1]
    _snapshots(spark, cfg, d1 + d2)
    for d in (D1, D2):  # what the scoring job does last: both nights published, pending score quality
        publish.publish_scored(spark, cfg, run_date=d, run_id=f"score:{d}")
    return cfg


def quality_rows(spark: SparkSession, cfg: Config) -> list[dict[str, Any]]:
    rows = tables.read(spark, cfg.table("scores_score_quality")).collect()
    return sorted((r.asDict() for r in rows), key=lambda r: (r["as_of_date"], r["score"], r["metric"]))


@pytest.fixture(scope="module")
def world(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The world evaluated on D2, then evaluated again (same run id): both tables and reports."""
    cfg = write_world(spark, tmp_path_factory.mktemp("quality"))
    first = quality_job.run(spark, cfg, run_date=D2, run_id="quality:1")
    rows1 = quality_rows(spark, cfg)
    second = quality_job.run(spark, cfg, run_date=D2, run_id="quality:1")
    return {"cfg": cfg, "report": first, "report2": second, "rows": rows1, "rows2": quality_rows(spark, cfg)}


def _get(rows: list[dict[str, Any]], date: dt.date, score: str, metric: str) -> dict[str, Any]:
    found = [r for r in rows if (r["as_of_date"], r["score"], r["metric"]) == (date, score, metric)]
    assert len(found) == 1, (date, score, metric, found)
    return found[0]


def test_label_metrics_match_hand_computations(world: dict[str, Any]) -> None:
    rows = world["rows"]
    expected = {
        "roc_auc": 0.75,  # 12 of 16 (positive, negative) pairs ordered right
        "pr_auc": (1 / 1 + 2 / 2 + 3 / 5 + 4 / 6) / 4,  # precision at each positive, by descending score
        "lift_top_decile": 2.0,  # top ceil(0.8) = 1 user is a positive: rate 1 / base rate 0.5
        "ece": sum(abs(y - p) for y, p in zip(Y1, P1, strict=True)) / 8,  # 8 distinct scores: own bins
        "log_loss": -sum(math.log(p if y else 1 - p) for y, p in zip(Y1, P1, strict=True)) / 8,
    }
    for metric, value in expected.items():
        r = _get(rows, D1, "propensity_7d", metric)
        assert r["value"] == pytest.approx(value, abs=1e-12), metric
        assert (r["n"], r["base_rate"], r["model_version"]) == (8, 0.5, "3")
        assert (r["evaluated_on"], r["run_id"], r["reference_date"]) == (D2, "quality:1", None)
    auc = _get(rows, D1, "propensity_7d", "roc_auc")
    assert (auc["threshold"], auc["breached"], auc["note"]) == (0.6, False, None)
    assert _get(rows, D1, "propensity_7d", "pr_auc")["threshold"] is None


def test_too_few_labels_are_recorded_with_a_note_not_a_breach(world: dict[str, Any]) -> None:
    churn_auc = _get(world["rows"], D1, "churn_30d", "roc_auc")
    assert churn_auc["n"] == 3 and churn_auc["value"] == pytest.approx(0.5)
    assert churn_auc["value"] < churn_auc["threshold"] == 0.99
    assert churn_auc["breached"] is False
    assert "n=3 < quality.min_rows=4" in churn_auc["note"]


def test_psi_against_the_previous_scored_date(world: dict[str, Any]) -> None:
    rows = world["rows"]
    prop = _get(rows, D2, "propensity_7d", "psi")
    # D1's median 0.5 splits 2 bins with shares (0.5, 0.5); D2 puts (6/8, 2/8) in them.
    hand = (0.75 - 0.5) * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5)
    assert prop["value"] == pytest.approx(hand, abs=1e-12)
    assert (prop["reference_date"], prop["n"], prop["threshold"], prop["breached"]) == (D1, 8, 0.5, False)
    assert _get(rows, D2, "churn_30d", "psi")["value"] == 0.0
    assert _get(rows, D2, "price_elasticity", "psi")["n"] == 7  # the null elasticity is not a value
    assert not [r for r in rows if r["metric"] == "psi" and r["as_of_date"] == D1]  # no previous date


def test_dates_without_matured_labels_get_drift_but_no_auc(world: dict[str, Any]) -> None:
    d2 = {(r["score"], r["metric"]) for r in world["rows"] if r["as_of_date"] == D2}
    assert d2 == {("propensity_7d", "psi"), ("churn_30d", "psi"), ("price_elasticity", "psi")}
    report = world["report"]
    assert (report.labelled_dates, report.drift_dates) == ([str(D1)], [str(D2)])
    assert report.breaches == [] and report.failing == []
    assert report.rows == len(world["rows"]) == 2 * 5 + 3


def test_a_rerun_gives_an_identical_table(world: dict[str, Any]) -> None:
    assert world["rows2"] == world["rows"]
    assert world["report2"] == world["report"]


def test_a_breach_is_written_then_raised(spark: SparkSession, tmp_path: Path) -> None:
    cfg = write_world(spark, tmp_path, "quality.max_psi.propensity_7d=0.25")
    with pytest.raises(
        quality_job.QualityBreachError, match=r"shop 2024-03-11 propensity_7d psi=0\.2747 > 0\.25"
    ):
        quality_job.run(spark, cfg, run_date=D2, run_id="quality:b")
    breached = [r for r in quality_rows(spark, cfg) if r["breached"]]
    assert [(r["as_of_date"], r["score"], r["metric"], r["threshold"]) for r in breached] == [
        (D2, "propensity_7d", "psi", 0.25)
    ]
    nights = tables.read(spark, cfg.table("scores_published_nights")).orderBy("as_of_date").collect()
    assert [(r["as_of_date"], r["quality_verdict"], r["quality_run_id"]) for r in nights] == [
        (D1, "passed", "quality:b"),
        (D2, "breached", "quality:b"),  # judged before the breach was raised
    ]


def test_every_sql_example_runs_and_returns_the_expected_users(
    spark: SparkSession, world: dict[str, Any]
) -> None:
    views = sql_views.register_views(spark, world["cfg"])
    assert set(views) == {
        "scores_published_nights",
        "scores_user_scores",
        "scores_user_embeddings",
        "scores_user_next_items",
        "scores_latest_user_scores",
        "scores_score_quality",
        "gold_user_snapshots",
        "silver_published_dates",
        "silver_events",
        "silver_sessions",
    }
    examples = sql_views.example_queries()
    results = {name: spark.sql(query).collect() for name, query in examples.items()}
    assert set(results) >= {"likely_buyers_this_week", "high_value_churn_risk", "coupon_price_sensitive"}
    buyers = results["likely_buyers_this_week"]
    assert [r["user_id"] for r in buyers[:3]] == ["u7", "u8", "u1"]
    assert {r["as_of_date"] for r in buyers} == {D2}
    assert [r["user_id"] for r in results["high_value_churn_risk"]] == ["u8", "u2"]
    assert [r["user_id"] for r in results["coupon_price_sensitive"]] == ["u1", "u5", "u2"]
    assert [tuple(r)[3:] for r in results["churn_risk_with_reasons"]] == [
        (0.9, "no purchase in 41 days", 0.2, "last active 9 days ago"),
        (0.8, "customer for 3 days", 0.1, None),
        (0.7, None, None, None),
        (0.6, None, None, None),
    ]
    over_time = {(r["as_of_date"], r["score"]): r for r in results["score_quality_over_time"]}
    assert over_time[(D1, "propensity_7d")]["roc_auc"] == pytest.approx(0.75)
    assert over_time[(D2, "propensity_7d")]["psi"] == pytest.approx(0.2746530721670274)
    assert results["quality_breaches"] == []
    path_based = spark.sql(
        f"SELECT count(*) AS n FROM {sql_views.delta_ref(world['cfg'].table('scores_user_scores'))}"
    )
    assert path_based.first()["n"] == 16
