"""forget_users takes ids literally: ``512000020#x`` deletes that user, never ``512000020`` (comment syntax
used to cut the id short), and the ids never reach the logs or the result line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config
from shopformer.ops import forget
from shopformer.ops.jobs import job_main
from shopformer.schemas import BRONZE_EVENTS
from tests.factories import bronze

ROWS = [
    ("e1", "512000020", "2024-01-08 10:00:00", "view", "i1", 1.0, "2024-01-08"),
    ("e2", "512000020#x", "2024-01-08 10:01:00", "view", "i1", 1.0, "2024-01-08"),
    ("e3", "a", "2024-01-08 10:02:00", "view", "i1", 1.0, "2024-01-08"),
    ("e4", "a#1", "2024-01-08 10:03:00", "view", "i1", 1.0, "2024-01-08"),
]


def test_ids_are_literal_in_a_list_and_only_whole_lines_are_comments_in_a_file(tmp_path: Path) -> None:
    assert forget.parse_users("512000020#x") == ["512000020#x"]
    assert forget.parse_users("a#1, b") == ["a#1", "b"]
    users = tmp_path / "requests.txt"
    users.write_text("# erasure requests\n   # indented comment\na#1\n\n b # not a comment \n")
    assert forget.parse_users(str(users)) == ["a#1", "b # not a comment"]
    users.write_text("# only comments\n\n")
    with pytest.raises(Exception, match="names no user id"):
        forget.parse_users(str(users))


@pytest.mark.integration
def test_forgetting_an_id_with_a_hash_keeps_the_user_it_starts_with(
    spark: SparkSession,
    cfg: Config,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = bronze(spark, ROWS)
    path = cfg.table("bronze_events")
    tables.replace_where(
        events, path, predicate="true", schema=BRONZE_EVENTS, partition_by=["event_date"], run_id="t"
    )
    caplog.set_level(logging.DEBUG)
    argv = ["--run-date", "2024-01-08", "--users", "512000020#x,a#1", "--set", f"paths.root={tmp_path}"]
    assert job_main("forget_users")(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("FORGET ") :].removeprefix("FORGET "))
    assert summary["users"] == 2 and summary["deleted"]["bronze_events"] == 2
    kept = bronze(spark, [ROWS[0], ROWS[2]])
    assertDataFrameEqual(tables.read(spark, path), kept)  # 512000020 and a are still there
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "forgot 2 user(s)" in logged  # the logs were captured ...
    assert "512000020" not in logged + out and "a#1" not in logged + out  # ... and name no id
