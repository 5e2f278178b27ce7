"""The README's main command: jobs/demo.py runs every job in one process on a tiny synthetic shop.

A person reads one progress line per step and the summary on stderr; machines read the jobs' result lines
on stdout; the logs of jobs and Spark go to ``{root}/logs/demo.log``. A failing step stops the demo with
its exit code and shows the end of that log.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.errors import ConfigError
from shopformer.ops import demo
from tests.factories import SMALL_SPARK

# Budget per test, enforced (pytest-timeout): the whole chain took ~4 min in CI on 2 cores.
pytestmark = pytest.mark.timeout(900)
REPO = Path(__file__).resolve().parents[2]
JOBS = [
    "generate_shop",
    "ingest_events",
    "sessionize",
    "build_snapshots",
    "embed_items",
    "train",
    "score_users",
    "build_snapshots",
    "score_users",
    "evaluate_scores",
    "summarize_tables",
]
TAGS = [
    "GENERATE_SHOP",
    "INGEST",
    "SESSIONIZE",
    "SNAPSHOTS",
    "EMBED_ITEMS",
    "TRAIN",
    "SCORES",
    "SNAPSHOTS",
    "SCORES",
    "QUALITY",
    "SUMMARY",
]
# 42 days: the fewest for the demo's weekly dates (the backfill starts 5 weeks before the last one).
TINY = [
    "synthetic.users=200",
    "synthetic.items=100",
    "synthetic.days=42",
    "spark.master=local[2]",
    "snapshots.churn_horizon_days=7",
    "snapshots.max_len=8",
    "snapshots.windows_days=[7,30]",
    "snapshots.price_max_views=4",
    "train.model_size=tiny",
    "train.pretrain_epochs=1",
    "train.finetune_epochs=1",
    "train.batch_size=64",
    "train.num_processes=1",
    "train.holdout_dates=1",
    "train.valid_dates=1",
    "scoring.top_k=3",
    # The suite's small local Spark (tests/factories.py): 1 shuffle partition for a tiny shop, not 8.
    *SMALL_SPARK,
    # and its interpreted expressions: compiling Java for each of the chain's many tiny plans was ~16 % of
    # this test (alone on the 2-core machine, 2026-12-05: 203 -> 171 s). Same results by Spark's contract;
    # the Airflow and cluster harnesses and the kill tests' killed processes keep the default codegen.
    "spark.conf.spark.sql.codegen.wholeStage=false",
    "spark.conf.spark.sql.codegen.factoryMode=NO_CODEGEN",
]


def run_demo(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "jobs" / "demo.py")]
    for item in [f"paths.root={root}", *TINY, *extra]:
        cmd += ["--set", item]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)


def test_demo_needs_the_shops_first_day() -> None:
    with pytest.raises(ConfigError, match=r"synthetic\.start_date"):
        demo.demo_steps(load_config("local", ["synthetic.start_date=null"]))


def test_demo_steps_of_the_default_shop(cfg: Config) -> None:
    # 2024-01-01 + 120 days: landing folders to 04-30; weekly as-of dates 01-08 .. 04-29.
    steps = [(s.job, s.args, s.extra_sets) for s in demo.demo_steps(cfg)]
    biweekly = ("snapshots.every_days=14",)
    full, night = ("--run-date", "2024-01-01", "--end-date", "2024-04-30"), ("--run-date", "2024-04-30")
    assert steps == [
        ("generate_shop", ("--run-date", "2024-01-01"), ()),
        ("ingest_events", full, ()),
        ("sessionize", full, ()),
        ("build_snapshots", ("--run-date", "2024-01-08", "--end-date", "2024-04-30", "--build-vocab"), ()),
        ("embed_items", night, ()),
        ("train", night, ()),
        ("score_users", ("--run-date", "2024-03-25", "--end-date", "2024-04-22"), biweekly),
        ("build_snapshots", night, ()),
        ("score_users", night, ()),
        ("evaluate_scores", night, ()),
        ("summarize_tables", night, ()),
    ]


def test_brief_shows_the_scalar_fields_of_the_result_line() -> None:
    assert demo.brief("no result line\n") == ""
    out = 'some log\nINGEST {"read": 5, "by_reason": {"x": 1}, "source": "synthetic"}\n'
    assert demo.brief(out) == "read=5, source=synthetic"
    long = "SCORES " + json.dumps({f"k{i}": i for i in range(40)})
    assert len(demo.brief(long, width=50)) == 50 and demo.brief(long, width=50).endswith("...")


@pytest.mark.slow
def test_demo_runs_the_whole_chain(spark: SparkSession, tmp_path: Path) -> None:
    done = run_demo(tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    # One start and one end line per step, in order, and no log lines on the terminal.
    started = re.findall(r"^==> \[(\d+)/11\] (\w+)", done.stderr, re.M)
    finished = re.findall(r"^<== \[(\d+)\] (\w+) done in", done.stderr, re.M)
    assert started == finished == [(str(i), job) for i, job in enumerate(JOBS, 1)]
    assert " INFO " not in done.stderr and "WARN" not in done.stderr
    log = (tmp_path / "logs" / "demo.log").read_text()
    assert "demo step 6: jobs/train.py --run-date 2024-02-12" in log and "spark 4.0" in log
    # The result lines reach stdout in job order.
    assert [ln.split(" ", 1)[0] for ln in done.stdout.splitlines()] == TAGS
    # The readable end: the holdout table with our model for both tasks, the report, score rows.
    assert re.search(r"^\s+propensity\s+shopformer\s+0\.\d{3}", done.stderr, re.M)
    assert re.search(r"^\s+churn\s+shopformer\s+0\.\d{3}", done.stderr, re.M)
    report = re.search(r"^Report with plots: (\S+)", done.stderr, re.M)
    assert report and Path(report[1].removeprefix("file://")).is_file()
    assert report[1].removeprefix("file://").startswith(str(tmp_path / "mlruns"))
    cfg = load_config("local", [f"paths.root={tmp_path}"])
    night = F.col("as_of_date") == F.lit("2024-02-12").cast("date")
    scores = tables.read(spark, cfg.table("scores_user_scores")).where(night)
    snaps = tables.read(spark, cfg.table("gold_user_snapshots")).where(night)
    assert sorted(r.user_id for r in scores.select("user_id").collect()) == sorted(
        r.user_id for r in snaps.select("user_id").collect()
    )
    top = re.search(r"top 5 by propensity_7d:\n.*\n\s+2024-02-12\s+\S+\s+1\s", done.stderr)
    assert top, "the summary shows the night's scores from model version 1"


@pytest.mark.slow
def test_a_failing_step_stops_the_demo_with_its_exit_code(tmp_path: Path) -> None:
    # No landing folders for source rees46: ingest fails after generate_shop ran (a smaller shop: only
    # its first step runs).
    done = run_demo(tmp_path, "ingest.source=rees46", "synthetic.users=30", "synthetic.days=7")
    assert done.returncode == 1
    assert re.findall(r"^==> \[\d+/11\] (\w+)", done.stderr, re.M) == ["generate_shop", "ingest_events"]
    assert "<== [2] ingest_events FAILED (exit 1)" in done.stderr
    assert "SourceError" in done.stderr and "rees46/date=2024-01-01" in done.stderr  # the log's tail
    # The failing job's own result line says why (issue 16: a failing job prints one TAG {"error": ...}).
    assert [ln.split(" ", 1)[0] for ln in done.stdout.splitlines()] == ["GENERATE_SHOP", "INGEST"]
    failed = json.loads(done.stdout.splitlines()[-1].removeprefix("INGEST "))
    assert failed["exit_code"] == 1 and failed["committed"] == 0 and "SourceError" in failed["error"]
