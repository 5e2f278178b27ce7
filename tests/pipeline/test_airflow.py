"""The Airflow DAGs (airflow_dags/shopformer_dags.py) under the real Airflow 3.3 of .venv-airflow.

Parsing: the DagBag loads the three DAGs without a Variable, without importing pyspark/torch/shopformer,
with the documented graphs, schedules, retries, catchup and rendered commands. Exit codes: a fake
spark-submit exits 0..6 under the DAG's operator; 2, 3 and 4 fail at once, 1, 5 and 6 are retried.
Running: ``dag.test()`` of the weekly training and of one night spark-submit the real jobs on a tiny shop
(airflow_pipeline.py, once per session; of the night, scoring and score quality run and the tasks before
them are marked success: airflow_pipeline.NIGHTLY_RUN); the night's scores come from the champion the
training registered. A quality breach is not run through Airflow again: evaluate_scores writes the breach
then raises (tests/scoring/test_quality.py::test_a_breach_is_written_then_raised), that error exits 3
(tests/test_exit_codes.py), and exit 3 fails the task at once under the real provider (the fake
spark-submit test here).
The weekly maintenance DAG is checked as structure only (its job: tests/ops/test_maintain.py).
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
MAINTENANCE = ["maintain_tables"]
DAGS = {"shopformer_nightly": NIGHTLY, "shopformer_training": TRAINING, "shopformer_maintenance": MAINTENANCE}
# airflow_driver.RENDER_VARIABLE's overrides: every job gets --conf and the Variable's --set after its own.
RENDERED_COMMON = ["--conf", "local", "--set", "spark.master=null", "--set", "paths.root=/data"]


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


def test_dagbag_loads_the_three_dags_cheaply(dag_facts: dict) -> None:
    assert dag_facts["import_errors"] == {}
    assert set(dag_facts["dags"]) == set(DAGS)
    assert dag_facts["heavy_modules"] == []  # no pyspark, torch, shopformer, mlflow, delta at parse time
    # The file's own parse (Airflow's import excluded): 0.25 s measured on a loaded 2-core machine.
    assert dag_facts["file_seconds"]["shopformer_dags.py"] < 3.0


def test_exit_codes_2_3_4_fail_at_once_and_1_5_6_are_retried(tmp_path: Path) -> None:
    """A fake spark-submit exits with each code under the installed provider and the DAG's operator: the DAG
    file reads the code from the provider's failure (no private attribute), and the operator raises
    AirflowFailException (no retries) exactly for the codes no rerun can change."""
    ap.ensure_airflow_venv()
    env = ap.airflow_env(tmp_path, ap.variable(tmp_path))
    got = ap.drive(env, tmp_path, "exit-codes")
    assert got.pop("kubernetes") == {"exit_codes": [1, 4], "no_retry": True}  # the driver's code counts
    assert got.pop("0") == {"read": "no error", "operator": "success", "message": ""}
    assert {code: r["read"] for code, r in got.items()} == {
        str(c): {"error": "AirflowException", "exit_codes": [c]} for c in range(1, 7)
    }
    outcomes = {int(code): r["operator"] for code, r in got.items()}
    assert outcomes == {1: "retry", 2: "fail", 3: "fail", 4: "fail", 5: "retry", 6: "retry"}
    # The failed task's log says why and what to do.
    assert "configuration" in got["2"]["message"]
    assert "quality" in got["3"]["message"] and "written" in got["3"]["message"]
    assert "bronze.events_rejected" in got["4"]["message"]


def _chain(ids: list[str]) -> dict[str, tuple[list[str], list[str]]]:
    return {t: (ids[i - 1 : i] if i else [], ids[i + 1 : i + 2]) for i, t in enumerate(ids)}


@pytest.mark.parametrize("dag_id", sorted(DAGS))
def test_task_graph_retries_and_timeouts(dag_facts: dict, dag_id: str) -> None:
    tasks = dag_facts["dags"][dag_id]["tasks"]
    assert {t: (f["upstream"], f["downstream"]) for t, f in tasks.items()} == _chain(DAGS[dag_id])
    for task_id, f in tasks.items():
        # Every task is the exit-code-aware spark-submit operator (no-retry codes: test above).
        assert f["operator"][:2] == ["ShopformerJobOperator", "SparkSubmitOperator"]
        assert f["application"] == f"{{{{ var.json.shopformer_config.repo }}}}/jobs/{task_id}.py"
        assert f["rendered"]["application"] == f"/repo/jobs/{task_id}.py"
        assert (f["retries"], f["retry_delay_s"]) == (2, 600.0)
        assert 0 < f["timeout_s"] <= 6 * 3600
        # Only sessionize needs the previous day (it is seeded with the sessions before its range).
        assert f["depends_on_past"] == (dag_id == "shopformer_nightly" and task_id == "sessionize")
    if dag_id == "shopformer_training":
        assert "champion" in tasks["train"]["display_name"]  # the graph says train also gates/promotes


def test_every_task_gets_its_dates_then_conf_and_the_variables_sets(dag_facts: dict) -> None:
    """The argv each task renders (ds 2024-03-03; train_lookback_days 14 in the Variable)."""
    day = ["--run-date", "2024-03-03"]
    args = {
        (d, t): f["rendered"]["args"]
        for d, facts in dag_facts["dags"].items()
        for t, f in facts["tasks"].items()
    }
    assert args == {
        **{("shopformer_nightly", t): [*day, *RENDERED_COMMON] for t in NIGHTLY if t != "build_snapshots"},
        ("shopformer_nightly", "build_snapshots"): [
            *day,
            *("--set", "snapshots.vocab_version=champion"),
            *RENDERED_COMMON,
        ],
        ("shopformer_training", "build_snapshots"): [
            *("--run-date", "2024-02-18", "--end-date", "2024-03-03", "--build-vocab"),
            *RENDERED_COMMON,
        ],
        ("shopformer_training", "train"): [*day, *RENDERED_COMMON],
        ("shopformer_maintenance", "maintain_tables"): [*day, *RENDERED_COMMON],
    }


def test_weekly_maintenance_runs_maintain_tables_on_its_own_weekly_dag(dag_facts: dict) -> None:
    """jobs/maintain_tables.py (OPTIMIZE + VACUUM) once a week, Sundays 06:00 UTC: a day away from the
    training (Mondays 04:00), not chained to it, so a failed training does not skip the maintenance."""
    dag = dag_facts["dags"]["shopformer_maintenance"]
    assert (dag["timetable"], dag["cron"], dag["catchup"], dag["max_active_runs"]) == (
        "CronDataIntervalTimetable",
        "0 6 * * 0",
        False,
        1,
    )
    assert dag["runs_between"] == [f"2024-03-{d:02d}T06:00:00+00:00" for d in (3, 10, 17)]  # Sundays
    assert list(dag["tasks"]) == ["maintain_tables"]
    task = dag["tasks"]["maintain_tables"]
    assert (task["upstream"], task["downstream"]) == ([], [])
    assert task["rendered"] == {
        "application": "/repo/jobs/maintain_tables.py",
        "args": ["--run-date", "2024-03-03", *RENDERED_COMMON],
    }
    assert (task["timeout_s"], dag["dagrun_timeout_s"]) == (4 * 3600, 6 * 3600)
    assert (ap.REPO / "jobs" / "maintain_tables.py").is_file()


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
    assert {t: r["state"] for t, r in run["tasks"].items()} == {t: "success" for t in NIGHTLY}
    for task_id in ap.NIGHTLY_RUN:  # ran (the others were marked success: airflow_pipeline.NIGHTLY_RUN)
        r = run["tasks"][task_id]
        assert r["try_number"] == 1
        assert r["application"] == str(ap.REPO / "jobs" / f"{task_id}.py")
        assert r["application_args"] == ["--run-date", night, *_common_args(airflow_pipeline.sets)]

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
