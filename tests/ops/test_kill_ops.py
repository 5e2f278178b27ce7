"""Kill tests of the ops jobs that commit once per table (issue 16 item 2): ``forget_users`` (a MERGE that
deletes, per user table, then with ``--vacuum-hours`` a VACUUM of each) and ``maintain_tables`` (OPTIMIZE
then VACUUM of each existing table), killed in this process by the switch as tests/test_kill.py does it
(``killed_in_process``: ``os._exit`` raising ``Killed``; no process, no JVM of their own).

The state: two tables written once with tests/ops/test_forget.py's schemas and rows, one per kind of match
of forget (bronze.events by ``user_id``, in two files; bronze.events_rejected by raw record, in one). The
jobs skip absent tables, so their writes are these tables' only: 2 per table, 4 per job (each table costs
~10 s of CI here, so two). Each job's uninterrupted run records the writes it attempts (the kill points)
and its tables; then, on one copy of the state, the job is killed before one point after another (every run
a rerun of what the kill before left), each at all 4, and run again to the end, which
equals the uninterrupted run. forget: a table keeps the users' rows until its MERGE commits, and keeps
them on disk (time travel) until its VACUUM. maintain: at each of its writes a reader sees the rows it saw
before the job; after a kill, only the tables OPTIMIZE reached before the kill point are compacted.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyspark.sql import Row, SparkSession
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import load_config
from tests.ops.test_forget import REJECTS, D, _frame, _schemas
from tests.test_kill import Night, killed_in_process, recorded, run_in_process

# The jobs run in the test's Spark session: 14 forget and 14 maintain writes of tiny tables in all.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RUN_DATE = ("--run-date", "2024-01-08")
USERS = ("u1", "12417")  # u1 has rows in two sources, 12417 in one (a float 12417.0 in a raw record)
FORGET = (*RUN_DATE, "--users", ",".join(USERS), "--vacuum-hours", "0")
# The state's tables, in forget's order and in maintain's (name order).
TABLES = ("bronze_events", "bronze_events_rejected")
RAW = "bronze_events_rejected"  # its rows match by raw record
ONE_FILE = "bronze_events_rejected"  # maintain's OPTIMIZE finds nothing to compact there (still a write)
GONE_RAW = {REJECTS[i][1] for i in (0, 1, 3, 4)}  # the users' raw records (test_forget.py says whose)
MAINTAIN_KILLS = (1, 2, 3, 4)  # before each write: OPTIMIZE and VACUUM of one table, then of the other
OPTIMIZE_WRITE = "spark.databricks.delta.optimizeWrite.enabled"  # conf/base.yaml: on (a file per partition)


def _paths() -> dict[str, str]:
    """Each table's path under the root, by name."""
    cfg = load_config("local", ["paths.root=/root"])
    return {name: str(Path(cfg.table(name)).relative_to("/root")) for name in TABLES}


PATH = _paths()


@dataclass(frozen=True)
class State:
    """The tables before a job: their rows, versions and data files, by path under ``root``."""

    root: Path
    rows: dict[str, list[Row]]
    versions: dict[str, int]
    files: dict[str, int]


@dataclass(frozen=True)
class Run:
    """A job's uninterrupted run on a copy of the state: its night (arguments, writes attempted, the
    tables' rows after it), its tables' data files after it, and (maintain) the rows a reader saw at each
    write and after the job."""

    night: Night
    files: dict[str, int]
    seen: list[tuple[str, dict[str, list[Row]]]]


def _rows(spark: SparkSession, root: Path) -> dict[str, list[Row]]:
    return {p: tables.read(spark, str(root / p)).collect() for p in PATH.values()}


def _files(spark: SparkSession, root: Path) -> dict[str, int]:
    return {p: tables.file_count(spark, str(root / p)) for p in PATH.values()}


@pytest.fixture(scope="module")
def state(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> State:
    root = tmp_path_factory.mktemp("kill-ops") / "state"
    shapes = _schemas()
    rejects = [(s, "f.csv", raw, "malformed_record", D, "t") for s, raw in REJECTS]
    configured = spark.conf.get(OPTIMIZE_WRITE, None)
    spark.conf.set(OPTIMIZE_WRITE, "false")  # a file per write task: 2 small files for OPTIMIZE to compact
    try:
        for name, path in PATH.items():
            df = spark.createDataFrame(rejects, shapes[RAW]) if name == RAW else _frame(spark, shapes[name])
            df = df.coalesce(1) if name == ONE_FILE else df.repartition(2)
            tables.overwrite(df, str(root / path), schema=shapes[name], run_id="t")
    finally:
        if configured is None:
            spark.conf.unset(OPTIMIZE_WRITE)
        else:
            spark.conf.set(OPTIMIZE_WRITE, configured)
    versions = {p: tables.version(spark, str(root / p)) for p in PATH.values()}
    return State(root, _rows(spark, root), versions, _files(spark, root))


def _run(
    spark: SparkSession, state: State, work: Path, job: str, argv: tuple[str, ...], *, watch: bool = False
) -> Run:
    """``job`` uninterrupted on ``work`` (a copy of the state); with ``watch``, what a reader sees at each
    write (the rows of every table, read anew) and after the job."""
    seen: list[tuple[str, dict[str, list[Row]]]] = []
    commit = tables._before_commit

    def look(what: str, path: str) -> None:
        seen.append((f"before {what} {path}", _rows(spark, work)))
        commit(what, path)

    shutil.copytree(state.root, work)
    with pytest.MonkeyPatch.context() as mp:
        if watch:
            mp.setattr(tables, "_before_commit", look)
        attempts = recorded(job, work, *argv)  # records the writes, then calls look (if watching)
    if watch:
        seen.append(("after the job", _rows(spark, work)))
    night = Night(job, argv, state.root, attempts, _rows(spark, work), {})
    return Run(night, _files(spark, work), seen)


@pytest.fixture(scope="module")
def forget_run(spark: SparkSession, state: State, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(spark, state, tmp_path_factory.mktemp("forget") / "work", "forget_users", FORGET)


@pytest.fixture(scope="module")
def maintain_run(spark: SparkSession, state: State, tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(
        spark, state, tmp_path_factory.mktemp("maintain") / "work", "maintain_tables", RUN_DATE, watch=True
    )


def _gone(name: str, row: Row) -> bool:
    """Whether ``row`` of table ``name`` is one of the users'."""
    return row["raw_record"] in GONE_RAW if name == RAW else row["user_id"] in USERS


def _killed(out: str, err: str, k: int, what: str, path: Path) -> None:
    assert f"{tables.KILL_ENV}={k}: killed before {what} {path}" in err
    assert not re.search(r"^[A-Z_]+ \{", out, re.M)  # killed: no result line, not even an error


def test_forget_writes_one_delete_then_one_vacuum_per_table(forget_run: Run, state: State) -> None:
    """The kill points are the uninterrupted run's writes; it deleted the users' rows and only those."""
    night = forget_run.night
    deletes = [("delete_matching", PATH[n]) for n in TABLES]
    assert list(night.attempts) == deletes + [("vacuum", PATH[n]) for n in TABLES]
    for name, path in PATH.items():
        kept = [r for r in state.rows[path] if not _gone(name, r)]
        assert 0 < len(kept) < len(state.rows[path]), name
        assertDataFrameEqual(night.reference[path], kept)


def _forget_left(spark: SparkSession, state: State, run: Run, root: Path, k: int) -> None:
    """After a kill before forget's k-th write: the tables whose MERGE came before it have lost the users'
    rows (the uninterrupted run's rows), the others are untouched (no commit since the state); the tables
    whose VACUUM came before it no longer have the old version's files, the others still read it whole."""
    for i, (name, path) in enumerate(PATH.items()):
        table = str(root / path)
        if i + 1 < k:
            assertDataFrameEqual(tables.read(spark, table), run.night.reference[path])
        else:
            assertDataFrameEqual(tables.read(spark, table), state.rows[path])
            assert tables.version(spark, table) == state.versions[path], name
        if len(TABLES) + i + 1 < k:  # vacuumed: time travel cannot bring the users' rows back
            with pytest.raises(Exception, match=r"(?i)not exist|FileNotFound"):
                tables.read(spark, table, as_of=state.versions[path]).collect()
        else:  # not vacuumed: the old version, users' rows and all, is still on disk
            assertDataFrameEqual(tables.read(spark, table, as_of=state.versions[path]), state.rows[path])


def test_forget_killed_before_each_write_then_rerun(
    spark: SparkSession, state: State, forget_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On one copy of the state: forget killed before its 1st write, then run again and killed before its
    2nd, ... (each a rerun of what the kill before left), then run again to the end: the uninterrupted
    run's tables, row for row, and the users' old files gone."""
    night = forget_run.night
    root = shutil.copytree(state.root, tmp_path / "root")
    for k, (what, path) in enumerate(night.attempts, 1):
        _killed(*killed_in_process(night, root, k, capsys), k, what, root / path)
        _forget_left(spark, state, forget_run, root, k)
    run_in_process(night.job, root, *night.argv)
    _forget_left(spark, state, forget_run, root, len(night.attempts) + 1)


def test_maintain_changes_no_row_a_reader_sees_at_any_of_its_writes(maintain_run: Run, state: State) -> None:
    """OPTIMIZE then VACUUM per table (in name order), OPTIMIZE a point even where it finds nothing to
    compact; at every write and after the job a reader sees exactly the rows it saw before the job."""
    order = sorted(TABLES)
    assert list(maintain_run.night.attempts) == [(w, PATH[n]) for n in order for w in ("optimize", "vacuum")]
    assert len(maintain_run.seen) == len(maintain_run.night.attempts) + 1
    for _point, rows in maintain_run.seen:
        for path in PATH.values():
            assertDataFrameEqual(rows[path], state.rows[path])
    assert state.files == {p: 1 if p == PATH[ONE_FILE] else 2 for p in PATH.values()}
    assert maintain_run.files == dict.fromkeys(PATH.values(), 1)  # compacted


def test_maintain_killed_before_each_write_then_rerun(
    spark: SparkSession, state: State, maintain_run: Run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On one copy of the state: maintain killed before each of its 4 writes in turn, each a
    rerun of what the kill before left, then run again to the end. After each kill, every table has the
    rows it had, only the tables OPTIMIZE reached before the kill point have their compacted files, the
    others had no commit; after the rerun, the uninterrupted run's file counts."""
    night = maintain_run.night
    root = shutil.copytree(state.root, tmp_path / "root")
    order = [path for what, path in night.attempts if what == "optimize"]
    for k in MAINTAIN_KILLS:
        what, path = night.attempts[k - 1]
        _killed(*killed_in_process(night, root, k, capsys), k, what, root / path)
        for i, table in enumerate(order):
            assertDataFrameEqual(tables.read(spark, str(root / table)), state.rows[table])
            if 2 * i + 1 < k:
                assert tables.file_count(spark, str(root / table)) == maintain_run.files[table], table
            else:
                assert tables.file_count(spark, str(root / table)) == state.files[table], table
                assert tables.version(spark, str(root / table)) == state.versions[table], table
    run_in_process(night.job, root, *night.argv)
    for table in order:
        assertDataFrameEqual(tables.read(spark, str(root / table)), night.reference[table])
    assert _files(spark, root) == maintain_run.files
