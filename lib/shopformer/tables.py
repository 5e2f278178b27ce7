"""The one module that writes tables. Every write is a single atomic Delta commit over one partition
(or one contiguous partition range of a backfill), so re-running a date replaces, never duplicates.

Fault injection (docs/reliability.md "Kill switch"): with ``SHOPFORMER_KILL_BEFORE_COMMIT=N`` in the
environment, the process dies with ``os._exit(137)`` (as a SIGKILL would: no cleanup, no error line) right
before the N-th write this module attempts in the process: every call below that can commit (a Delta
commit, or landing files) counts, also a MERGE, DELETE or OPTIMIZE that then finds nothing to change, and
so does each model-registry write (``before_registry_write``: registration, version tags, aliases).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from collections.abc import Sequence

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from shopformer import errors

log = logging.getLogger(__name__)
KILL_ENV = "SHOPFORMER_KILL_BEFORE_COMMIT"
_attempts = [0]


def _before_commit(what: str, path: str) -> None:
    """Count a write about to commit; die here when it is the one ``SHOPFORMER_KILL_BEFORE_COMMIT`` names
    (one line on stderr says which, for the test or drill that set it)."""
    _attempts[0] += 1
    if os.environ.get(KILL_ENV, "").strip() == str(_attempts[0]):
        sys.stderr.write(f"{KILL_ENV}={_attempts[0]}: killed before {what} {path}\n")
        sys.stderr.flush()
        os._exit(137)


def before_registry_write(what: str, target: str) -> None:
    """The same switch for the model registry's writes (a registration, a version tag, an alias): a
    training run commits to MLflow, not to Delta, and a drill must be able to kill it between them."""
    _before_commit(what, target)


def exists(spark: SparkSession, path: str) -> bool:
    return DeltaTable.isDeltaTable(spark, path)


def version(spark: SparkSession, path: str) -> int:
    """The table's latest commit version (lineage for models and audits; -1 when absent)."""
    if not exists(spark, path):
        return -1
    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def run_time(day: dt.date) -> dt.datetime:
    """Midnight UTC of a run date: the time a run records in its lineage columns (``scored_at``,
    ``published_at``). The logical time of the run, never the clock, so a rerun writes identical rows."""
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)


def read(
    spark: SparkSession, path: str, schema: StructType | None = None, *, as_of: int | None = None
) -> DataFrame:
    """Read a Delta table (at version ``as_of``: time travel); absent reads as empty ``schema`` if given.

    With ``schema``, a nullable column the table does not have yet (written before the column existed,
    and not written since: ``_add_missing_columns``) reads as null, as it will once a write adds it."""
    if not exists(spark, path):
        if schema is None:
            raise FileNotFoundError(f"no Delta table at {path}")
        return spark.createDataFrame([], schema)
    reader = spark.read.format("delta")
    if as_of is not None:
        reader = reader.option("versionAsOf", as_of)
    df = reader.load(path)
    if schema is None:
        return df
    missing = [f for f in schema.fields if f.name not in df.columns and f.nullable]
    return df.select("*", *[F.lit(None).cast(f.dataType).alias(f.name) for f in missing])


def _add_missing_columns(spark: SparkSession, path: str, schema: StructType) -> None:
    """Schema evolution, additive only: a column of ``schema`` that an existing table lacks is added
    (``ALTER TABLE ADD COLUMNS``, at its place in ``schema``; older rows read null there) before the
    write, so tables created by an older release take new nullable columns on their next write. A
    missing non-nullable column is not guessed: it stops the write before anything changes."""
    if not exists(spark, path):
        return
    have = set(spark.read.format("delta").load(path).columns)
    missing = [(i, f) for i, f in enumerate(schema.fields) if f.name not in have]
    if not missing:
        return
    required = [f.name for _, f in missing if not f.nullable]
    if required:
        raise ValueError(f"table {path} lacks the non-nullable column(s) {required}: not added by a write")
    for i, f in missing:  # one at a time, in schema order: each lands right after its predecessor
        where = f"AFTER `{schema.fields[i - 1].name}`" if i else "FIRST"
        log.info("adding column %s to %s (%s)", f.name, path, where)
        _before_commit("add_columns", path)
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS (`{f.name}` {f.dataType.simpleString()} {where})")
        errors.note_commit()


def _conform(df: DataFrame, schema: StructType) -> DataFrame:
    """Order and cast columns to the table schema; extra columns are a programming error."""
    extra = set(df.columns) - {f.name for f in schema.fields}
    if extra:
        raise ValueError(f"columns {sorted(extra)} are not in the table schema")
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])


def replace_where(
    df: DataFrame,
    path: str,
    *,
    predicate: str,
    schema: StructType,
    partition_by: Sequence[str],
    run_id: str,
) -> None:
    """Atomically replace the rows matching ``predicate`` (a partition or a run's slice) with ``df``.

    Delta checks that every written row satisfies the predicate, so a bug cannot spill into
    other partitions. The run id lands in the commit's userMetadata for lineage.
    """
    _add_missing_columns(df.sparkSession, path, schema)
    log.info("writing %s where %s", path, predicate)
    _before_commit("replace_where", path)
    (
        _conform(df, schema)
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", predicate)
        .option("userMetadata", run_id)
        .partitionBy(*partition_by)
        .save(path)
    )
    errors.note_commit()


def merge_upsert(
    df: DataFrame,
    path: str,
    *,
    keys: Sequence[str],
    schema: StructType,
    partition_by: Sequence[str],
    target_filter: str,
    delete_unmatched_where: str | None,
    run_id: str,
) -> None:
    """MERGE ``df`` into the table on ``keys``: update matches, insert new rows, and delete target rows
    in ``delete_unmatched_where`` that the source no longer has. ``target_filter`` limits the target rows
    considered (partition pruning). Creates the table on first use."""
    spark = df.sparkSession
    data = _conform(df, schema)
    _add_missing_columns(spark, path, schema)
    if not exists(spark, path):
        _before_commit("create", path)
        spark.createDataFrame([], schema).write.format("delta").partitionBy(*partition_by).save(path)
        errors.note_commit()
    cond = " AND ".join([f"t.{k} = s.{k}" for k in keys] + [f"({target_filter.replace('{t}', 't')})"])
    spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", run_id)
    try:
        merge = (
            DeltaTable.forPath(spark, path)
            .alias("t")
            .merge(data.alias("s"), cond)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
        )
        if delete_unmatched_where:
            merge = merge.whenNotMatchedBySourceDelete(delete_unmatched_where.replace("{t}", "t"))
        log.info("merging into %s on %s", path, keys)
        _before_commit("merge_upsert", path)
        merge.execute()
        errors.note_commit()
    finally:
        spark.conf.unset("spark.databricks.delta.commitInfo.userMetadata")


def overwrite(df: DataFrame, path: str, *, schema: StructType, run_id: str) -> None:
    """Replace a whole small table atomically (reference data such as a synthetic shop's ground truth)."""
    log.info("overwriting %s", path)
    _before_commit("overwrite", path)
    (
        _conform(df, schema)
        .write.format("delta")
        .mode("overwrite")
        .option("overwriteSchema", "true")
        .option("userMetadata", run_id)
        .save(path)
    )
    errors.note_commit()


def write_landing_files(df: DataFrame, path: str, *, fmt: str, partition_by: Sequence[str]) -> None:
    """Write raw files the way an upstream system lands them (CSV with header, or Parquet), one folder per
    landing date. Only the synthetic shop and tests produce raw files; production reads them."""
    if fmt not in ("csv", "parquet", "json"):
        raise ValueError(f"unsupported landing format {fmt!r}")
    writer = df.write.mode("overwrite").partitionBy(*partition_by)
    if fmt == "csv":
        writer = writer.option("header", "true")
    _before_commit("write_landing_files", path)
    writer.format(fmt).save(path)
    errors.note_commit()


def delete_matching(spark: SparkSession, path: str, keys: DataFrame, on: str, *, run_id: str) -> int:
    """Delete the rows of the table (alias ``t``) that match a row of ``keys`` (alias ``k``) under the
    SQL condition ``on``, as a Delta MERGE ... WHEN MATCHED THEN DELETE in one commit (run id as
    userMetadata); returns the rows deleted. An absent table or no match writes no commit, so a rerun is
    a no-op returning 0.

    A MERGE rather than ``DELETE WHERE user_id IN (...)``: Delta records a DELETE's predicate, literals
    and all, in the commit log, which would keep the very ids being forgotten; a MERGE records only ``on``.
    The deleted rows stay in the table's older files (time travel) until ``vacuum`` removes them."""
    if not exists(spark, path):
        log.info("no Delta table at %s: nothing to delete", path)
        return 0
    table = DeltaTable.forPath(spark, path)
    before = version(spark, path)
    spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", run_id)
    try:
        _before_commit("delete_matching", path)
        table.alias("t").merge(keys.alias("k"), on).whenMatchedDelete().execute()
    finally:
        spark.conf.unset("spark.databricks.delta.commitInfo.userMetadata")
    last = table.history(1).select("version", "operationMetrics").first()
    if last["version"] == before:  # nothing matched: Delta commits nothing
        return 0
    errors.note_commit()
    deleted = int((last["operationMetrics"] or {}).get("numTargetRowsDeleted", 0))
    log.info("deleted %d rows from %s (version %d)", deleted, path, last["version"])
    return deleted


def file_count(spark: SparkSession, path: str) -> int:
    """Data files of the table's current version (0 when there is no table)."""
    if not exists(spark, path):
        return 0
    row = DeltaTable.forPath(spark, path).detail().select("numFiles").first()
    return int(row["numFiles"]) if row else 0


def optimize(spark: SparkSession, path: str, *, run_id: str) -> None:
    """Compact small files into ~1 GB ones (Delta OPTIMIZE, one commit; a no-op on a compact table).
    Readers keep their snapshot: OPTIMIZE only rewrites files, it changes no row."""
    if not exists(spark, path):
        return
    before = version(spark, path)
    spark.conf.set("spark.databricks.delta.commitInfo.userMetadata", run_id)
    try:
        _before_commit("optimize", path)
        DeltaTable.forPath(spark, path).optimize().executeCompaction()
    finally:
        spark.conf.unset("spark.databricks.delta.commitInfo.userMetadata")
    if version(spark, path) != before:  # nothing to compact commits nothing
        errors.note_commit()


def vacuum(spark: SparkSession, path: str, *, retain_hours: float) -> None:
    """Physically remove files no longer referenced by the table and older than ``retain_hours``: after
    this, time travel to versions before a DELETE can no longer return the deleted rows.

    Below Delta's 168 h safety default the check is switched off for this call only: readers or writers
    still on an older version would lose their files, so run it when no job uses the table."""
    if not exists(spark, path):
        return
    check = "spark.databricks.delta.retentionDurationCheck.enabled"
    before = spark.conf.get(check, "true")
    if retain_hours < 168:
        log.warning("vacuum %s retaining %s h (< 168 h): no job may be using this table", path, retain_hours)
        spark.conf.set(check, "false")
    try:
        _before_commit("vacuum", path)
        DeltaTable.forPath(spark, path).vacuum(retain_hours)
    finally:
        spark.conf.set(check, before)
