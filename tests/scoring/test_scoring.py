"""Nightly scoring on real engines: snapshots in Delta + a model registered in MLflow (SQLite) -> the pandas
UDF on Spark workers -> scores.* Delta tables. The model is a tiny untrained one registered directly (no
TorchDistributor): scoring must reproduce whatever the model says, trained or not."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import registry, tables
from shopformer.config import Config, load_config
from shopformer.features import job as snapshots_job
from shopformer.features.aggregates import feature_names
from shopformer.features.vocab import VocabularyChangedError, fingerprint_text, first_frequent_id
from shopformer.model import data as train_data
from shopformer.model import pyfunc
from shopformer.model.evaluation import Calibrator
from shopformer.model.inference import predict_frame
from shopformer.model.network import (
    ModelConfig,
    ShopformerModel,
    load_checkpoint,
    save_checkpoint,
    vocab_fields,
)
from shopformer.schemas import SILVER_EVENTS
from shopformer.scoring import job as scoring_job
from shopformer.scoring import quality_job, sql_views
from shopformer.scoring import transforms as scoring
from tests.features.test_snapshots import random_rows, silver

TINY = [
    "snapshots.max_len=8",
    "snapshots.every_days=7",
    "snapshots.windows_days=[7,30]",
    "snapshots.price_max_views=4",
    "scoring.top_k=3",
    "scoring.arrow_batch_size=16",
]
T = dt.date(2024, 2, 19)
SCORE_TABLES = ("scores_user_scores", "scores_user_embeddings", "scores_user_next_items")
# Users who only ever buy: their sequences hold no view, so their elasticity must be null.
BUYERS = [(f"b{n}", f"2024-02-0{n + 1} 10:00:00", "purchase", "i1", 20.0, "c1") for n in range(3)]


@pytest.fixture(scope="module")
def shop(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A small random shop (with buy-only users) snapshotted on T with a new vocabulary."""
    root: Path = tmp_path_factory.mktemp("scoring")
    cfg = load_config("local", [f"paths.root={root}", *TINY])
    events = silver(spark, random_rows(seed=11, users=40, n=1500, days=49) + BUYERS)
    tables.overwrite(events, cfg.table("silver_events"), schema=SILVER_EVENTS, run_id="t")
    snapshots_job.run(spark, cfg, start=T, end=T, run_id="s", build_vocab=True)
    return cfg


@pytest.fixture(scope="module")
def checkpoint(spark: SparkSession, shop: Config) -> str:
    """A tiny random-weight model with calibrators, registered and promoted to champion; its file path."""
    root = Path(str(shop.get("paths.root")))
    sizes, counts, vocab = train_data.vocabulary(spark, shop, f"v{T.isoformat()}")
    names = feature_names([7, 30])
    torch.manual_seed(3)
    config = ModelConfig.preset("tiny", **vocab_fields(sizes), max_len=8, aggregate_names=tuple(names))
    model = ShopformerModel(config)
    model.scaler.fit(_snapshot_rows(spark, shop)[names].to_numpy(dtype=np.float64))
    model.set_item_counts(counts)
    calibrators = {
        "propensity": Calibrator("platt", {"a": 0.8, "b": -0.3}).to_dict(),
        "churn": Calibrator("platt", {"a": 1.2, "b": 0.2}).to_dict(),
    }
    path = str(root / "model.pt")
    save_checkpoint(
        path, model.eval(), extra={"vocab": vocab, "windows_days": [7, 30], "calibrators": calibrators}
    )
    mlflow.set_tracking_uri(str(shop.get("paths.mlflow_tracking_uri")))
    experiment = mlflow.create_experiment("scoring-test", artifact_location=str(root / "mlartifacts"))
    with mlflow.start_run(experiment_id=experiment):
        version = pyfunc.log_model(path, "shopformer")
    registry.promote("shopformer", version)
    return path


@pytest.fixture(scope="module")
def scored_twice(spark: SparkSession, shop: Config, checkpoint: str) -> dict[str, object]:
    """Score T, keep the tables, score T again: the first run's rows, versions and reports."""
    first = scoring_job.run(spark, shop, run_date=T, run_id="score:1")
    before = {t: _partition(spark, shop, t).collect() for t in SCORE_TABLES}
    versions = {t: tables.version(spark, shop.table(t)) for t in SCORE_TABLES}
    second = scoring_job.run(spark, shop, run_date=T, run_id="score:1")
    return {"first": first, "second": second, "before": before, "versions": versions}


def _snapshot_rows(spark: SparkSession, cfg: Config) -> pd.DataFrame:
    return tables.read(spark, cfg.table("gold_user_snapshots")).where(F.col("as_of_date") == T).toPandas()


def _partition(spark: SparkSession, cfg: Config, table: str) -> DataFrame:
    return tables.read(spark, cfg.table(table)).where(F.col("as_of_date") == T)


@pytest.mark.integration  # module fixtures: snapshots job, a trained checkpoint, two scoring runs
def test_rescoring_a_date_replaces_it_with_identical_rows(
    spark: SparkSession, shop: Config, scored_twice: dict
) -> None:
    for t in SCORE_TABLES:
        now = _partition(spark, shop, t)
        assertDataFrameEqual(now, spark.createDataFrame(scored_twice["before"][t], now.schema))
        assert tables.version(spark, shop.table(t)) == scored_twice["versions"][t] + 1
    report = scored_twice["second"]
    assert report == scored_twice["first"]
    n = len(_snapshot_rows(spark, shop))
    assert (report.snapshots, report.users_scored, report.embeddings) == (n, n, n)
    assert report.next_item_rows == 3 * n and report.model_version == "1"
    scores = _partition(spark, shop, "scores_user_scores")
    at = F.date_format("scored_at", "yyyy-MM-dd HH:mm:ss").alias("at")  # in the session's zone, UTC
    lineage = scores.select("model_name", "model_version", "run_id", at).distinct().collect()
    assert [tuple(r) for r in lineage] == [("shopformer", "1", "score:1", "2024-02-19 00:00:00")]


@pytest.mark.integration  # module fixtures: snapshots job, a trained checkpoint, two scoring runs
def test_scores_equal_the_models_own_predictions(
    spark: SparkSession, shop: Config, checkpoint: str, scored_twice: dict
) -> None:
    model, _, extra = load_checkpoint(checkpoint)
    snaps = _snapshot_rows(spark, shop).sort_values("user_id")
    rows = pd.concat([snaps[snaps["user_id"].str.startswith("u")].head(8), snaps[snaps["user_id"] == "b0"]])
    rows = rows.reset_index(drop=True)  # 8 browsing users, then one who only buys
    min_id = first_frequent_id(int(extra["vocab"]["hash_buckets"]))
    want = predict_frame(
        model, rows, calibrators=extra["calibrators"], top_k=3, min_item_id=min_id, reasons=3
    )
    users = rows["user_id"].tolist()
    got = _partition(spark, shop, "scores_user_scores").where(F.col("user_id").isin(users)).toPandas()
    got = got.set_index("user_id").loc[users]
    np.testing.assert_allclose(got["propensity_7d"], want["propensity"], atol=1e-5)
    np.testing.assert_allclose(got["churn_30d"], want["churn"], atol=1e-5)
    np.testing.assert_allclose(got["price_elasticity"][:-1], want["price_elasticity"][:-1], atol=1e-5)
    assert np.isnan(got["price_elasticity"].iloc[-1]) and got["price_sensitivity_segment"].iloc[-1] is None
    for task, column in (("propensity", "propensity_reasons"), ("churn", "churn_reasons")):
        stored = [[(r["driver"], r["reason"]) for r in row] for row in got[column]]
        assert stored == [[(r["driver"], r["reason"]) for r in row] for row in want[f"{task}_reasons"]]
        assert all(len(row) == 3 for row in stored)  # a random model: every driver moves the score a bit
        effects = [[r["effect"] for r in row] for row in got[column]]
        np.testing.assert_allclose(
            effects, [[r["effect"] for r in row] for row in want[f"{task}_reasons"]], atol=1e-6
        )
    vectors = _partition(spark, shop, "scores_user_embeddings").where(F.col("user_id").isin(users)).toPandas()
    got_vectors = np.stack(vectors.set_index("user_id").loc[users, "user_vector"].to_numpy())
    np.testing.assert_allclose(got_vectors, want["user_vector"], atol=1e-5)
    tokens = {i: t for t, i in extra["vocab"]["tokens"]["item"].items()}
    items = _partition(spark, shop, "scores_user_next_items").where(F.col("user_id") == users[0])
    assert [r["item_id"] for r in items.orderBy("rank").collect()] == [
        tokens[i] for i in want["next_items"][0]
    ]


@pytest.mark.integration  # module fixtures: snapshots job, a trained checkpoint, two scoring runs
def test_segments_are_elasticity_terciles(spark: SparkSession, shop: Config, scored_twice: dict) -> None:
    scores = _partition(spark, shop, "scores_user_scores").toPandas()
    assert scores.loc[scores["user_id"].str.startswith("b"), "price_elasticity"].isna().all()
    rated = scores.dropna(subset=["price_elasticity"])
    assert rated["price_sensitivity_segment"].notna().all() and (rated["price_elasticity"] < 0).all()
    counts = rated["price_sensitivity_segment"].value_counts()
    assert set(counts.index) == {"low", "medium", "high"}
    assert all(abs(c - len(rated) / 3) <= 1 for c in counts)
    by = rated.groupby("price_sensitivity_segment")["price_elasticity"]
    assert by.max()["high"] <= by.min()["medium"] and by.max()["medium"] <= by.min()["low"]
    assert scored_twice["first"].segments == counts.to_dict()


def test_scoring_runs_a_task_per_core_at_least_and_more_as_the_night_grows(spark: SparkSession) -> None:
    """A night's snapshots are one file of one row group: read as is, one core scored every user."""
    cores = spark.sparkContext.defaultParallelism
    assert scoring_job.scoring_partitions(spark, scoring_job.ROWS_PER_TASK) is None  # one task's rows
    assert scoring_job.scoring_partitions(spark, scoring_job.ROWS_PER_TASK + 1) == max(cores, 2)
    big = scoring_job.ROWS_PER_TASK * (cores + 1)
    assert scoring_job.scoring_partitions(spark, big) == cores + 1
    assert scoring_job.scoring_partitions(spark, big + 1) == cores + 2


def test_segment_ranks_ties_and_keeps_nulls_out(spark: SparkSession) -> None:
    rows = [("s", f"u{n}", -v) for n, v in enumerate([5.0, 4.0, 3.0, 3.0, 2.0, 1.0, 0.5])]
    df = spark.createDataFrame(
        [*rows, ("s", "x", None), ("t", "y", -1.0)], "source string, user_id string, e double"
    )
    got = df.select("user_id", scoring.segment(F.col("e"), ["source"]).alias("seg"))
    want = [("u0", "high"), ("u1", "high"), ("u2", "high"), ("u3", "medium"), ("u4", "medium")]
    want += [("u5", "low"), ("u6", "low"), ("x", None), ("y", "high")]
    assertDataFrameEqual(got, spark.createDataFrame(want, "user_id string, seg string"))


@pytest.mark.integration  # needs the module's snapshots and trained checkpoint
def test_missing_snapshots_or_a_bad_model_fail_before_writing(
    spark: SparkSession, shop: Config, checkpoint: str, tmp_path: Path
) -> None:
    root = str(shop.get("paths.root"))
    fresh = [f"tables.{t}={tmp_path / t}" for t in SCORE_TABLES]
    empty_day = load_config("local", [f"paths.root={root}", *TINY, *fresh])
    with pytest.raises(scoring_job.ScoringInputError, match="no rows for as_of_date 2024-03-04"):
        scoring_job.run(spark, empty_day, run_date=dt.date(2024, 3, 4), run_id="score:x")
    assert not any(tables.exists(spark, str(tmp_path / t)) for t in SCORE_TABLES)
    before = {t: tables.version(spark, shop.table(t)) for t in SCORE_TABLES}
    bad = load_config("local", [f"paths.root={root}", *TINY, "scoring.model_version=99"])
    with pytest.raises(scoring_job.ModelLoadError, match=r"'99'.*scoring\.model_version"):
        scoring_job.run(spark, bad, run_date=T, run_id="score:y")
    assert {t: tables.version(spark, shop.table(t)) for t in SCORE_TABLES} == before


@pytest.mark.integration  # needs the module's snapshots and trained checkpoint; scores twice, judges once
def test_a_night_killed_between_its_commits_is_invisible_until_rerun_and_judged(
    spark: SparkSession, shop: Config, checkpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's half night, through the real job: killed after scores.user_scores, the night is in that
    table but in no view; the rerun publishes it (pending), score quality judges it, then every view
    shows exactly the three tables' rows."""
    names = [*SCORE_TABLES, "scores_published_nights", "scores_score_quality"]
    cfg = load_config(
        "local",
        [f"paths.root={shop.get('paths.root')}", *TINY, *[f"tables.{t}={tmp_path / t}" for t in names]],
    )
    write = tables.replace_where

    def killed_after_one(*args: object, **kwargs: object) -> None:
        if tables.exists(spark, cfg.table("scores_user_scores")):
            raise RuntimeError("killed between commits")
        write(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tables, "replace_where", killed_after_one)
    with pytest.raises(RuntimeError, match="killed between commits"):
        scoring_job.run(spark, cfg, run_date=T, run_id="score:1")
    monkeypatch.undo()
    n = len(_snapshot_rows(spark, shop))
    assert _partition(spark, cfg, "scores_user_scores").count() == n  # half a night on disk ...
    sql_views.register_views(spark, cfg)
    assert [spark.table(v).count() for v in (*SCORE_TABLES, "scores_latest_user_scores")] == [
        0
    ] * 4  # ... unseen
    scoring_job.run(spark, cfg, run_date=T, run_id="score:1")
    night = tables.read(spark, cfg.table("scores_published_nights")).collect()
    assert [(r["users"], r["model_version"], r["quality_verdict"]) for r in night] == [(n, "1", "pending")]
    sql_views.register_views(spark, cfg)  # again: a table absent at registration stays an empty view
    assert spark.table("scores_latest_user_scores").count() == 0  # not judged yet
    quality_job.run(spark, cfg, run_date=T, run_id="quality:1")
    for t in SCORE_TABLES:
        assertDataFrameEqual(spark.table(t), _partition(spark, cfg, t))
    assert spark.table("scores_latest_user_scores").count() == n


@pytest.mark.integration  # needs the module's snapshots and registered champion
def test_a_vocabulary_changed_since_training_is_refused_before_writing(
    spark: SparkSession,
    shop: Config,
    checkpoint: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Scoring checks the model's vocabulary by content: with the fingerprint training records, a version
    whose rows changed under the same name (two items' ids swapped) stops the run, nothing written; the
    unchanged version passes; a model without the tag (registered before it existed) is scored, warned."""
    v = f"v{T.isoformat()}"
    held = tables.read(spark, shop.table("gold_vocabularies")).where(F.col("vocab_version") == v)
    names = [*SCORE_TABLES, "scores_published_nights"]
    paths = [f"tables.{t}={tmp_path / t}" for t in [*names, "gold_vocabularies"]]
    cfg = load_config("local", [f"paths.root={shop.get('paths.root')}", *TINY, *paths])
    rows = held.toPandas()
    two = rows.index[rows["kind"] == "item"][:2]
    rows.loc[two, "id"] = rows.loc[two[::-1], "id"].to_numpy()  # same tokens and name, two items' ids swapped
    assert rows.loc[two[0], "id"] != rows.loc[two[1], "id"]
    changed = spark.createDataFrame(rows, held.schema)
    tables.overwrite(changed, cfg.table("gold_vocabularies"), schema=held.schema, run_id="t")
    m = scoring_job.load_registered(shop, "champion", str(tmp_path / "model"))
    registry.tag_fingerprint(m.name, m.version, fingerprint_text(held))  # as training records it
    try:
        scoring_job.check_vocabulary(spark, shop, m)  # the rows it trained on: passes
        with pytest.raises(VocabularyChangedError, match=rf"{v} no longer holds the rows model shopf"):
            scoring_job.run(spark, cfg, run_date=T, run_id="score:v")
        assert not any(tables.exists(spark, cfg.table(t)) for t in names)  # nothing written
    finally:
        MlflowClient().delete_model_version_tag(m.name, m.version, registry.FINGERPRINT_TAG)
    with caplog.at_level(logging.WARNING, logger="shopformer.features.vocab"):
        scoring_job.check_vocabulary(spark, cfg, m)  # no tag (an older model): not checked, warned
    assert f"v1 records no vocabulary fingerprint: vocabulary {v} is used unchecked" in caplog.text
