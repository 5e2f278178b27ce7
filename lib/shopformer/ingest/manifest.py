"""Which landing files a run reads, from the folders and ``bronze.ingested_files`` (the manifest).

A file that lands in a folder after that folder was ingested must not be skipped silently. Every run
records the files it read (path, size, modification time, the folder's landing date and the landing date
whose rows they became: ``ingest_date``), so the next run can tell what is new. A file is known by its
folder's landing date and its name, not its full path, so moving the root (``paths.root``, a mount) does
not make every file look new:

* the run's own folders: every file, except one that a run of another landing date took (it lives in
  that date's slice of bronze; reading it again here would count its rows as duplicates of themselves);
* the folders of the ``ingest.late_file_days`` landing dates before the run (only folders the manifest
  knows, i.e. ingested since the manifest exists): a file the manifest does not hold is a **late file**
  and is read with the run's first landing date as ``ingest_date`` (so the night's sessionize, which reads
  that landing date, sees its rows); rows already in bronze count as duplicates, as for any re-sent event;
* a file whose size or modification time differs from the manifest's is **changed**: reported; it is read
  again only when a run replaces the landing date that owns it.

Listing uses the Hadoop file system of the path (local, HDFS, object stores) and skips what Spark skips:
names starting with ``_`` or ``.``, and subfolders.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import tables
from shopformer.config import Config
from shopformer.errors import SourceError
from shopformer.ingest import sources
from shopformer.ingest.sources import SourceMapping
from shopformer.schemas import BRONZE_INGESTED_FILES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LandedFile:
    """A data file as listed: qualified path, bytes, modification time (ms since the epoch)."""

    path: str
    size: int
    modified_ms: int

    @property
    def name(self) -> str:
        """What identifies the file within its landing date (the root may move: paths.root, a mount)."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Read:
    """Files read with one ``ingest_date``: a folder of the run, or the late files of an earlier folder."""

    ingest_date: dt.date
    landing_date: dt.date
    where: str  # the folder (or --input path), for messages
    files: tuple[LandedFile, ...]


@dataclass(frozen=True)
class Entry:
    """A manifest row as the planner needs it."""

    landing_date: dt.date
    size: int
    modified_ms: int
    ingest_date: dt.date
    run_id: str


@dataclass(frozen=True)
class Plan:
    reads: list[Read]
    late_files: list[str]
    changed_files: list[str]


def list_files(spark: SparkSession, path: str) -> list[LandedFile] | None:
    """The data files at ``path`` (a folder, or one file), sorted by path; None when it does not exist."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    fs = hpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(hpath):
        return None
    single = fs.getFileStatus(hpath).isFile()
    found = []
    for st in fs.listStatus(hpath):
        name = str(st.getPath().getName())
        if st.isDirectory() or (not single and (name.startswith(("_", ".")) or name.endswith("._COPYING_"))):
            continue
        found.append(
            LandedFile(str(st.getPath().toString()), int(st.getLen()), int(st.getModificationTime()))
        )
    return sorted(found, key=lambda f: f.path)


Known = dict[tuple[dt.date, str], Entry]  # by (landing date, file name)


def _entries(spark: SparkSession, cfg: Config, source: str, first: dt.date, last: dt.date) -> Known:
    """Manifest rows of ``source`` for folders dated [first, last] (a few rows per date)."""
    rows = (
        tables.read(spark, cfg.table("bronze_ingested_files"), BRONZE_INGESTED_FILES)
        .where((F.col("source") == source) & F.col("landing_date").between(first, last))
        .select(
            "file_path",
            "landing_date",
            "size",
            F.unix_millis("modification_time"),
            "ingest_date",
            "ingest_run_id",
        )
        .collect()
    )
    ordered = sorted(rows, key=lambda r: r[4])
    return {
        (r[1], LandedFile(r[0], 0, 0).name): Entry(r[1], int(r[2]), int(r[3]), r[4], r[5]) for r in ordered
    }


def _changed(day: dt.date, files: list[LandedFile], known: Known, run_dates: set[dt.date]) -> list[str]:
    out = []
    for f in files:
        e = known.get((day, f.name))
        if e is None or (e.size, e.modified_ms) == (f.size, f.modified_ms):
            continue
        action = (
            "read again by this run" if e.ingest_date in run_dates else f"rerun {e.ingest_date} to ingest it"
        )
        out.append(
            f"{f.path}: size {e.size} -> {f.size}, modified {_ts(e.modified_ms)} -> {_ts(f.modified_ms)} "
            f"since {e.run_id} ingested it ({action})"
        )
    return out


def _ts(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ours(day: dt.date, files: list[LandedFile], known: Known, run_dates: set[dt.date]) -> list[LandedFile]:
    """Files of folder ``day`` no run has taken, or a date of this run has (a rerun takes them again)."""
    return [f for f in files if (day, f.name) not in known or known[(day, f.name)].ingest_date in run_dates]


def plan(
    spark: SparkSession,
    cfg: Config,
    m: SourceMapping,
    folders: list[tuple[dt.date, str]],
    *,
    late_file_days: int,
    lookback: bool,
) -> Plan:
    """What to read for the run's landing ``folders`` (plus late files of earlier folders when
    ``lookback``); a missing folder is a ``SourceError`` naming it."""
    first, last = folders[0][0], folders[-1][0]
    run_dates = {d for d, _ in folders}
    known = _entries(spark, cfg, m.name, first - dt.timedelta(days=late_file_days), last)
    reads, late, changed = [], [], []
    for day, folder in folders:
        files = list_files(spark, folder)
        if files is None:
            raise SourceError(f"cannot read {m.format} files at {folder}: the path does not exist")
        if not files:
            raise SourceError(f"no data files at {folder} (names starting with '_' or '.' are skipped)")
        mine = _ours(day, files, known, run_dates)
        for f in sorted(set(files) - set(mine), key=lambda f: f.path):
            log.info("%s: taken by the run of %s, not read again", f.path, known[(day, f.name)].ingest_date)
        reads.append(Read(day, day, folder, tuple(mine)))
        changed += _changed(day, files, known, run_dates)
    if lookback:
        for n in range(late_file_days, 0, -1):
            day = first - dt.timedelta(days=n)
            if not any(e.landing_date == day for e in known.values()):
                continue  # never ingested (since the manifest exists): not ours to take
            folder = sources.resolve_path(cfg, m.path, f"sources.{m.name}.path", day)
            files = list_files(spark, folder) or []
            new = _ours(day, files, known, run_dates)
            changed += _changed(day, files, known, run_dates)
            if new:
                reads.append(Read(first, day, folder, tuple(new)))
                late += [f.path for f in new]
    for line in late:
        log.warning(
            "late file (landed after its folder was ingested), read with ingest_date %s: %s", first, line
        )
    for line in changed:
        log.warning("changed landing file: %s", line)
    return Plan(reads, late, changed)


def manifest_rows(spark: SparkSession, source: str, reads: list[Read], run_id: str) -> DataFrame:
    """The manifest rows of this run: one per file read."""
    rows = [
        (source, r.landing_date, f.path, f.size, f.modified_ms, r.ingest_date, run_id)
        for r in reads
        for f in r.files
    ]
    ddl = (
        "source string, landing_date date, file_path string, size long, modified_ms long, "
        "ingest_date date, ingest_run_id string"
    )
    return (
        spark.createDataFrame(rows, ddl)
        .withColumn("modification_time", F.timestamp_millis("modified_ms"))
        .select(*BRONZE_INGESTED_FILES.names)
    )
