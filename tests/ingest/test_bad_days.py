"""Bad days fail loudly: a landing date whose reject share passes ``ingest.max_reject_share`` (or that
accepts nothing) exits 4 after both tables are written, and events older than ``ingest.max_age_days``
are rejected with a reason instead of dragging sessionize back to 1970."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from shopformer import errors, tables
from shopformer.config import Config, load_config
from shopformer.ingest import job as ingest_job
from shopformer.ops.jobs import job_main
from shopformer.sessions import job as sessions_job
from tests.ingest.helpers import HEADER, land, with_mapping

DAY = "2024-02-12"
D = dt.date.fromisoformat(DAY)
REJECTS = "reason string, raw_record string"
ROWS = [f"{DAY} 10:{i:02d}:00 UTC,view,p{i},100,cat.a,acme,1.50,u{i % 3},s{i % 3}" for i in range(20)]


def _raw(line: str) -> str:
    """A well-formed line as bronze.events_rejected keeps it: the raw columns as JSON."""
    return json.dumps(dict(zip(HEADER.split(","), line.split(","), strict=True)), separators=(",", ":"))


def _main(root: Path, *sets: str) -> int:
    argv = ["--run-date", DAY, "--source", "rees46", "--set", f"paths.root={root}"]
    return job_main("ingest_events")([*argv, *[a for s in sets for a in ("--set", s)]])


def _line(out: str) -> dict[str, object]:
    lines = [line for line in out.splitlines() if line.startswith("INGEST {")]
    assert len(lines) == 1, out
    return json.loads(lines[0].removeprefix("INGEST "))


def _rejected(spark: SparkSession, cfg: Config) -> object:
    return tables.read(spark, cfg.table("bronze_events_rejected")).select("reason", "raw_record")


@pytest.mark.integration
def test_a_changed_time_format_rejects_the_night_and_exits_4_after_writing_the_rejects(
    spark: SparkSession, cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    z_rows = [r.replace(" UTC,", "Z,") for r in ROWS]  # the upstream's time format changed: UTC -> Z
    land(tmp_path, "rees46", DAY, "part-0.csv", "\n".join([HEADER, *z_rows, ""]))
    assert _main(tmp_path) == errors.BAD_INPUT
    line = _line(capsys.readouterr().out)
    assert (line["read"], line["accepted"], line["rejected"]) == (20, 0, 20)
    assert line["bad_input"] == [f"{DAY}: accepted no row of 20 read (bad_event_time 20)"]
    expected = spark.createDataFrame(
        [("bad_event_time", _raw(r)) for r in z_rows], "reason string, raw_record string"
    )
    assertDataFrameEqual(_rejected(spark, cfg), expected)  # the rejects are written before the exit


@pytest.mark.integration
def test_a_reject_share_over_the_threshold_exits_4_and_under_it_exits_0(
    spark: SparkSession, cfg: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [r.replace(",view,", ",click,") for r in ROWS[:2]]  # 2 of 20 rows: 10 %
    land(tmp_path, "rees46", DAY, "part-0.csv", "\n".join([HEADER, *bad, *ROWS[2:], ""]))
    assert _main(tmp_path) == errors.BAD_INPUT
    line = _line(capsys.readouterr().out)
    assert line["bad_input"] == [
        f"{DAY}: rejected 10.0% of 20 rows > ingest.max_reject_share (unknown_event_type 2)"
    ]
    assert tables.read(spark, cfg.table("bronze_events")).count() == 18
    assert _main(tmp_path, "ingest.max_reject_share=0.1") == errors.DONE  # 10 % is not more than 10 %
    assert _line(capsys.readouterr().out)["bad_input"] == []


@pytest.mark.integration
def test_rows_rejected_by_the_mappings_own_filters_are_not_defects(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    shop = with_mapping(
        cfg, "shop", path="{landing}/shop/date={date}", exclude={"internal": "brand = 'acme'"}
    )
    rows = [*ROWS[:10], *[r.replace(",acme,", ",other,") for r in ROWS[10:]]]
    land(tmp_path, "shop", DAY, "part-0.csv", "\n".join([HEADER, *rows, ""]))
    report = ingest_job.run(spark, shop, source="shop", start=D, end=D, run_id="r")
    assert report.rejected_by_reason == {"internal": 10} and report.bad_input == []


def test_only_the_bad_landing_date_of_a_range_is_named() -> None:
    d1, d2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
    counts = [
        ("accepted", None, 99, d1),
        ("rejected", "bad_price", 1, d1),
        ("duplicate", None, 5, d2),
        ("accepted", None, 40, d2),
        ("rejected", "missing_user_id", 50, d2),
        ("rejected", "cancellation", 5, d2),
    ]
    found = ingest_job.bad_days(
        counts, [d1, d2, dt.date(2024, 1, 3)], max_share=0.05, filters={"cancellation"}
    )
    assert found == [
        "2024-01-02: rejected 50.0% of 100 rows > ingest.max_reject_share (missing_user_id 50)",
        "2024-01-03: accepted no row of 0 read (nothing rejected)",
    ]


@pytest.mark.integration
def test_an_event_dated_1970_is_rejected_and_sessionize_starts_at_the_landing_date(
    spark: SparkSession, cfg: Config, tmp_path: Path
) -> None:
    epoch = "1970-01-01 00:00:00 UTC,view,p1,100,cat.a,acme,1.50,u1,s1"
    land(tmp_path, "rees46", DAY, "part-0.csv", "\n".join([HEADER, epoch, *ROWS, ""]))
    assert _main(tmp_path) == errors.DONE  # 1 of 21 rows: under 5 %
    expected = spark.createDataFrame([("event_time_too_old", _raw(epoch))], REJECTS)
    assertDataFrameEqual(_rejected(spark, cfg), expected)
    report = sessions_job.run(spark, cfg, start=D, end=D, run_id="s")
    assert (report.first_date, report.events) == (DAY, 20)
    one_day = load_config("local", [f"paths.root={tmp_path}", "ingest.max_age_days=1"])  # a setting
    eve = f"{D - dt.timedelta(days=1)} 23:00:00 UTC,view,p1,100,cat.a,acme,1.50,u1,s1"
    before = f"{D - dt.timedelta(days=2)} 23:59:59 UTC,view,p1,100,cat.a,acme,1.50,u1,s1"
    land(tmp_path, "rees46", DAY, "part-0.csv", "\n".join([HEADER, eve, before, *ROWS, ""]))
    report2 = ingest_job.run(spark, one_day, source="rees46", start=D, end=D, run_id="r")
    assert report2.rejected_by_reason == {"event_time_too_old": 1} and report2.accepted == 21
