"""One Spark session for the whole test run: local[2], few shuffle partitions, UTC, Delta enabled."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from shopformer.config import Config, load_config
from shopformer.spark import build_spark
from tests.pipeline.airflow_pipeline import Pipeline, run_pipeline

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    root = tmp_path_factory.mktemp("spark")
    cfg = load_config(
        "local",
        [
            "spark.master=local[2]",
            "spark.conf.spark.sql.shuffle.partitions=2",
            "spark.conf.spark.driver.memory=2g",
            f"spark.conf.spark.sql.warehouse.dir={root / 'spark-warehouse'}",
            "spark.conf.spark.default.parallelism=2",
            "spark.conf.spark.databricks.delta.snapshotPartitions=2",
            "spark.conf.spark.sql.sources.parallelPartitionDiscovery.parallelism=2",
            # A JVM that lives for the whole run: C2's steady state pays back (conf/local.yaml's C1-only
            # flags are for short-lived job JVMs).
            "spark.conf.spark.driver.extraJavaOptions=-XX:+UseSerialGC",
        ],
    )
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
def airflow_pipeline(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The Airflow DAGs run once per session on a tiny shop (pipeline/airflow_pipeline.py): training, then
    one night, through the real Airflow of .venv-airflow and spark-submit."""
    return run_pipeline(tmp_path_factory.mktemp("airflow_root"), tmp_path_factory.mktemp("airflow_home"))


@pytest.fixture(scope="session")
def scored_root(airflow_pipeline: Pipeline) -> Path:
    """Root (paths.root) where the DAG runs left their tables, mlflow.db and ./mlruns: scores.user_scores
    holds the night ``airflow_pipeline.NIGHTLY_DS``, scored by the champion the training registered.
    Read it with ``load_config("local", [f"paths.root={scored_root}"])``; do not write to it."""
    return airflow_pipeline.root
