"""Ingest runs end to end on tiny landing folders: reconciled counts, the job's summary line, idempotent
reruns, late and re-sent events, other formats, and failures that stop before anything is written."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config
from shopformer.errors import ConfigError, SourceError
from shopformer.ingest import job as ingest_job
from shopformer.ingest.job import IngestReport
from shopformer.ops.jobs import job_main
from tests.ingest.helpers import HEADER, land, with_mapping

pytestmark = pytest.mark.integration  # the ingest job against Delta tables

D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
GOOD = "2024-01-01 10:00:00 UTC,view,p1,100,cat.a,acme,1.50,u1,s1"
DAY1 = "\n".join(
    [
        HEADER,
        GOOD,
        GOOD,  # exact duplicate
        "2024-01-01 10:05:00 UTC,purchase,p2,100,,,3.00,u1,s1",
        "2024-01-01 10:06:00 UTC,click,p2,100,,,3.00,u1,s1",  # unknown type
        "2024-01-01 10:07:00 UTC,view,p3,100",  # too few tokens
        '2024-01-01 10:08:00 UTC,view,"p4,100,,,1.0,u2,s2',  # broken quoting
        "",
    ]
)


def _cfg(cfg: Config) -> Config:
    return with_mapping(cfg, "shop", path="{landing}/shop/date={date}")


def _run(spark: SparkSession, cfg: Config, start: dt.date = D1, end: dt.date | None = None) -> IngestReport:
    end = end or start
    return ingest_job.run(spark, cfg, source="shop", start=start, end=end, run_id=f"test:{start}..{end}")


def _events(spark: SparkSession, cfg: Config) -> DataFrame:
    return tables.read(spark, cfg.table("bronze_events"))


def _rejected(spark: SparkSession, cfg: Config) -> DataFrame:
    return tables.read(spark, cfg.table("bronze_events_rejected"))


def test_run_writes_both_tables_and_counts_reconcile(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    cfg = _cfg(cfg)
    land(tmp_path, "shop", "2024-01-01", "part-0.csv", DAY1)
    report = _run(spark, cfg)
    assert (report.read, report.accepted, report.duplicates, report.rejected) == (6, 2, 1, 3)
    assert report.rejected_by_reason == {"malformed_record": 2, "unknown_event_type": 1}
    events = _events(spark, cfg).select(
        "user_id", "event_type", "item_id", "category", "price", "ingest_date"
    )
    expected = spark.createDataFrame(
        [("u1", "view", "p1", "cat.a", 1.5, D1), ("u1", "purchase", "p2", "100", 3.0, D1)],
        "user_id string, event_type string, item_id string, category string, price double, ingest_date date",
    )
    assertDataFrameEqual(events, expected)
    raw = {r.raw_record for r in _rejected(spark, cfg).where("reason = 'malformed_record'").collect()}
    assert raw == {"2024-01-01 10:07:00 UTC,view,p3,100", '2024-01-01 10:08:00 UTC,view,"p4,100,,,1.0,u2,s2'}
    files = {r.source_file for r in _rejected(spark, cfg).collect()}
    assert len(files) == 1 and files.pop().endswith("date=2024-01-01/part-0.csv")
    assert {r.ingest_run_id for r in _events(spark, cfg).collect()} == {"test:2024-01-01..2024-01-01"}


def test_rerun_of_the_same_date_gives_identical_tables(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    cfg = _cfg(cfg)
    land(tmp_path, "shop", "2024-01-01", "part-0.csv", DAY1)
    first = _run(spark, cfg)
    events, rejected = _events(spark, cfg).collect(), _rejected(spark, cfg).collect()  # rows keep nulls
    second = _run(spark, cfg)
    assert first == second
    assertDataFrameEqual(_events(spark, cfg), spark.createDataFrame(events, _events(spark, cfg).schema))
    assertDataFrameEqual(_rejected(spark, cfg), spark.createDataFrame(rejected, _rejected(spark, cfg).schema))


def test_late_and_resent_events_and_reruns_leave_other_landings_alone(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    cfg = _cfg(cfg)
    land(tmp_path, "shop", "2024-01-01", "part-0.csv", f"{HEADER}\n{GOOD}\n")
    late = "2024-01-01 23:50:00 UTC,cart,p9,100,,,9.99,u3,s3"
    land(tmp_path, "shop", "2024-01-02", "part-0.csv", f"{HEADER}\n{late}\n{GOOD}\n")  # GOOD is re-sent
    _run(spark, cfg, D1)
    day1 = _events(spark, cfg).where("ingest_date = DATE'2024-01-01'").collect()
    report = _run(spark, cfg, D2)
    assert (report.read, report.accepted, report.duplicates, report.rejected) == (2, 1, 1, 0)
    again = _run(spark, cfg, D2)
    assert again == report
    by_date = _events(spark, cfg).select("item_id", "event_date", "ingest_date")
    expected = spark.createDataFrame(
        [("p1", D1, D1), ("p9", D1, D2)], "item_id string, event_date date, ingest_date date"
    )
    assertDataFrameEqual(by_date, expected)
    still = _events(spark, cfg).where("ingest_date = DATE'2024-01-01'")
    assertDataFrameEqual(still, spark.createDataFrame(day1, still.schema))


def test_a_range_reads_each_landing_folder_with_its_own_ingest_date(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    cfg = _cfg(cfg)
    land(tmp_path, "shop", "2024-01-01", "a.csv", f"{HEADER}\n{GOOD}\n")
    land(tmp_path, "shop", "2024-01-02", "a.csv", f"{HEADER}\n{GOOD.replace('p1', 'p2')}\n{GOOD}\n")
    report = _run(spark, cfg, D1, D2)
    assert (report.read, report.accepted, report.duplicates) == (3, 2, 1)
    expected = spark.createDataFrame([("p1", D1), ("p2", D2)], "item_id string, ingest_date date")
    assertDataFrameEqual(_events(spark, cfg).select("item_id", "ingest_date"), expected)


def test_json_lines_and_parquet_sources(spark: SparkSession, cfg: Config, tmp_path: Path) -> None:
    row = dict(zip(HEADER.split(","), GOOD.split(","), strict=True))
    lines = [json.dumps(row), "{not json", json.dumps({**row, "price": -1})]
    land(tmp_path, "js", "2024-01-01", "a.json", "\n".join(lines) + "\n")
    js = with_mapping(cfg, "js", format="json", options={}, path="{landing}/js/date={date}")
    report = ingest_job.run(spark, js, source="js", start=D1, end=D1, run_id="r")
    assert report.rejected_by_reason == {"malformed_record": 1, "negative_price": 1} and report.accepted == 1
    folder = tmp_path / "landing" / "pq" / "date=2024-01-01"
    spark.createDataFrame([row]).write.parquet(str(folder))
    pq = with_mapping(cfg, "pq", format="parquet", options={}, path="{landing}/pq/date={date}")
    assert ingest_job.run(spark, pq, source="pq", start=D1, end=D1, run_id="r").accepted == 1
    got = _events(spark, cfg).where("source = 'pq'").select("user_id", "price", "event_time").first()
    assert (got.user_id, got.price, got.event_time) == ("u1", 1.5, dt.datetime(2024, 1, 1, 10))


def test_a_json_key_no_object_holds_reads_as_null(spark: SparkSession, cfg: Config, tmp_path: Path) -> None:
    """JSON writers often omit null values: when no object of a night has ``user_session`` (an optional
    field), its events are kept with a null session, not refused as a file missing a column."""
    row = dict(zip(HEADER.split(","), GOOD.split(","), strict=True))
    del row["user_session"]
    land(tmp_path, "js", "2024-01-01", "a.jsonl", json.dumps(row) + "\n")
    js = with_mapping(cfg, "js", format="json", options={}, path="{landing}/js/date={date}")
    report = ingest_job.run(spark, js, source="js", start=D1, end=D1, run_id="r")
    assert (report.read, report.accepted, report.rejected) == (1, 1, 0)
    got = _events(spark, cfg).select("user_id", "item_id", "source_session_id").collect()
    assert [tuple(r) for r in got] == [("u1", "p1", None)]


def test_a_json_line_holding_two_objects_is_rejected_whole(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    """Spark's JSON reader keeps the first object of ``{...}{...}`` and drops the second without a trace:
    the line is rejected as malformed, whole, next to a good line and a line with text after its object."""
    row = dict(zip(HEADER.split(","), GOOD.split(","), strict=True))
    other = {**row, "user_id": "u2", "product_id": "p2"}
    two, tail = json.dumps(row) + json.dumps(other), json.dumps(other) + " trailing"
    land(tmp_path, "js", "2024-01-01", "a.jsonl", "\n".join([json.dumps(row), two, tail, " \t"]) + "\n")
    js = with_mapping(cfg, "js", format="json", options={}, path="{landing}/js/date={date}")
    report = ingest_job.run(spark, js, source="js", start=D1, end=D1, run_id="r")
    assert (report.read, report.accepted, report.rejected) == (3, 1, 2)
    assert [tuple(r) for r in _events(spark, cfg).select("user_id", "item_id").collect()] == [("u1", "p1")]
    rejected = _rejected(spark, cfg).select("reason", "raw_record").orderBy("raw_record").collect()
    assert [tuple(r) for r in rejected] == sorted(
        [("malformed_record", two), ("malformed_record", tail)], key=lambda r: r[1]
    )


@pytest.mark.parametrize(
    ("fmt", "files"),
    [
        # a good file and a gzip cut in half: Spark fails while inferring the schema
        (
            "json",
            {
                "a.jsonl": b'{"user_id": "u1"}\n',
                "b.jsonl.gz": gzip.compress(b'{"user_id": "u1"}\n' * 2000)[:60],
            },
        ),
        ("parquet", {"a.parquet": b""}),  # a 0-byte Parquet file
    ],
)
def test_an_unreadable_file_is_a_source_error_naming_the_folder(
    spark: SparkSession, cfg: Config, tmp_path: Path, fmt: str, files: dict[str, bytes]
) -> None:
    folder = tmp_path / "landing" / "bad" / "date=2024-01-01"
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    bad = with_mapping(cfg, "bad", format=fmt, options={}, path="{landing}/bad/date={date}")
    with pytest.raises(SourceError, match=rf"cannot read {fmt} files at .*bad/date=2024-01-01"):
        ingest_job.run(spark, bad, source="bad", start=D1, end=D1, run_id="r")
    assert not tables.exists(spark, cfg.table("bronze_events"))


def test_the_job_prints_one_json_summary_line(
    spark: SparkSession, cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    land(tmp_path, "rees46", "2024-01-01", "part-0.csv", DAY1)
    argv = ["--run-date", "2024-01-01", "--source", "rees46", "--set", f"paths.root={tmp_path}"]
    argv += ["--set", "ingest.max_reject_share=1"]  # DAY1 rejects half its rows: test_bad_days.py
    assert job_main("ingest_events")(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("INGEST {")]
    assert len(lines) == 1
    summary = json.loads(lines[0].removeprefix("INGEST "))
    assert summary["read"] == summary["accepted"] + summary["duplicates"] + summary["rejected"] == 6
    assert summary["run_id"] == "ingest_events:2024-01-01"


# ---------------------------------------------------------------- failures stop before anything is written


def test_missing_mapped_column_names_column_and_path(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    cfg = _cfg(cfg)
    land(tmp_path, "shop", "2024-01-01", "part-0.csv", DAY1.replace("user_session", "session_uuid"))
    with pytest.raises(SourceError, match=r"user_session.*date=2024-01-01"):
        _run(spark, cfg)
    assert not tables.exists(spark, cfg.table("bronze_events"))
    assert not tables.exists(spark, cfg.table("bronze_events_rejected"))


def test_missing_landing_folder_names_the_path_and_leaves_tables_unchanged(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    cfg = _cfg(cfg)
    land(tmp_path, "shop", "2024-01-01", "part-0.csv", DAY1)
    _run(spark, cfg)
    version = _versions(spark, cfg)
    with pytest.raises(SourceError, match=r"date=2024-01-02"):
        _run(spark, cfg, D2, dt.date(2024, 1, 3))
    assert _versions(spark, cfg) == version


def test_bad_config_stops_before_writing(spark: SparkSession, cfg: Config, tmp_path: Path) -> None:
    land(tmp_path, "shop", "2024-01-01", "part-0.csv", DAY1)
    bad = with_mapping(cfg, "shop", path="{landing}/shop/date={date}", event_types={"view": "look"})
    with pytest.raises(ConfigError, match=r"sources\.shop\.event_types\.view"):
        _run(spark, bad)
    fields = {**cfg.get("sources.rees46.fields"), "price": "price +"}
    with pytest.raises(ConfigError, match=r"sources\.shop\.fields\.price"):
        _run(spark, with_mapping(cfg, "shop", path="{landing}/shop/date={date}", fields=fields))
    assert not tables.exists(spark, cfg.table("bronze_events"))


def test_a_file_whose_header_differs_names_the_file(spark: SparkSession, cfg: Config, tmp_path: Path) -> None:
    cfg = _cfg(cfg)
    land(tmp_path, "shop", "2024-01-01", "a.csv", f"{HEADER}\n{GOOD}\n")
    land(tmp_path, "shop", "2024-01-01", "b.csv", f"{HEADER.replace('brand', 'maker')}\n{GOOD}\n")
    with pytest.raises(SourceError, match=r"b\.csv"):
        _run(spark, cfg)
    assert not tables.exists(spark, cfg.table("bronze_events"))


def test_job_exits_1_on_a_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["--run-date", "2024-01-01", "--source", "rees46", "--set", f"paths.root={tmp_path}"]
    assert job_main("ingest_events")(argv) == 1


def _versions(spark: SparkSession, cfg: Config) -> tuple[int, int]:
    from delta.tables import DeltaTable

    return tuple(  # type: ignore[return-value]
        DeltaTable.forPath(spark, cfg.table(t)).history(1).first()["version"]
        for t in ("bronze_events", "bronze_events_rejected")
    )
