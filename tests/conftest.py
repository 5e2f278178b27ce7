"""One Spark session for the whole test run: local[2], few shuffle partitions, UTC, Delta enabled."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession

from shopformer.config import Config, load_config
from shopformer.spark import build_spark
from tests.factories import SMALL_SPARK
from tests.pipeline.airflow_pipeline import History, Pipeline, history, run_pipeline

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
FAST = os.environ.get("SHOPFORMER_TEST_LANE") == "fast"  # set by ./dev test-fast


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    root = tmp_path_factory.mktemp("spark")
    cfg = load_config(
        "local",
        [
            # local[1] with SMALL_SPARK was no cheaper (347 CPU-s on factories.py's measurement) and slower
            # in wall time; local[2] stays: tests of concurrency need it.
            "spark.master=local[2]",
            *SMALL_SPARK,
            "spark.conf.spark.driver.memory=2g",
            f"spark.conf.spark.sql.warehouse.dir={root / 'spark-warehouse'}",
            # A JVM that lives for the whole run: C2's steady state pays back on the suite's bigger in-process
            # jobs (real-data tests: 476 JVM CPU-s vs 615 C1-only). ./dev test-fast's short run of small
            # queries is the other way round (C1-only: 80 vs 141 CPU-s on test_snapshots' unit tests).
            f"spark.conf.spark.driver.extraJavaOptions=-XX:+UseSerialGC{' -XX:TieredStopAtLevel=1' * FAST}",
            # Interpreted expressions, no whole-stage codegen: the tests' queries are many and tiny, and
            # generating + compiling Java for each new plan was the biggest JVM cost (2026-12-03, alone:
            # test_publish 183 -> 156 CPU-s, test_job + test_user_state 247 -> 194). Same results by Spark's
            # contract (its own suites run both modes). Only this session: the jobs the harnesses start as
            # processes (demo, Airflow, cluster, kill tests) run Spark's default codegen, as users do.
            "spark.conf.spark.sql.codegen.wholeStage=false",
            "spark.conf.spark.sql.codegen.factoryMode=NO_CODEGEN",
        ],
    )
    # One JVM starts at a time: on a fresh machine (empty Ivy cache) two xdist workers downloading the
    # Delta jars into the same cache at once corrupt each other's files ("Downloaded file size (0)
    # doesn't match expected Content Length", then JAVA_GATEWAY_EXITED for every test of a worker).
    with open(Path(tempfile.gettempdir()) / "shopformer-spark-start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        session = build_spark(cfg, app_name="shopformer-tests")
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    """Configuration whose every path lives in this test's temporary folder."""
    return load_config("local", [f"paths.root={tmp_path}"])


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip("../shared/datasets is not present beside the checkout")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def shop_history(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> History:
    """The tiny shop of pipeline/airflow_pipeline.py generated, ingested and sessionized in this process,
    once per session, with each job's result line: checked by the end-to-end harness, the history before
    the Airflow and cluster harnesses' runs. Tests that write take a copy (``airflow_pipeline.copy_root``);
    do not write to ``.root``."""
    return history(tmp_path_factory.mktemp("shop_history"))


@pytest.fixture(scope="session")
def airflow_pipeline(shop_history: History, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The Airflow DAGs run once per session on a copy of ``shop_history`` (pipeline/airflow_pipeline.py):
    training, then one night, through the real Airflow of .venv-airflow and spark-submit."""
    root, home = tmp_path_factory.mktemp("airflow_root"), tmp_path_factory.mktemp("airflow_home")
    return run_pipeline(root, home, history_root=shop_history.root)


@pytest.fixture(scope="session")
def scored_root(airflow_pipeline: Pipeline) -> Path:
    """Root (paths.root) where the DAG runs left their tables, mlflow.db and ./mlruns: scores.user_scores
    holds the night ``airflow_pipeline.NIGHTLY_DS``, scored by the champion the training registered.
    Read it with ``load_config("local", [f"paths.root={scored_root}"])``; do not write to it."""
    return airflow_pipeline.root


# Modules whose tests share the session's shop history (shop_history, airflow_pipeline, scored_root): under
# pytest-xdist they run on one worker, so the history and the Airflow runs are built once.
PIPELINE_GROUP = ("test_end_to_end", "test_airflow", "test_cluster", "test_notebooks")


# The longest units after the pipeline group, longest first (module wall times of a quiet CI run,
# 2026-12-02): each starts early beside the pipeline group instead of last on one worker while the other
# idles. Modules not named here follow in collection order (each well under a minute).
HEAVY = (
    "test_kill",
    "test_demo",
    "test_train_job",
    "test_publish",
    "test_real_data",
    "test_snapshots_real_data",
    "test_item_text",
    "test_forget",
    "test_kill_ops",
    "test_user_state",
    "test_exit_codes",
    "test_scoring",
    "test_snapshots",
    "test_property",
    "test_sessionize",
    "test_quality",
)


def _scope(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return "pipeline" if Path(module).stem in PIPELINE_GROUP else module


def _rank(nodeid: str) -> int:
    """Where a test's unit runs: the pipeline group, then HEAVY in its order, then the rest."""
    scope = _scope(nodeid)
    if scope == "pipeline":
        return 0
    stem = Path(scope).stem
    return 1 + HEAVY.index(stem) if stem in HEAVY else 1 + len(HEAVY)


@pytest.hookimpl(optionalhook=True)  # ``-p no:xdist`` still runs the suite in one process
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``./dev test`` runs two workers: whole modules go to one worker (a module's fixtures are built
    once) and the pipeline harnesses as one unit. xdist's own ``loadgroup`` cannot do it under pytest 9
    (it renames ``item._nodeid``, which pytest 9 no longer reads), so the scope is chosen here. Units are
    handed out in collection order (``pytest_collection_modifyitems``), not xdist's default of most
    tests first (measured 2026-12-02: the two orders finish within a minute of each other; this one
    keeps the long modules off the end of the run by construction)."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    config.option.loadscopereorder = False
    return ModuleScopes(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest units first (a stable sort keeps the order within a module): the pipeline group, then
    HEAVY; short modules fill the end, so both workers finish close together."""
    items.sort(key=lambda item: _rank(item.nodeid))
