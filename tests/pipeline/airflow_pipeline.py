"""The Airflow DAGs run for real on a tiny synthetic shop, once per test session (fixtures in conftest.py).

The history before the DAG runs (generate the shop, ingest + sessionize its landing folders: the event days
as one backfill range, then the last landing on its own) runs in this process's Spark session, once per
session (``shop_history``): it is set-up, not what is under test here; the end-to-end harness checks it and
the cluster harness starts from it too. Then Airflow 3.3 in
its own virtualenv (``.venv-airflow``: the test process must not import it) runs ``dag.test()`` of
``shopformer_training`` and of ``shopformer_nightly`` through tests/pipeline/airflow_driver.py; each task
spark-submits the real job with the Variable and connection below. Runs with cwd = the root; MLflow's
artifacts land in ``{root}/mlruns`` (``paths.mlflow_artifacts``) beside ``mlflow.db``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from shopformer.ops.jobs import job_main
from tests.factories import SMALL_SPARK

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
# 16 days of events; late rows land the day after.
START, LAST_EVENT_DAY, LAST_LANDING = "2024-01-01", "2024-01-16", "2024-01-17"
# Logical dates on each DAG's schedule (nightly 02:00, training Mondays 04:00 UTC).
TRAIN_DS = "2024-01-15"  # as-of dates 2024-01-03 .. 2024-01-15 every 2 days; 7-day labels up to ~01-09
NIGHTLY_DS = "2024-01-07"  # a night whose 7-day labels have matured: score quality has something to judge
LOOKBACK_DAYS = 12
# The nightly DAG's tasks that spark-submit their job for real; Airflow marks the others success. Their
# night is already in the tables (the history ingested and sessionized it, the training DAG's snapshots
# cover NIGHTLY_DS with the champion's vocabulary), their rendered argv is checked for every task by
# test_airflow.py; the end-to-end harness runs ingest, sessionize and build_snapshots as a night and
# test_item_text.py runs embed_items (in-process), the kill tests run ingest and sessionize as processes,
# the training DAG spark-submits build_snapshots. What only this harness proves (Airflow spark-submits the
# real job with the Variable; the night is scored by the champion the training DAG registered, then
# judged) needs these two; the other four cost ~2 min of CI.
NIGHTLY_RUN = ("score_users", "evaluate_scores")
SHOP = ["synthetic.users=400", "synthetic.items=100", "synthetic.days=16", f"synthetic.start_date={START}"]
# A tiny, fast model (as tests/model/test_train_job.py) on as-of dates every 2 days with 7-day horizons.
MODEL = [
    "snapshots.every_days=2",
    # Purged splits (model/data.py): a date trains or validates only if its label window ends by the next
    # split's first date; 2-day horizons leave 16 days holdout 01-13, valid 01-11, train 01-03..01-09.
    "snapshots.propensity_horizon_days=2",
    "snapshots.churn_horizon_days=2",
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
    "train.max_eval_rows=5000",
    "scoring.top_k=3",
    "quality.min_rows=1000",  # a tiny night is recorded, not judged: its evaluate_scores must succeed
]


@dataclass(frozen=True)
class History:
    """Where ``history`` left the shop's landing files, bronze and silver tables, and the result line (the
    ``TAG {json}`` of stdout) of each of its steps: generate, ingest_range, sessionize_range, ingest_last,
    sessionize_last."""

    root: Path
    summaries: dict[str, dict]


@dataclass(frozen=True)
class Pipeline:
    """Where the DAG runs left everything, and what Airflow reported of them."""

    root: Path
    home: Path  # AIRFLOW_HOME (SQLite metadata DB)
    sets: list[str]  # the Variable's --set overrides
    training: dict
    nightly: dict


def overrides(root: Path) -> list[str]:
    return [f"paths.root={root}", *SHOP, *MODEL, *SMALL_SPARK]


def variable(root: Path, extra_sets: tuple[str, ...] = ()) -> dict:
    """Variable shopformer_config as a deployment on this machine would write it (airflow_dags docstring)."""
    return {
        "repo": str(REPO),
        "python": sys.executable,
        "spark_submit": str(Path(sys.executable).parent / "spark-submit"),
        "conf": "local",
        "set": [*overrides(root), *extra_sets],
        "spark_conf": {  # C1-only JIT + serial GC: ~1/3 less CPU for these short-lived driver JVMs
            "spark.driver.memory": "1g",
            "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        },
        "env": {"SPARK_LOCAL_IP": "127.0.0.1"},
        "train_lookback_days": LOOKBACK_DAYS,
    }


def airflow_env(home: Path, var: dict) -> dict[str, str]:
    # This process's own Spark gateway must not leak into the spark-submits Airflow starts.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "_PYSPARK", "SPARK_HOME"))}
    return env | {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "airflow_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        "AIRFLOW_VAR_SHOPFORMER_CONFIG": json.dumps(var),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
    }


def ensure_airflow_venv() -> None:
    """``./dev airflow-setup``: reuses .venv-airflow in about a second when the lock did not change."""
    subprocess.run([str(REPO / "dev"), "airflow-setup"], cwd=REPO, check=True, timeout=900)


def drive(env: dict[str, str], cwd: Path, *args: str, timeout: int = 1800) -> dict:
    """Run tests/pipeline/airflow_driver.py under .venv-airflow; its JSON result (its log goes to a file). The
    timeout only guards against a hang: on a busy shared 2-core machine one night took 15 minutes."""
    out = cwd / f"airflow-{'-'.join(args).replace('|', '+')}.json"
    log = out.with_suffix(".log")
    cmd = [str(AIRFLOW_PYTHON), str(REPO / "tests" / "pipeline" / "airflow_driver.py"), str(out), *args]
    with log.open("w") as fh:
        try:
            done = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"airflow driver {args} timed out:\n{log.read_text()[-6000:]}")
    if done.returncode != 0 or not out.exists():
        pytest.fail(f"airflow driver {args} exited {done.returncode}:\n{log.read_text()[-6000:]}")
    return json.loads(out.read_text())


def run_in_process(name: str, argv: list[str]) -> str:
    """A job's ``main(argv)`` in this process (build_spark returns the test session, so no JVM starts), as
    ``python jobs/<name>.py ARGV`` would run it: what it printed on stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = job_main(name)(argv)
    assert rc == 0, f"{name} {argv} exited {rc}:\n{out.getvalue()[-4000:]}"
    return out.getvalue()


def result_line(stdout: str, tag: str) -> dict:
    """The job's one ``TAG {json}`` line on stdout."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith(f"{tag} ")]
    assert len(lines) == 1, stdout
    return json.loads(lines[0].removeprefix(f"{tag} "))


def history(root: Path) -> History:
    """The shop and its silver tables up to the last landing folder, as earlier nights left them: the event
    days backfilled as one range, then the last landing (the last day's late rows) on its own."""
    sets = [a for s in overrides(root) for a in ("--set", s)]

    def step(job: str, tag: str, *args: str) -> dict:
        return result_line(run_in_process(job, [*args, *sets]), tag)

    span = ("--run-date", START, "--end-date", LAST_EVENT_DAY)
    return History(
        root,
        {
            "generate": step("generate_shop", "GENERATE_SHOP", "--run-date", START),
            "ingest_range": step("ingest_events", "INGEST", *span),
            "sessionize_range": step("sessionize", "SESSIONIZE", *span),
            "ingest_last": step("ingest_events", "INGEST", "--run-date", LAST_LANDING),
            "sessionize_last": step("sessionize", "SESSIONIZE", "--run-date", LAST_LANDING),
        },
    )


def run_pipeline(root: Path, home: Path, history_root: Path | None = None) -> Pipeline:
    """History (a copy of ``history_root`` when given: what ``history`` wrote there), then dag.test() of the
    weekly training and of one night (failing fast: no retries)."""
    ensure_airflow_venv()
    if history_root is None:
        history(root)
    else:
        copy_root(history_root, root)
    env = airflow_env(home, variable(root)) | {"SHOPFORMER_TEST_NO_RETRIES": "1"}
    training = drive(env, root, "run", "shopformer_training", f"{TRAIN_DS}T04:00:00")
    nightly = drive(env, root, "run", "shopformer_nightly", f"{NIGHTLY_DS}T02:00:00", "|".join(NIGHTLY_RUN))
    return Pipeline(root, home, overrides(root), training, nightly)


def copy_root(src: Path, dst: Path) -> Path:
    """A copy of a pipeline root for a test that must not change the shared one (``dst`` may exist, empty).
    Delta tables copy as folders: their logs name data files relative to the table."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("petastorm_cache", "*.log"), dirs_exist_ok=True)
    return dst
