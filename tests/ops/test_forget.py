"""Deleting users everywhere on real Delta tables: every user table (real schemas, tiny rows) plus the raw
records of bronze.events_rejected; the job entry point run in-process on the test's Spark session."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql.types import ArrayType, StructType
from pyspark.testing import assertDataFrameEqual

from shopformer import schemas, tables
from shopformer.config import Config, load_config
from shopformer.features.snapshots import snapshot_schema
from shopformer.ops import forget
from shopformer.ops.jobs import job_main

REPO = Path(__file__).resolve().parents[2]
D = dt.date(2024, 1, 8)
USER_TABLES = forget.USER_TABLES
# (source, user_id): u1 also exists in another source; u11 and xu1 must survive a deletion of u1.
KEYS = [("shop", "u1"), ("shop", "u2"), ("shop", "u11"), ("shop", "xu1"), ("other", "u1"), ("uci", "12417")]
# bronze.events_rejected: (source, raw_record); the comment says whose row it is.
REJECTS = [
    ("shop", '{"event_time":"bad","user_id":"u1","product_id":"7"}'),  # u1 (JSON record)
    ("shop", "2024-01-08 10:00:00 UTC,view,7,,,,1.0,u1,s1,extra"),  # u1 (malformed CSV line)
    ("shop", '{"event_time":"bad","user_id":"u11","product_id":"xu1"}'),  # u11: not u1
    ("other", '{"event_time":"bad","user_id":"u1","product_id":"7"}'),  # u1 of the other source
    ("uci", '{"Customer ID":"12417.0","Invoice":"C536379"}'),  # 12417 exported as a float
    ("uci", '{"Customer ID":"124170.0","Invoice":"536380"}'),  # another customer
    ("shop", None),  # no raw record at all
]


def _value(field: object, n: int) -> object:
    """A value per row for every non-null column (nullable ones stay null): rows differ, schemas are real."""
    t = field.dataType  # type: ignore[attr-defined]
    if field.nullable:  # type: ignore[attr-defined]
        return None
    if isinstance(t, ArrayType):
        return [float(n)]
    return {
        "string": f"v{n}",
        "date": D,
        "timestamp": dt.datetime(2024, 1, 8, n),
        "integer": n,
        "long": n,
        "double": n / 10,
        "boolean": False,
    }[t.typeName()]


def _frame(spark: SparkSession, schema: StructType) -> DataFrame:
    rows = [
        tuple({"source": s, "user_id": u}.get(f.name, _value(f, n)) for f in schema.fields)
        for n, (s, u) in enumerate(KEYS)
    ]
    return spark.createDataFrame(rows, schema)


def _schemas() -> dict[str, StructType]:
    """Each table's real schema (snapshot_schema parses DDL: it needs the Spark session)."""
    fixed = {
        "bronze_events": schemas.BRONZE_EVENTS,
        "silver_events": schemas.SILVER_EVENTS,
        "silver_sessions": schemas.SILVER_SESSIONS,
        "gold_user_state": schemas.GOLD_USER_STATE,
        "scores_user_scores": schemas.SCORES_USER_SCORES,
        "scores_user_embeddings": schemas.SCORES_USER_EMBEDDINGS,
        "scores_user_next_items": schemas.SCORES_USER_NEXT_ITEMS,
        "bronze_events_rejected": schemas.BRONZE_REJECTED,
    }
    return {**fixed, "gold_user_snapshots": snapshot_schema([7])}


@pytest.fixture(scope="module")
def template(
    spark: SparkSession, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, list[Row]]]:
    """The nine tables written once, and their rows as read back; each test works on its own copy."""
    root = tmp_path_factory.mktemp("forget-template")
    cfg = load_config("local", [f"paths.root={root}"])
    frames = {n: _frame(spark, s) for n, s in _schemas().items() if n in USER_TABLES}
    rejects = [(s, "f.csv", raw, "malformed_record", D, "t") for s, raw in REJECTS]
    frames["bronze_events_rejected"] = spark.createDataFrame(rejects, schemas.BRONZE_REJECTED)
    for name, df in frames.items():
        tables.overwrite(df, cfg.table(name), schema=_schemas()[name], run_id="t")
    return root, {n: tables.read(spark, cfg.table(n)).collect() for n in frames}


@pytest.fixture
def shop(template: tuple[Path, dict[str, list[Row]]], tmp_path: Path) -> Config:
    shutil.copytree(template[0], tmp_path / "root")
    return load_config("local", [f"paths.root={tmp_path / 'root'}"])


def _assert_kept(
    spark: SparkSession, cfg: Config, before: dict[str, list[Row]], gone: Callable[[Row], bool]
) -> None:
    """Every user table now holds exactly its former rows minus those ``gone(row)`` says."""
    for name in USER_TABLES:
        expected = [r for r in before[name] if not gone(r)]
        assertDataFrameEqual(tables.read(spark, cfg.table(name)).collect(), expected)


@pytest.mark.integration  # MERGE-deletes across eight Delta tables
def test_forget_removes_the_users_rows_everywhere_and_nothing_else(
    spark: SparkSession, shop: Config, template: tuple[Path, dict[str, list[Row]]]
) -> None:
    got = forget.forget(spark, shop, ["u1", "12417"], source=None, run_id="forget:t")
    # u1 twice (two sources) + 12417 once in each user table; rejects: three u1 records + the float 12417.
    assert got == {**{n: 3 for n in USER_TABLES}, "bronze_events_rejected": 4}
    _assert_kept(spark, shop, template[1], lambda r: r["user_id"] in ("u1", "12417"))
    kept = tables.read(spark, shop.table("bronze_events_rejected")).select("source", "raw_record")
    assertDataFrameEqual(
        kept.collect(), [Row(source=s, raw_record=raw) for s, raw in REJECTS[2:3] + REJECTS[5:]]
    )
    history = spark.sql(f"DESCRIBE HISTORY delta.`{shop.table('scores_user_scores')}` LIMIT 1").first()
    assert (history["operation"], history["userMetadata"]) == ("MERGE", "forget:t")
    # The commits that deleted them do not name them (a DELETE's logged predicate would).
    for name in (*USER_TABLES, "bronze_events_rejected"):
        commit = (Path(shop.table(name)) / "_delta_log" / f"{1:020d}.json").read_text()
        assert re.search(r"(?<![\w.])(u1|12417)(?![\w])", commit) is None and "forget:t" in commit, name

    # A rerun, with an unknown id added, deletes nothing (and commits nothing).
    again = forget.forget(spark, shop, ["u1", "12417", "nobody"], source=None, run_id="again")
    assert again == dict.fromkeys(got, 0)
    assert spark.sql(f"DESCRIBE HISTORY delta.`{shop.table('scores_user_scores')}`").count() == 2


@pytest.mark.integration  # MERGE-deletes across eight Delta tables
def test_job_limits_to_a_source_and_vacuum_removes_old_versions(
    spark: SparkSession,
    shop: Config,
    template: tuple[Path, dict[str, list[Row]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    users = tmp_path / "users.txt"
    users.write_text("# erasure requests of 2024-01-08\nu1\n\n# unknown: deletes nothing\nnobody\n")
    root = str(shop.get("paths.root"))
    argv = ["--run-date", "2024-01-08", "--users", str(users), "--source", "shop", "--vacuum-hours", "0"]
    assert job_main("forget_users")([*argv, "--set", f"paths.root={root}"]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("FORGET ")]
    summary = json.loads(line[0].removeprefix("FORGET "))
    assert summary["users"] == 2 and summary["source"] == "shop" and "u1" not in line[0]
    assert summary["deleted"] == {**{n: 1 for n in USER_TABLES}, "bronze_events_rejected": 2}
    _assert_kept(spark, shop, template[1], lambda r: (r["source"], r["user_id"]) == ("shop", "u1"))
    # The version before the DELETE pointed at files VACUUM has removed: time travel cannot bring u1 back.
    with pytest.raises(Exception, match=r"(?i)not exist|FileNotFound"):
        tables.read(spark, shop.table("scores_user_scores"), as_of=0).collect()


def test_users_come_from_a_file_or_a_list(tmp_path: Path) -> None:
    assert forget.parse_users("b, a,,b") == ["a", "b"]
    (tmp_path / "ids").write_text("x1\n# note\n x2 \n")
    assert forget.parse_users(str(tmp_path / "ids")) == ["x1", "x2"]
    with pytest.raises(Exception, match="names no user id"):
        forget.parse_users(" , ")
