"""The pipeline as a user runs it on a small synthetic shop: each job's ``main(argv)`` with shell arguments.

Checks what only the whole chain shows: every generated raw row is accounted for in bronze (accepted,
duplicate or rejected with a reason), every accepted event lands in exactly one session, the jobs' printed
summaries agree with the tables, a rerun of a night changes nothing, and a failing night writes nothing.

The chain up to silver is the session's ``shop_history`` (conftest.py, airflow_pipeline.history: the shop
generated, its event days backfilled as one range, then the last landing on its own, each job's
``main(argv)`` in this process with the arguments a shell would pass): the Airflow and cluster harnesses
start from it too, so it runs once. This module checks its tables against the jobs' result lines, builds
the last days' snapshots in a copy of that root, then runs the last night again (its result lines must
equal the first pass's, its tables the versions before) and a night without landing files (the exit code
``jobs/ingest_events.py`` would return, nothing written). Every job runs in this process's Spark session:
the jobs as separate processes (one JVM each) are what the Airflow harness (build_snapshots, train,
score_users, evaluate_scores under spark-submit), the cluster harness (train, score_users) and the kill
tests (ingest_events, sessionize, score_users as ``python jobs/<job>.py``) run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.ops.jobs import job_main
from shopformer.scoring import sql_views
from tests.pipeline import airflow_pipeline as ap

# Budget per test, enforced (pytest-timeout; the first test pays for the module's pipeline fixture and,
# run alone, for the session's shop history).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

START, LAST_EVENT_DAY, LAST_LANDING = ap.START, ap.LAST_EVENT_DAY, ap.LAST_LANDING
NO_LANDING = "2024-01-21"  # a night whose landing folder never arrived


def _args(root: Path, job_args: tuple[str, ...]) -> list[str]:
    """The shop's overrides with every path under ``root``, then ``job_args`` (its ``--set`` entries win)."""
    return [*(a for o in ap.overrides(root) for a in ("--set", o)), *job_args]


def run_job(root: Path, job: str, *args: str) -> str:
    """``jobs/<job>.py ARGS`` (the shop's overrides added) in this process: what it printed on stdout."""
    return ap.run_in_process(job, _args(root, args))


def summary(done: subprocess.CompletedProcess[str] | str, tag: str) -> dict:
    """The job's one ``TAG {json}`` line on stdout (of a finished subprocess, or the text it printed)."""
    return ap.result_line(done if isinstance(done, str) else done.stdout, tag)


def table(spark: SparkSession, cfg: Config, name: str) -> DataFrame:
    return tables.read(spark, cfg.table(name))


SNAPSHOT_DATES = ["2024-01-14", "2024-01-15", "2024-01-16", "2024-01-17"]  # daily, the last four days
SNAPSHOT_ARGS = (
    "--run-date",
    SNAPSHOT_DATES[0],
    "--end-date",
    LAST_LANDING,
    "--build-vocab",
    "--set",
    "snapshots.every_days=1",
    "--set",
    "snapshots.propensity_horizon_days=7",  # the default (the shop's model uses 2-day horizons)
)
TABLES = (
    "bronze_events",
    "bronze_events_rejected",
    "silver_events",
    "silver_sessions",
    "silver_published_dates",
    "gold_user_snapshots",
)


def counts_by(df: DataFrame, col: str) -> dict[str, int]:
    return {r[col]: r["count"] for r in df.groupBy(col).count().collect()}


@pytest.fixture(scope="module")
def pipeline(shop_history: ap.History, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The shop's history (its jobs' result lines; its tables copied into a root of this module's own),
    then the snapshots of the last four days, build_snapshots' main in this process."""
    root = ap.copy_root(shop_history.root, tmp_path_factory.mktemp("e2e"))
    out = {"root": root, **shop_history.summaries}
    out["snapshots"] = summary(run_job(root, "build_snapshots", *SNAPSHOT_ARGS), "SNAPSHOTS")
    return out


@pytest.fixture(scope="module")
def e2e_cfg(pipeline: dict) -> Config:
    return load_config("local", [f"paths.root={pipeline['root']}"])


def test_every_generated_row_is_accounted_for(spark: SparkSession, pipeline: dict, e2e_cfg: Config) -> None:
    ingests = [pipeline["ingest_range"], pipeline["ingest_last"]]
    assert sum(i["read"] for i in ingests) == pipeline["generate"]["rows"]
    for i in ingests:
        assert i["read"] == i["accepted"] + i["duplicates"] + i["rejected"]
        assert sum(i["rejected_by_reason"].values()) == i["rejected"]
    # The dirty fraction must actually exercise rejects and duplicates.
    assert sum(i["rejected"] for i in ingests) > 0 and sum(i["duplicates"] for i in ingests) > 0

    bronze, rejected = table(spark, e2e_cfg, "bronze_events"), table(spark, e2e_cfg, "bronze_events_rejected")
    accepted = {i["end"]: i["accepted"] for i in ingests}
    by_ingest = counts_by(bronze.withColumn("d", F.col("ingest_date").cast("string")), "d")
    assert sum(by_ingest.values()) == sum(accepted.values())
    assert by_ingest[LAST_LANDING] == pipeline["ingest_last"]["accepted"]
    reasons: dict[str, int] = {}
    for i in ingests:
        for reason, n in i["rejected_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    assert counts_by(rejected, "reason") == reasons
    assert bronze.select("event_id").distinct().count() == bronze.count()


def test_every_accepted_event_is_in_exactly_one_session(
    spark: SparkSession, pipeline: dict, e2e_cfg: Config
) -> None:
    bronze, events = table(spark, e2e_cfg, "bronze_events"), table(spark, e2e_cfg, "silver_events")
    sessions = table(spark, e2e_cfg, "silver_sessions")
    assertDataFrameEqual(events.select("event_id"), bronze.select("event_id"))
    assert events.where(F.col("session_id").isNull()).count() == 0
    per_session = events.groupBy("session_id").agg(F.count(F.lit(1)).alias("n_events"))
    assertDataFrameEqual(per_session, sessions.select("session_id", "n_events"))
    # The last night's summary covers the late rows of the previous day plus nothing else.
    last = pipeline["sessionize_last"]
    assert (last["first_date"], last["end_date"]) == (LAST_EVENT_DAY, LAST_LANDING)
    n_last = events.where(F.col("event_date") >= F.lit(LAST_EVENT_DAY).cast("date")).count()
    assert last["events"] == n_last


def test_the_silver_views_show_every_row_once_the_nights_are_published(
    spark: SparkSession, e2e_cfg: Config
) -> None:
    """A range run, then a night with late events and sessions crossing midnight: every date is published,
    so the published-dates views (docs/sessionization.md) hide nothing."""
    sql_views.register_views(spark, e2e_cfg)
    for name in ("silver_events", "silver_sessions"):
        assertDataFrameEqual(spark.table(name), table(spark, e2e_cfg, name))
    crossing = spark.table("silver_sessions").where(F.to_date("session_end") > F.col("session_date"))
    assert crossing.count() > 0  # the shop has sessions the date rule must place by their end


def test_rerunning_the_last_night_changes_nothing(
    spark: SparkSession, pipeline: dict, e2e_cfg: Config
) -> None:
    """The last night again, each job's main with the same arguments: the same result lines as the first
    pass printed."""
    before = {n: tables.version(spark, e2e_cfg.table(n)) for n in TABLES}
    again = summary(run_job(pipeline["root"], "ingest_events", "--run-date", LAST_LANDING), "INGEST")
    sessionize = summary(run_job(pipeline["root"], "sessionize", "--run-date", LAST_LANDING), "SESSIONIZE")
    assert (
        summary(run_job(pipeline["root"], "build_snapshots", *SNAPSHOT_ARGS), "SNAPSHOTS")
        == pipeline["snapshots"]
    )
    assert again == pipeline["ingest_last"]
    assert sessionize == pipeline["sessionize_last"]
    for name, v in before.items():
        old = tables.read(spark, e2e_cfg.table(name), as_of=v)
        assertDataFrameEqual(table(spark, e2e_cfg, name), old)
    # The rerun did replace the night's partition (a new commit), with the very same rows.
    assert tables.version(spark, e2e_cfg.table("bronze_events")) > before["bronze_events"]


def test_a_night_without_landing_files_fails_before_writing(
    spark: SparkSession, pipeline: dict, e2e_cfg: Config, caplog: pytest.LogCaptureFixture
) -> None:
    path = e2e_cfg.table("bronze_events")
    version = tables.version(spark, path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), caplog.at_level(logging.ERROR):
        rc = job_main("ingest_events")(_args(pipeline["root"], ("--run-date", NO_LANDING)))
    assert rc == 1  # what jobs/ingest_events.py exits with
    assert f"date={NO_LANDING}" in caplog.text  # the log says which folder is missing
    failed = summary(out.getvalue(), "INGEST")  # a failing job's one result line says why, nothing written
    assert failed["exit_code"] == 1 and failed["committed"] == 0 and f"date={NO_LANDING}" in failed["error"]
    assert tables.version(spark, path) == version


def test_snapshots_cover_every_user_active_before_each_as_of_date(
    spark: SparkSession, pipeline: dict, e2e_cfg: Config
) -> None:
    snaps = table(spark, e2e_cfg, "gold_user_snapshots")
    report = pipeline["snapshots"]
    assert report["rows"] == snaps.count() > 0
    assert report["as_of_dates"] == SNAPSHOT_DATES
    events = table(spark, e2e_cfg, "silver_events")
    for day in report["as_of_dates"]:
        before = events.where(F.col("event_time") < F.lit(day).cast("timestamp"))
        users = before.select("source", "user_id").distinct()
        assertDataFrameEqual(snaps.where(F.col("as_of_date") == day).select("source", "user_id"), users)
    # Propensity needs 7 complete days after T: none of these dates has them yet.
    assert report["rows_with_propensity_label"] == 0
    assert snaps.where(F.col("seq_len") < 1).count() == 0
