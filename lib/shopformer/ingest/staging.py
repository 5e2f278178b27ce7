"""Scratch Parquet for the ingest run: a result the run reads more than once is written once and read back,
instead of being cached in memory (``persist`` of a full copy was what ran a 4g driver out of memory).

The folder is ``{paths.root}/staging/ingest_events/<source>/<run id>``: not a table (no reader but this run,
no commit), overwritten by a rerun of the same run id and deleted when the run ends, success or not. A
run killed outright leaves it until its rerun.
"""

from __future__ import annotations

import logging
import re

from pyspark.sql import DataFrame, SparkSession

from shopformer.config import Config

log = logging.getLogger(__name__)


def staging_path(cfg: Config, source: str, run_id: str) -> str:
    """The run's scratch folder (a run id holds ':' and '..', which a Hadoop path must not)."""
    root = str(cfg.section("paths")["root"]).rstrip("/")
    return f"{root}/staging/ingest_events/{source}/{re.sub(r'[^A-Za-z0-9_.-]', '_', run_id)}"


class Staging:
    """Write a DataFrame once as Parquet and read it back lazily; ``clean`` removes everything."""

    def __init__(self, spark: SparkSession, path: str) -> None:
        self.spark = spark
        self.path = path

    def save(self, df: DataFrame, name: str) -> DataFrame:
        """Run ``df`` once into ``<path>/<name>``; the frame returned reads those files (same schema, also
        when empty)."""
        where = f"{self.path}/{name}"
        log.info("staging %s", where)
        df.write.mode("overwrite").parquet(where)
        return self.spark.read.schema(df.schema).parquet(where)

    def clean(self) -> None:
        jvm = (
            self.spark.sparkContext._jvm
        )  # the Hadoop file system: the same code for local and object stores
        assert jvm is not None
        path = jvm.org.apache.hadoop.fs.Path(self.path)
        path.getFileSystem(self.spark.sparkContext._jsc.hadoopConfiguration()).delete(path, True)
