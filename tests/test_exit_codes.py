"""Exit codes mean one thing each (docs/operations.md "Exit codes"), a failing job still prints one
``TAG {"error": ...}`` line, and a resource failure is never reported as a bad input file.

The faults are injected into real in-process jobs on real Spark/Delta: an OutOfMemoryError raised by the
JVM (through py4j, as ``raise_error`` in a Spark query), a crash between ingest's two commits, a wrong
``snapshots.vocab_version`` found only at run time.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.sql import SparkSession

from shopformer import errors, tables
from shopformer.errors import (
    BadInputError,
    ConfigError,
    ReconciliationError,
    SourceError,
    UsageError,
)
from shopformer.ingest import transforms as ingest_transforms
from shopformer.ops.jobs import job_main
from shopformer.schemas import GOLD_VOCABULARIES
from shopformer.scoring.quality_job import QualityBreachError
from shopformer.sessions import job as sessions_job
from tests.factories import bronze
from tests.ingest.helpers import HEADER, land

DAY = "2024-01-01"
GOOD = [f"{DAY} 10:0{i}:00 UTC,view,p{i},100,cat.a,acme,1.50,u{i},s{i}" for i in range(5)]
OOM = "java.lang.OutOfMemoryError: Java heap space"


def _argv(root: Path, *extra: str) -> list[str]:
    return ["--run-date", DAY, "--source", "rees46", "--set", f"paths.root={root}", *extra]


def _result(out: str, tag: str) -> dict[str, Any]:
    lines = [line for line in out.splitlines() if line.startswith(f"{tag} {{")]
    assert len(lines) == 1, out
    return json.loads(lines[0].removeprefix(f"{tag} "))


def _jvm_oom(spark: SparkSession) -> None:
    """An error raised inside the JVM whose text is the JVM's heap OOM, as py4j surfaces it."""
    spark.sql(f"SELECT raise_error('{OOM}')").collect()


@pytest.mark.parametrize(
    ("exc", "committed", "code"),
    [
        (SourceError("no folder"), 0, errors.STOPPED),
        (ReconciliationError("counts differ"), 0, errors.STOPPED),
        (RuntimeError("a bug"), 0, errors.STOPPED),
        (ConfigError("config key 'x'"), 0, errors.USAGE),
        (UsageError("--input needs one date"), 0, errors.USAGE),
        (QualityBreachError("ece breached", report=None), 3, errors.QUALITY_BREACH),  # type: ignore[arg-type]
        (BadInputError("reject share 1.0 > 0.05"), 2, errors.BAD_INPUT),
        (RuntimeError(f"An error occurred while calling o1.count.\n: {OOM}\n\tat x"), 0, errors.RESOURCE),
        (SourceError("failed reading"), 0, errors.STOPPED),
        (MemoryError(), 0, errors.RESOURCE),
        (RuntimeError("Out of space in CodeCache for adapters"), 0, errors.RESOURCE),
        (RuntimeError("a bug"), 1, errors.FAILED_AFTER_COMMIT),
        (ConfigError("config key 'x'"), 2, errors.FAILED_AFTER_COMMIT),
        (RuntimeError(OOM), 1, errors.FAILED_AFTER_COMMIT),
    ],
)
def test_each_failure_maps_to_one_code(exc: BaseException, committed: int, code: int) -> None:
    assert errors.classify(exc, committed=committed).exit_code == code


def test_a_bad_input_error_caused_by_an_oom_is_a_resource_failure() -> None:
    try:
        try:
            raise RuntimeError(OOM)
        except RuntimeError as cause:
            raise SourceError("failed reading the raw files at /x") from cause
    except SourceError as exc:
        failure = errors.classify(exc, committed=0)
    assert failure.exit_code == errors.RESOURCE and failure.kind == "ResourceError"
    assert "spark.conf.spark.driver.memory" in failure.message and "raw files" not in failure.message


@pytest.mark.integration
def test_a_jvm_oom_while_reading_exits_5_naming_the_setting_not_the_file(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    land(tmp_path, "rees46", DAY, "part-0.csv", "\n".join([HEADER, *GOOD, ""]))

    def counts(resolved: Any) -> Any:
        _jvm_oom(spark)

    monkeypatch.setattr(ingest_transforms, "disposition_counts", counts)
    with pytest.raises(CapturedException, match="OutOfMemoryError"):  # the fault is real py4j text
        _jvm_oom(spark)
    assert job_main("ingest_events")(_argv(tmp_path)) == errors.RESOURCE
    result = _result(capsys.readouterr().out, "INGEST")
    assert result["exit_code"] == 5 and result["committed"] == 0
    assert result["error"].startswith("ResourceError: resource exhausted")
    assert "spark.conf.spark.driver.memory" in result["error"] and "raw files" not in result["error"]
    assert not (tmp_path / "warehouse" / "bronze").exists()


@pytest.mark.integration
def test_a_crash_between_two_commits_exits_6_and_a_rerun_completes(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    land(tmp_path, "rees46", DAY, "part-0.csv", "\n".join([HEADER, *GOOD, ""]))
    real = tables.replace_where
    calls: list[str] = []

    def last_commit_fails(df: Any, path: str, **kw: Any) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("injected: killed before the last commit")
        real(df, path, **kw)

    monkeypatch.setattr(tables, "replace_where", last_commit_fails)
    assert job_main("ingest_events")(_argv(tmp_path)) == errors.FAILED_AFTER_COMMIT
    result = _result(capsys.readouterr().out, "INGEST")
    assert result["exit_code"] == 6 and result["committed"] == 2
    bronze = tmp_path / "warehouse" / "bronze"  # rejects, manifest, bronze.events last (docs/ingestion.md)
    assert calls == [str(bronze / name) for name in ("events_rejected", "ingested_files", "events")]
    assert (bronze / "events_rejected" / "_delta_log").is_dir() and (bronze / "ingested_files").is_dir()
    assert not (bronze / "events").exists()  # a reader of bronze.events sees nothing of the night
    assert "rerun the same date" in result["error"] and result["run_id"] == f"ingest_events:{DAY}"
    monkeypatch.setattr(tables, "replace_where", real)
    assert job_main("ingest_events")(_argv(tmp_path)) == errors.DONE
    assert _result(capsys.readouterr().out, "INGEST")["accepted"] == len(GOOD)


def test_an_unexpected_error_before_any_write_exits_1_with_an_error_line(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    land(tmp_path, "rees46", DAY, "part-0.csv", "\n".join([HEADER, *GOOD, ""]))

    def boom(*args: Any, **kw: Any) -> None:
        raise RuntimeError("injected bug before the first write")

    monkeypatch.setattr(tables, "replace_where", boom)
    assert job_main("ingest_events")(_argv(tmp_path)) == errors.STOPPED
    result = _result(capsys.readouterr().out, "INGEST")
    assert result == {
        "committed": 0,
        "error": "RuntimeError: injected bug before the first write",
        "exit_code": 1,
        "run_id": f"ingest_events:{DAY}",
    }


def test_a_usage_error_exits_2_with_an_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--run-date", "2024-01-02", "--end-date", DAY, "--set", f"paths.root={tmp_path}"]
    assert job_main("sessionize")(argv) == errors.USAGE
    assert _result(capsys.readouterr().out, "SESSIONIZE")["exit_code"] == 2


@pytest.mark.integration
def test_a_wrong_vocab_version_found_at_run_time_exits_2(
    spark: SparkSession, cfg: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [("e1", "u1", "2024-01-01 10:00:00", "view", "p1", 1.0, DAY)]
    tables.replace_where(
        bronze(spark, rows),
        cfg.table("bronze_events"),
        predicate="true",
        schema=bronze(spark, rows).schema,
        partition_by=["event_date"],
        run_id="test",
    )
    sessions_job.run(spark, cfg, start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 1), run_id="test")
    vocab = spark.createDataFrame([("v2024-01-01", "item", "p1", 2, 1, 8)], GOLD_VOCABULARIES)
    tables.overwrite(vocab, cfg.table("gold_vocabularies"), schema=GOLD_VOCABULARIES, run_id="test")
    before = errors.commits()
    argv = ["--run-date", "2024-01-08", "--set", f"paths.root={tmp_path}"]
    assert job_main("build_snapshots")([*argv, "--set", "snapshots.vocab_version=v1999-01-01"]) == 2
    result = _result(capsys.readouterr().out, "SNAPSHOTS")
    assert "snapshots.vocab_version" in result["error"] and "v1999-01-01" in result["error"]
    assert errors.commits() == before and not tables.exists(spark, cfg.table("gold_user_snapshots"))
