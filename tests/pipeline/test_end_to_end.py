"""The pipeline as a user runs it: the job entry points as subprocesses on a small synthetic shop.

Checks what only the whole chain shows: every generated raw row is accounted for in bronze (accepted,
duplicate or rejected with a reason), every accepted event lands in exactly one session, the jobs' printed
summaries agree with the tables, a rerun of a night changes nothing, and a failing night writes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config, load_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
START, LAST_EVENT_DAY, LAST_LANDING = "2024-03-01", "2024-03-04", "2024-03-05"


def run_job(root: Path, job: str, *args: str, expect_rc: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``jobs/<job>.py`` with a small local Spark, every path under ``root``."""
    overrides = [
        f"paths.root={root}",
        "spark.master=local[2]",
        "spark.conf.spark.sql.shuffle.partitions=2",
        "spark.conf.spark.driver.memory=1g",
        "synthetic.users=300",
        "synthetic.items=120",
        "synthetic.days=4",
        f"synthetic.start_date={START}",
        "synthetic.dirty_fraction=0.02",
    ]
    cmd = [sys.executable, str(REPO / "jobs" / f"{job}.py"), *args]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == expect_rc, f"{job} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return done


def summary(done: subprocess.CompletedProcess[str], tag: str) -> dict:
    """The job's one ``TAG {json}`` line on stdout."""
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(f"{tag} ")]
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0].removeprefix(f"{tag} "))


def table(spark: SparkSession, cfg: Config, name: str) -> DataFrame:
    return tables.read(spark, cfg.table(name))


SNAPSHOT_ARGS = (
    "--run-date",
    "2024-03-02",
    "--end-date",
    LAST_LANDING,
    "--build-vocab",
    "--set",
    "snapshots.every_days=1",
)
TABLES = (
    "bronze_events",
    "bronze_events_rejected",
    "silver_events",
    "silver_sessions",
    "gold_user_snapshots",
)


def counts_by(df: DataFrame, col: str) -> dict[str, int]:
    return {r[col]: r["count"] for r in df.groupBy(col).count().collect()}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Generate the shop, backfill the first days as one range, then run the last night on its own."""
    root = tmp_path_factory.mktemp("e2e")
    out = {"root": root}
    out["generate"] = summary(run_job(root, "generate_shop", "--run-date", START), "GENERATE_SHOP")
    range_args = ("--run-date", START, "--end-date", LAST_EVENT_DAY)
    out["ingest_range"] = summary(run_job(root, "ingest_events", *range_args), "INGEST")
    out["sessionize_range"] = summary(run_job(root, "sessionize", *range_args), "SESSIONIZE")
    out["ingest_last"] = summary(run_job(root, "ingest_events", "--run-date", LAST_LANDING), "INGEST")
    out["sessionize_last"] = summary(run_job(root, "sessionize", "--run-date", LAST_LANDING), "SESSIONIZE")
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


def test_rerunning_the_last_night_changes_nothing(
    spark: SparkSession, pipeline: dict, e2e_cfg: Config
) -> None:
    before = {n: tables.version(spark, e2e_cfg.table(n)) for n in TABLES}
    again = summary(run_job(pipeline["root"], "ingest_events", "--run-date", LAST_LANDING), "INGEST")
    summary(run_job(pipeline["root"], "sessionize", "--run-date", LAST_LANDING), "SESSIONIZE")
    assert (
        summary(run_job(pipeline["root"], "build_snapshots", *SNAPSHOT_ARGS), "SNAPSHOTS")
        == pipeline["snapshots"]
    )
    assert again == pipeline["ingest_last"]
    for name, v in before.items():
        old = tables.read(spark, e2e_cfg.table(name), as_of=v)
        assertDataFrameEqual(table(spark, e2e_cfg, name), old)
    # The rerun did replace the night's partition (a new commit), with the very same rows.
    assert tables.version(spark, e2e_cfg.table("bronze_events")) > before["bronze_events"]


def test_a_night_without_landing_files_fails_before_writing(
    spark: SparkSession, pipeline: dict, e2e_cfg: Config
) -> None:
    path = e2e_cfg.table("bronze_events")
    version = tables.version(spark, path)
    done = run_job(pipeline["root"], "ingest_events", "--run-date", "2024-03-09", expect_rc=1)
    assert "date=2024-03-09" in done.stderr
    failed = summary(done, "INGEST")  # a failing job's one result line says why, and that nothing was written
    assert failed["exit_code"] == 1 and failed["committed"] == 0 and "date=2024-03-09" in failed["error"]
    assert tables.version(spark, path) == version


def test_snapshots_cover_every_user_active_before_each_as_of_date(
    spark: SparkSession, pipeline: dict, e2e_cfg: Config
) -> None:
    snaps = table(spark, e2e_cfg, "gold_user_snapshots")
    report = pipeline["snapshots"]
    assert report["rows"] == snaps.count() > 0
    assert report["as_of_dates"] == ["2024-03-02", "2024-03-03", "2024-03-04", "2024-03-05"]
    events = table(spark, e2e_cfg, "silver_events")
    for day in report["as_of_dates"]:
        before = events.where(F.col("event_time") < F.lit(day).cast("timestamp"))
        users = before.select("source", "user_id").distinct()
        assertDataFrameEqual(snaps.where(F.col("as_of_date") == day).select("source", "user_id"), users)
    # Propensity needs 7 complete days after T: none of these dates has them yet.
    assert report["rows_with_propensity_label"] == 0
    assert snaps.where(F.col("seq_len") < 1).count() == 0
