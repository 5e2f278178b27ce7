"""Build the SparkSession from config: Delta enabled, UTC, Python workers pinned to this interpreter."""

from __future__ import annotations

import logging
import os
import sys
import threading

from pyspark import SparkContext
from pyspark.sql import SparkSession

from shopformer.config import Config
from shopformer.progress import StageState, watch_stages

log = logging.getLogger(__name__)

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def _conf_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def build_spark(cfg: Config, app_name: str | None = None) -> SparkSession:
    """Return a session for ``cfg``; reuses an active session so tests and notebooks share one JVM."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Workers must run this interpreter: otherwise pandas UDFs meet other library versions (stack fact 4).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name or str(cfg.get("spark.app_name")))
    master = cfg.get("spark.master", None)
    if master and "PYSPARK_GATEWAY_PORT" in os.environ:
        # Started by spark-submit (its JVM is already up): its --master decides, not conf/local.yaml's.
        log.info("spark.master %s from config ignored: spark-submit chose the master", master)
    elif master:
        builder = builder.master(str(master))
    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.pyspark.python": sys.executable,
        **({} if not cfg.get("spark.delta") else DELTA_CONF),
        **{k: _conf_value(v) for k, v in cfg.section("spark.conf").items()},
    }
    for key, value in settings.items():
        builder = builder.config(key, value)
    if cfg.get("spark.delta"):
        # Adds io.delta:delta-spark_<scala> matching the installed delta-spark to spark.jars.packages.
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(str(cfg.get("spark.log_level", "WARN")))
    log.info("spark %s up (master=%s)", spark.version, spark.sparkContext.master)
    watch(spark.sparkContext)
    return spark


def running_stages(sc: SparkContext) -> list[StageState]:
    """The stages running now, from the driver's status tracker (no Spark job)."""
    tracker, out = sc.statusTracker(), []
    for stage_id in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage_id)
        if info is not None:
            out.append(
                StageState(stage_id, info.name, info.numTasks, info.numCompletedTasks, info.numActiveTasks)
            )
    return out


def watch(sc: SparkContext, every_s: float = 60.0) -> threading.Event:
    """Log long stages' progress every ``every_s`` while ``sc`` is the running context
    (``progress.StageWatch``); the returned event stops it."""
    return watch_stages(
        lambda: running_stages(sc), every_s=every_s, alive=lambda: SparkContext._active_spark_context is sc
    )
