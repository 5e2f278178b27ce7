"""The Airflow DAGs (airflow_dags/shopformer_dags.py) under the real Airflow 3.3 of .venv-airflow.

Parsing: the DagBag loads both DAGs without a Variable, without importing pyspark/torch/shopformer, with
the documented graphs, schedules, retries and catchup. Running: ``dag.test()`` of the weekly training and
of one night spark-submit the real jobs on a tiny shop (airflow_pipeline.py, once per session); the
night's scores come from the champion the training registered. A quality breach fails evaluate_scores at
once, without retries, after the scores are written.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import tables
from shopformer.config import Config, load_config
from tests.pipeline import airflow_pipeline as ap

# Budget per test, enforced (pytest-timeout): the first test that needs ``airflow_pipeline`` pays for the
# shared history and both DAG runs (~7 min in CI on 2 cores).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

NIGHTLY = ["ingest_events", "sessionize", "build_snapshots", "embed_items", "score_users", "evaluate_scores"]
TRAINING = ["build_snapshots", "train"]


@pytest.fixture(scope="module")
def dag_facts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The DagBag as the DAG processor loads it, with no Variable set (parsing must not need one)."""
    ap.ensure_airflow_venv()
    home = tmp_path_factory.mktemp("airflow_parse")
    env = ap.airflow_env(home, {})
    env.pop("AIRFLOW_VAR_SHOPFORMER_CONFIG")
    return ap.drive(env, home, "inspect")


def _cfg(root: Path) -> Config:
    return load_config("local", [f"paths.root={root}"])


def _read(spark: SparkSession, root: Path, name: str) -> DataFrame:
    return tables.read(spark, _cfg(root).table(name))


def _common_args(sets: list[str]) -> list[str]:
    return ["--conf", "local", "--set", "spark.master=null", *[a for s in sets for a in ("--set", s)]]


def test_dagbag_loads_both_dags_cheaply(dag_facts: dict) -> None:
    assert dag_facts["import_errors"] == {}
    assert set(dag_facts["dags"]) == {"shopformer_nightly", "shopformer_training"}
    assert dag_facts["heavy_modules"] == []  # no pyspark, torch, shopformer, mlflow, delta at parse time
    # The file's own parse (Airflow's import excluded): 0.25 s measured on a loaded 2-core machine.
    assert dag_facts["file_seconds"]["shopformer_dags.py"] < 3.0


def test_evaluate_scores_reads_the_exit_code_from_the_providers_failure(tmp_path: Path) -> None:
    """The DAG file reads spark-submit's exit code from the error the installed provider raises (no private
    attribute): exit 3 is told apart from any other failure."""
    ap.ensure_airflow_venv()
    env = ap.airflow_env(tmp_path, ap.variable(tmp_path))
    got = ap.drive(env, tmp_path, "exit-codes")
    assert got == {
        "1": {"error": "AirflowException", "exit_codes": [1]},
        "3": {"error": "AirflowException", "exit_codes": [3]},
    }


def _chain(ids: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    return {t: (ids[i - 1 : i] if i else [], ids[i + 1 : i + 2]) for i, t in enumerate(ids)}


@pytest.mark.parametrize("dag_id, ids", [("shopformer_nightly", NIGHTLY), ("shopformer_training", TRAINING)])
def test_task_graph_retries_and_timeouts(dag_facts: dict, dag_id: str, ids: list[str]) -> None:
    tasks = dag_facts["dags"][dag_id]["tasks"]
    assert {t: (f["upstream"], f["downstream"]) for t, f in tasks.items()} == _chain(ids)
    for task_id, f in tasks.items():
        assert "SparkSubmitOperator" in f["operator"]
        assert f["application"] == f"{{{{ var.json.shopformer_config.repo }}}}/jobs/{task_id}.py"
        assert (f["retries"], f["retry_delay_s"]) == (2, 600.0)
        assert 0 < f["timeout_s"] <= 6 * 3600
        # Only sessionize needs the previous day (it is seeded with the sessions before its range).
        assert f["depends_on_past"] == (dag_id == "shopformer_nightly" and task_id == "sessionize")
    if dag_id == "shopformer_nightly":
        assert tasks["evaluate_scores"]["operator"][0] == "EvaluateScoresOperator"
    else:
        assert "champion" in tasks["train"]["display_name"]  # the graph says train also gates/promotes


def test_schedules_and_catchup(dag_facts: dict) -> None:
    nightly, training = dag_facts["dags"]["shopformer_nightly"], dag_facts["dags"]["shopformer_training"]
    assert (nightly["timetable"], nightly["cron"]) == ("CronDataIntervalTimetable", "0 2 * * *")
    assert (nightly["catchup"], nightly["max_active_runs"]) == (True, 1)
    assert (training["cron"], training["catchup"], training["max_active_runs"]) == ("0 4 * * 1", False, 1)
    # What a backfill / catchup of 2024-03-01..2024-03-18 creates: one run per day, oldest first; Mondays.
    assert nightly["runs_between"] == [f"2024-03-{d:02d}T02:00:00+00:00" for d in range(1, 19)]
    assert training["runs_between"] == [f"2024-03-{d:02d}T04:00:00+00:00" for d in (4, 11, 18)]


def test_training_dag_builds_a_vocabulary_and_registers_the_champion(
    spark: SparkSession, airflow_pipeline: ap.Pipeline
) -> None:
    run, root = airflow_pipeline.training, airflow_pipeline.root
    assert run["state"] == "success"
    assert {t: (r["state"], r["try_number"]) for t, r in run["tasks"].items()} == {
        t: ("success", 1) for t in TRAINING
    }
    first = dt.date.fromisoformat(ap.TRAIN_DS) - dt.timedelta(days=ap.LOOKBACK_DAYS)
    common = _common_args(airflow_pipeline.sets)
    snap, train = run["tasks"]["build_snapshots"], run["tasks"]["train"]
    assert snap["application_args"] == [
        "--run-date",
        first.isoformat(),
        "--end-date",
        ap.TRAIN_DS,
        "--build-vocab",
        *common,
    ]
    assert train["application_args"] == ["--run-date", ap.TRAIN_DS, *common]
    assert train["application"] == str(ap.REPO / "jobs" / "train.py")

    vocab = _read(spark, root, "gold_vocabularies").select("vocab_version").distinct().collect()
    assert [r[0] for r in vocab] == [f"v{ap.TRAIN_DS}"]
    dates = _read(spark, root, "gold_user_snapshots").select("as_of_date").distinct().collect()
    assert sorted(r[0] for r in dates) == [first + dt.timedelta(days=d) for d in range(0, 13, 2)]
    client = MlflowClient(tracking_uri=str(_cfg(root).get("paths.mlflow_tracking_uri")))
    champion = client.get_model_version_by_alias("shopformer", "champion")
    mlflow_run = client.get_run(champion.run_id)
    assert str(champion.version) == "1" and mlflow_run.data.tags["promoted"] == "True"
    assert mlflow_run.data.params["run_date"] == ap.TRAIN_DS
    assert mlflow_run.info.artifact_uri.removeprefix("file://").startswith(str(root))  # all under root


def test_nightly_dag_scores_every_user_of_the_night_with_the_champion(
    spark: SparkSession, airflow_pipeline: ap.Pipeline
) -> None:
    run, root, night = airflow_pipeline.nightly, airflow_pipeline.root, ap.NIGHTLY_DS
    assert run["state"] == "success"
    assert {t: (r["state"], r["try_number"]) for t, r in run["tasks"].items()} == {
        t: ("success", 1) for t in NIGHTLY
    }
    for task_id, r in run["tasks"].items():
        assert r["application"] == str(ap.REPO / "jobs" / f"{task_id}.py")
        vocab = ["--set", "snapshots.vocab_version=champion"] if task_id == "build_snapshots" else []
        assert r["application_args"] == ["--run-date", night, *vocab, *_common_args(airflow_pipeline.sets)]

    day = F.col("as_of_date") == F.lit(night).cast("date")
    snaps = _read(spark, root, "gold_user_snapshots").where(day)
    scores = _read(spark, root, "scores_user_scores").where(day)
    assert snaps.count() > 20
    assert sorted(scores.select("source", "user_id").collect()) == sorted(
        snaps.select("source", "user_id").collect()
    )  # one row per user of the night's snapshots
    client = MlflowClient(tracking_uri=str(_cfg(root).get("paths.mlflow_tracking_uri")))
    mv = client.get_model_version_by_alias("shopformer", "champion")
    champion = str(mv.version)
    # The night's snapshots use the vocabulary the champion was trained with (its registry tag).
    assert [r[0] for r in snaps.select("vocab_version").distinct().collect()] == [mv.tags["vocab_version"]]
    lineage = scores.select("model_name", "model_version", "run_id").distinct().collect()
    assert [tuple(r) for r in lineage] == [("shopformer", champion, f"score_users:{night}")]
    bad = scores.where(~F.col("propensity_7d").between(0, 1) | ~F.col("churn_30d").between(0, 1))
    assert bad.count() == 0
    assert scores.select(F.countDistinct("propensity_7d")).first()[0] > 1  # not one constant
    quality = _read(spark, root, "scores_score_quality").where(F.col("evaluated_on") == night)
    assert quality.where(F.col("score") == "propensity_7d").count() > 0
    assert quality.where("breached").count() == 0  # fewer rows than quality.min_rows: notes only


def test_a_quality_breach_fails_evaluate_scores_at_once_after_writing(
    spark: SparkSession, airflow_pipeline: ap.Pipeline, tmp_path: Path
) -> None:
    """The night again, only evaluate_scores running (the rest marked success), on a copy of the root, with
    a threshold no model can meet: exit 3 must fail the task on its first try despite retries=2."""
    root = ap.copy_root(airflow_pipeline.root, tmp_path / "root")
    impossible = ("quality.min_rows=1", "quality.max_ece.propensity_7d=-1")
    env = ap.airflow_env(airflow_pipeline.home, ap.variable(root, impossible))
    run = ap.drive(env, root, "run", "shopformer_nightly", f"{ap.NIGHTLY_DS}T02:00:00", "evaluate_scores")
    assert run["state"] == "failed"
    states = {t: (r["state"], r["try_number"]) for t, r in run["tasks"].items()}
    assert states.pop("evaluate_scores") == ("failed", 1)  # no retry: rerunning cannot fix the data
    assert {state for state, _ in states.values()} == {"success"}  # marked success, never ran
    quality = _read(spark, root, "scores_score_quality").where(F.col("evaluated_on") == ap.NIGHTLY_DS)
    breached = quality.where("breached").select("score", "metric").distinct().collect()
    # Written before the exit: the impossible limit, and any default one that min_rows=1 now judges.
    assert ("propensity_7d", "ece") in {tuple(r) for r in breached}
