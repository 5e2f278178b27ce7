"""The manifest of ingested landing files (bronze.ingested_files): a file that lands in a folder after the
folder was ingested is read by the next run (not skipped), a rerun of that folder's date takes a new file
too, and a file that changed under the same name is reported."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.ingest import job as ingest_job
from shopformer.ingest.job import IngestReport
from tests.ingest.helpers import HEADER, land, with_mapping

pytestmark = pytest.mark.integration  # ingest runs against Delta tables

D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)


def _row(item: str, day: str = "2024-01-01", etype: str = "view") -> str:
    return f"{day} 10:00:00 UTC,{etype},{item},100,cat.a,acme,1.50,u1,s1"


def _csv(*rows: str) -> str:
    return "\n".join([HEADER, *rows, ""])


def _cfg(cfg: Config) -> Config:
    return with_mapping(cfg, "shop", path="{landing}/shop/date={date}")


def _run(spark: SparkSession, cfg: Config, day: dt.date) -> IngestReport:
    return ingest_job.run(spark, cfg, source="shop", start=day, end=day, run_id=f"run:{day}")


def _counts(r: IngestReport) -> tuple[int, int, int, int]:
    return r.read, r.accepted, r.duplicates, r.rejected


def _events(spark: SparkSession, cfg: Config) -> DataFrame:
    return tables.read(spark, cfg.table("bronze_events")).select("item_id", "event_date", "ingest_date")


def _manifest(spark: SparkSession, cfg: Config) -> DataFrame:
    files = tables.read(spark, cfg.table("bronze_ingested_files"))
    name = F.element_at(F.split("file_path", "/"), -1).alias("file")
    return files.select("landing_date", name, "ingest_date", "ingest_run_id")


def _frame(spark: SparkSession, rows: list[tuple], ddl: str) -> DataFrame:
    return spark.createDataFrame(rows, ddl)


EVENTS = "item_id string, event_date date, ingest_date date"
MANIFEST = "landing_date date, file string, ingest_date date, ingest_run_id string"


def test_a_file_landing_after_its_folder_was_ingested_is_read_by_the_next_night(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    cfg = _cfg(cfg)
    land(tmp_path, "shop", "2024-01-01", "a.csv", _csv(_row("p1"), _row("p2")))
    _run(spark, cfg, D1)
    late = land(tmp_path, "shop", "2024-01-01", "b.csv", _csv(_row("p2"), _row("p3"))) / "b.csv"
    land(tmp_path, "shop", "2024-01-02", "c.csv", _csv(_row("p4", "2024-01-02")))
    night = _run(spark, cfg, D2)
    assert _counts(night) == (3, 2, 1, 0)  # b.csv's p2 is already in bronze: the only duplicate
    assert [Path(p).name for p in night.late_files] == ["b.csv"] and str(late) in night.late_files[0]
    expected = [("p1", D1, D1), ("p2", D1, D1), ("p3", D1, D2), ("p4", D2, D2)]
    assertDataFrameEqual(_events(spark, cfg), _frame(spark, expected, EVENTS))
    files = [(D1, "a.csv", D1, "run:2024-01-01"), (D1, "b.csv", D2, "run:2024-01-02")]
    files.append((D2, "c.csv", D2, "run:2024-01-02"))
    assertDataFrameEqual(_manifest(spark, cfg), _frame(spark, files, MANIFEST))
    assert _run(spark, cfg, D2) == night  # a rerun of the night takes the late file again: same tables
    assertDataFrameEqual(_events(spark, cfg), _frame(spark, expected, EVENTS))
    # the first night's rerun leaves b.csv to the night that read it (else p3 would be a duplicate of itself)
    assert _counts(_run(spark, cfg, D1)) == (2, 2, 0, 0)
    assertDataFrameEqual(_events(spark, cfg), _frame(spark, expected, EVENTS))
    assertDataFrameEqual(_manifest(spark, cfg), _frame(spark, files, MANIFEST))


def test_a_rerun_of_a_date_whose_folder_gained_a_file_ingests_the_new_file(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    cfg = _cfg(cfg)
    land(tmp_path, "shop", "2024-01-01", "a.csv", _csv(_row("p1"), _row("p2")))
    assert _counts(_run(spark, cfg, D1)) == (2, 2, 0, 0)
    land(tmp_path, "shop", "2024-01-01", "b.csv", _csv(_row("p2"), _row("p3"), _row("p4", etype="click")))
    rerun = _run(spark, cfg, D1)
    assert _counts(rerun) == (5, 3, 1, 1) and rerun.late_files == [] and rerun.changed_files == []
    expected = [("p1", D1, D1), ("p2", D1, D1), ("p3", D1, D1)]
    assertDataFrameEqual(_events(spark, cfg), _frame(spark, expected, EVENTS))
    files = [(D1, "a.csv", D1, "run:2024-01-01"), (D1, "b.csv", D1, "run:2024-01-01")]
    assertDataFrameEqual(_manifest(spark, cfg), _frame(spark, files, MANIFEST))


def test_a_file_changed_under_the_same_name_is_reported(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    cfg = _cfg(cfg)
    path = land(tmp_path, "shop", "2024-01-01", "a.csv", _csv(_row("p1"))) / "a.csv"
    _run(spark, cfg, D1)
    before = path.stat().st_size
    path.write_text(_csv(_row("p1"), _row("p9")))  # re-delivered with one more row
    os.utime(path, (1_700_000_000, 1_700_000_000))
    land(tmp_path, "shop", "2024-01-02", "c.csv", _csv(_row("p4", "2024-01-02")))
    night = _run(spark, cfg, D2)
    assert _counts(night) == (1, 1, 0, 0) and night.late_files == []  # not read again by another night
    assert len(night.changed_files) == 1
    assert f"a.csv: size {before} -> {path.stat().st_size}," in night.changed_files[0]
    assert "2023-11-14 22:13:20" in night.changed_files[0] and "rerun 2024-01-01" in night.changed_files[0]
    rerun = _run(spark, cfg, D1)  # the owner's rerun reads the new content and records it
    assert _counts(rerun) == (2, 2, 0, 0) and "read again by this run" in rerun.changed_files[0]
    assert _run(spark, cfg, D2).changed_files == []


def test_a_moved_root_leaves_the_ingested_files_known(spark: SparkSession, tmp_path: Path) -> None:
    """Files are known by landing date and name: a root copied elsewhere finds no late file."""
    old, new = tmp_path / "old", tmp_path / "new"
    land(old, "shop", "2024-01-01", "a.csv", _csv(_row("p1")))
    _run(spark, _cfg(load_config("local", [f"paths.root={old}"])), D1)
    shutil.copytree(old, new)  # modification times kept
    land(new, "shop", "2024-01-02", "c.csv", _csv(_row("p4", "2024-01-02")))
    night = _run(spark, _cfg(load_config("local", [f"paths.root={new}"])), D2)
    assert (night.late_files, night.changed_files, _counts(night)) == ([], [], (1, 1, 0, 0))
