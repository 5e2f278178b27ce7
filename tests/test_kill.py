"""Kill tests: each nightly job killed before each of its commits (``SHOPFORMER_KILL_BEFORE_COMMIT=N``,
``os._exit(137)`` as a SIGKILL), what a reader then sees, and the rerun that completes the night.

A tiny shop (four days of landing files, ``land``) is built in this process, up to the state before each
job's night (``Night.before``: a copy of the root). The uninterrupted run of that night (the reference)
runs in this process too, in the test session's Spark: it records the writes the job attempts, which must
be the kill points listed here (a job that gains a commit fails
``test_the_kill_points_are_every_commit_of_each_job`` until it gets a kill test). The kill points of a job
run in turn on one copy of the state before the night, each killed one write later than the one before:
every run after the first is a rerun of the half night the previous kill left. For ingest and scoring
(``REAL_KILL``: the jobs that hold something outside their commits, ingest's staging folder and scoring's
model cache) the kill before the last write is a real one: ``python jobs/<job>.py`` in a
process of its own (its own JVM; the kill ends the interpreter with whatever it held: cached data, staging
folders, open files). Every other kill point (all of sessionize's, build_snapshots' and evaluate_scores')
runs in this process, where the same switch's ``os._exit`` raises ``Killed`` (no ``except Exception``
catches it): the tables a reader sees depend only on which commits happened, and a JVM per kill point cost
~25 s each in CI. The last rerun, to the end, runs in this process too.

What is checked after each kill: each table the job writes holds either the whole night (equal to the
reference) or nothing of it (no commit since the state before): the tables committed before the kill
point, and only those, have it (silver.published_dates, written first and last by sessionize, is checked
through the views). For score_users and evaluate_scores, a reader of the score views sees exactly what it
saw before the night (no half-published or unjudged night); for sessionize, a reader of the silver views
sees no row the night wrote, only rows it saw before (the night's dates are hidden from its first commit
to its last). After the last rerun, every table the job writes equals the reference, row for row, lineage
columns aside. Ingest commits bronze.events last, so its readers see a night whole or not at all.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import registry, tables
from shopformer.config import Config, load_config
from shopformer.features.aggregates import feature_names
from shopformer.features.vocab import fingerprint_text
from shopformer.model import data as train_data
from shopformer.model import pyfunc
from shopformer.model.evaluation import Calibrator
from shopformer.model.network import ModelConfig, ShopformerModel, save_checkpoint, vocab_fields
from shopformer.ops.jobs import job_main
from shopformer.scoring import sql_views
from tests.factories import SMALL_SPARK

# A job's test runs one process per kill point (a JVM start each); the first test also builds the shop.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
START, HISTORY_END, NIGHT, SCORE_NIGHT = "2024-01-01", "2024-01-03", "2024-01-04", "2024-01-05"
SETS = [
    "ingest.max_reject_share=1.0",  # land()'s malformed rows do not make a bad day (exit 4)
    "snapshots.every_days=1",
    "snapshots.max_len=8",
    "snapshots.windows_days=[7,30]",
    "snapshots.price_max_views=4",
    "scoring.top_k=3",
    *SMALL_SPARK,  # the suite's small local Spark (tests/factories.py)
]
PROCESS_SETS = ("spark.master=local[2]", "spark.conf.spark.driver.memory=1g")  # the killed runs only
# The writes of each job's night, in order: (what, table path under the root).
POINTS = {
    "ingest_events": [
        ("replace_where", "warehouse/bronze/events_rejected"),
        ("replace_where", "warehouse/bronze/ingested_files"),
        ("replace_where", "warehouse/bronze/events"),
    ],
    "sessionize": [  # its dates unpublished first, published again last
        ("replace_where", "warehouse/silver/published_dates"),
        ("replace_where", "warehouse/silver/events"),
        ("merge_upsert", "warehouse/silver/sessions"),
        ("replace_where", "warehouse/silver/published_dates"),
    ],
    "build_snapshots": [  # --build-vocab: the vocabulary first, then the snapshots encoded with it
        ("replace_where", "warehouse/gold/vocabularies"),
        ("replace_where", "warehouse/gold/user_snapshots"),
    ],
    "evaluate_scores": [
        ("replace_where", "warehouse/scores/score_quality"),
        ("merge_upsert", "warehouse/scores/published_nights"),
    ],
    "score_users": [
        ("replace_where", "warehouse/scores/user_scores"),
        ("replace_where", "warehouse/scores/user_embeddings"),
        ("replace_where", "warehouse/scores/user_next_items"),
        ("merge_upsert", "warehouse/scores/published_nights"),
    ],
}
# Jobs whose kill before the last write is a real process kill (a JVM start each, ~25 s of CI); the other
# jobs' kills all run in this process (the switch and the commits are the same code for every job).
# sessionize holds nothing outside its commits (no staging, no cache), so its process kill showed what its
# in-process kill shows; dropped 2026-12-04 for ~30 s of CI (the JVM start and the job run once more).
REAL_KILL = ("ingest_events", "score_users")
PUBLISHING = ("score_users", "evaluate_scores")  # their last commit shows a night to the score views
SILVER_VIEWS = ("silver_events", "silver_sessions")  # sessionize's last commit shows its dates to them
LINEAGE = (
    "ingest_run_id",
    "sessionize_run_id",
    "run_id",
    "scoring_run_id",
    "quality_run_id",
    "scored_at",
    "published_at",
)
SCORE_VIEWS = (
    "scores_user_scores",
    "scores_user_embeddings",
    "scores_user_next_items",
    "scores_latest_user_scores",
)


@dataclass(frozen=True)
class Night:
    """A job's night: its arguments, the root as it was before it, the writes its uninterrupted run
    attempted (what, table path under the root), the rows of that run's tables (the reference) and, for
    score_users, what the score views showed before it."""

    job: str
    argv: tuple[str, ...]
    before: Path
    attempts: tuple[tuple[str, str], ...]
    reference: dict[str, list[Row]]  # the uninterrupted run's tables (read()), by path under the root
    views: dict[str, list[str]]  # score_users: what the score views showed before the night


def _sets(root: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """``--set`` arguments: every path under ``root``, the tiny shop, then ``extra``."""
    return [a for s in [f"paths.root={root}", *SETS, *extra] for a in ("--set", s)]


def run_in_process(job: str, root: Path, *args: str) -> None:
    assert job_main(job)([*args, *_sets(root)]) == 0, f"{job} {args} failed"


def recorded(job: str, root: Path, *args: str) -> tuple[tuple[str, str], ...]:
    """Run ``job`` in this process and return the writes it attempted (what, path under ``root``)."""
    seen: list[tuple[str, str]] = []
    before = tables._before_commit

    def record(what: str, path: str) -> None:
        seen.append((what, str(Path(path).relative_to(root))))
        before(what, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tables, "_before_commit", record)
        run_in_process(job, root, *args)
    return tuple(seen)


def land(folder: Path, users: int = 40, items: int = 30) -> None:
    """Four days of REES46-format landing files (the synthetic source's format), written here without
    Spark: each user views, carts and buys a few of ``items`` items on most days, and each day has two
    malformed rows (an impossible time), so every night writes bronze.events_rejected too."""
    rng = random.Random(16)
    header = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
    for day in range(1, 5):
        date = dt.date(2024, 1, day)
        lines = [header]
        for user in range(users):
            if rng.random() < 0.3:
                continue
            for n in range(rng.randint(2, 6)):
                item = rng.randrange(items)
                kind = rng.choices(["view", "cart", "purchase"], weights=[6, 2, 1])[0]
                at = dt.datetime.combine(date, dt.time(8 + n, rng.randrange(60), rng.randrange(60)))
                price = round((5 + item) * rng.uniform(0.8, 1.2), 2)
                lines.append(
                    f"{at:%Y-%m-%d %H:%M:%S} UTC,{kind},{1000 + item},{item % 4},cat.c{item % 4},"
                    f"b{item % 5},{price},{512000000 + user},s{user}-{day}"
                )
        lines += [f"2024-13-45 99:99:99 UTC,view,1000,0,cat.c0,b0,1.0,{512000000 + u},x" for u in (1, 2)]
        out = folder / f"date={date}"
        out.mkdir(parents=True)
        (out / "part-00000.csv").write_text("\n".join(lines) + "\n")


def cfg_of(root: Path) -> Config:
    return load_config("local", [f"paths.root={root}", *SETS])


def register_model(spark: SparkSession, cfg: Config) -> None:
    """A tiny random-weight model with calibrators on the snapshots' vocabulary, registered as champion
    with its vocabulary tags (as tests/scoring/test_scoring.py; scoring reproduces any model)."""
    root = Path(str(cfg.get("paths.root")))
    snaps = tables.read(spark, cfg.table("gold_user_snapshots"))
    version = str(snaps.select("vocab_version").first()[0])
    sizes, counts, vocab = train_data.vocabulary(spark, cfg, version)
    names = feature_names([7, 30])
    torch.manual_seed(5)
    config = ModelConfig.preset("tiny", **vocab_fields(sizes), max_len=8, aggregate_names=tuple(names))
    model = ShopformerModel(config)
    model.scaler.fit(snaps.select(*names).toPandas().to_numpy(dtype=np.float64))
    model.set_item_counts(counts)
    calibrators = {t: Calibrator("platt", {"a": 1.0, "b": 0.0}).to_dict() for t in ("propensity", "churn")}
    path = str(root / "model.pt")
    extra = {"vocab": vocab, "windows_days": [7, 30], "calibrators": calibrators}
    save_checkpoint(path, model.eval(), extra=extra)
    mlflow.set_tracking_uri(str(cfg.get("paths.mlflow_tracking_uri")))
    experiment = mlflow.create_experiment("kill-test", artifact_location=str(root / "mlruns"))
    with mlflow.start_run(experiment_id=experiment):
        number = pyfunc.log_model(path, "shopformer")
    registry.tag_vocabulary("shopformer", number, version)
    held = tables.read(spark, cfg.table("gold_vocabularies")).where(F.col("vocab_version") == version)
    registry.tag_fingerprint("shopformer", number, fingerprint_text(held))
    registry.promote("shopformer", number)


@pytest.fixture(scope="module")
def nights(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Night]:
    """The shop's history up to 01-03, then the nights under test, uninterrupted, in this process: ingest
    and sessionize of 01-04, and scoring of 01-05 after a published and judged 01-04."""
    base = tmp_path_factory.mktemp("kill")
    work = base / "work"
    land(work / "landing" / "synthetic")
    history = ("--run-date", START, "--end-date", HISTORY_END)
    run_in_process("ingest_events", work, *history)
    run_in_process("sessionize", work, *history)
    out: dict[str, Night] = {}

    def night(job: str, *args: str) -> None:
        before = shutil.copytree(work, base / f"before_{job}")
        views = score_views(spark, before) if job in PUBLISHING else {}
        views = silver_views(spark, before) if job == "sessionize" else views
        attempts = recorded(job, work, *args)
        reference = {path: read(spark, work, path).collect() for _, path in attempts}
        out[job] = Night(job, args, before, attempts, reference, views)

    night("ingest_events", "--run-date", NIGHT)
    night("sessionize", "--run-date", NIGHT)
    night("build_snapshots", "--run-date", NIGHT, "--end-date", SCORE_NIGHT, "--build-vocab")
    register_model(spark, cfg_of(work))
    run_in_process("score_users", work, "--run-date", NIGHT)
    night("evaluate_scores", "--run-date", NIGHT)  # judged: the night readers see before SCORE_NIGHT
    night("score_users", "--run-date", SCORE_NIGHT)
    return out


def read(spark: SparkSession, root: Path, path: str) -> DataFrame:
    """The table at ``path`` under ``root`` without its lineage columns, landing file paths from the
    landing folder on (each root holds a copy of the same files)."""
    df = tables.read(spark, str(root / path)).drop(*LINEAGE)
    for name in {"source_file", "file_path"} & set(df.columns):
        df = df.withColumn(name, F.regexp_replace(name, "^.*/landing/", "landing/"))
    return df


def version(spark: SparkSession, root: Path, path: str) -> int:
    return tables.version(spark, str(root / path))


def same(spark: SparkSession, root: Path, night: Night, path: str) -> None:
    """The table at ``path`` under ``root`` equals the uninterrupted run's, full-frame, lineage aside."""
    assertDataFrameEqual(read(spark, root, path), night.reference[path])


def score_views(spark: SparkSession, root: Path) -> dict[str, list[str]]:
    """Every row of each score view over the tables under ``root`` (lineage aside), sorted."""
    sql_views.register_views(spark, cfg_of(root))
    return {v: sorted(map(str, spark.table(v).drop(*LINEAGE).collect())) for v in SCORE_VIEWS}


def silver_views(spark: SparkSession, root: Path) -> dict[str, list[str]]:
    """Every row of each silver view over the tables under ``root`` (lineage aside), sorted."""
    sql_views.register_views(spark, cfg_of(root))
    return {v: sorted(map(str, spark.table(v).drop(*LINEAGE).collect())) for v in SILVER_VIEWS}


def killed_run(night: Night, root: Path, k: int) -> subprocess.CompletedProcess[str]:
    """``python jobs/<job>.py`` of the night on ``root``, killed before its k-th write."""
    cmd = [sys.executable, str(REPO / "jobs" / f"{night.job}.py"), *night.argv, *_sets(root, PROCESS_SETS)]
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        tables.KILL_ENV: str(k),
    }
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=400)


class Killed(BaseException):
    """The in-process stand-in for the switch's ``os._exit(137)``: a BaseException, so no ``except
    Exception`` of a job catches it, as nothing of the job runs after a real kill."""


def killed_while(run: Callable[[], object], k: int, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """``run()`` in this process, killed before its k-th write by the switch itself
    (``SHOPFORMER_KILL_BEFORE_COMMIT=k``, its counter from 0 as in a new process) with ``os._exit``
    raising ``Killed``: what it printed on stdout and stderr."""

    def die(code: int) -> None:
        raise Killed(code)

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tables.KILL_ENV, str(k))
        mp.setattr(tables, "_attempts", [0])
        mp.setattr(os, "_exit", die)
        with pytest.raises(Killed, match="137"):
            run()
    seen = capsys.readouterr()
    return seen.out, seen.err


def killed_in_process(
    night: Night, root: Path, k: int, capsys: pytest.CaptureFixture[str]
) -> tuple[str, str]:
    """The night's job in this process, killed before its k-th write (``killed_while``)."""
    return killed_while(lambda: job_main(night.job)([*night.argv, *_sets(root)]), k, capsys)


def test_the_kill_points_are_every_commit_of_each_job(nights: dict[str, Night]) -> None:
    """The uninterrupted nights attempted exactly the writes the kill tests kill before."""
    assert {job: list(n.attempts) for job, n in nights.items()} == POINTS


@pytest.mark.parametrize("job", list(POINTS))
def test_each_kill_leaves_whole_tables_and_the_rerun_completes_the_night(
    spark: SparkSession,
    nights: dict[str, Night],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    job: str,
) -> None:
    """On one copy of the state before the night: the job killed before its 1st write, then run again and
    killed before its 2nd, ... (each run a rerun of the half night the one before left), then run again
    to the end. For the jobs of ``REAL_KILL`` the kill before the last write is a real one, in a process
    of its own (``os._exit(137)``
    ends its interpreter and JVM with whatever they held); the earlier ones run in this process, with the
    switch's ``os._exit`` raising ``Killed`` at the same place (CI time: one JVM per job, not per point).
    After each kill, the tables committed before the kill point hold the whole night and the others are
    untouched; at the end, the uninterrupted run's tables."""
    night = nights[job]
    root = shutil.copytree(night.before, tmp_path / "root")
    points = POINTS[job]
    for k, (what, path) in enumerate(points, 1):
        if k < len(points) or job not in REAL_KILL:
            out, err = killed_in_process(night, root, k, capsys)
        else:
            done = killed_run(night, root, k)
            assert done.returncode == 137, done.stderr[-3000:]
            out, err = done.stdout, done.stderr
        assert f"{tables.KILL_ENV}={k}: killed before {what} {root / path}" in err
        assert not re.search(r"^[A-Z_]+ \{", out, re.M)  # killed: no result line, not even an error
        done, pending = [p for _, p in points[: k - 1]], [p for _, p in points[k - 1 :]]
        for written in set(done) - set(pending):  # committed before the kill, for good: the whole night
            same(spark, root, night, written)
        for written in set(pending) - set(done):  # not committed by any run: no commit at all
            assert version(spark, root, written) == version(spark, night.before, written), written
        if job in PUBLISHING:  # readers see the nights published (and judged) before, exactly
            assert score_views(spark, root) == night.views
        if job == "sessionize":  # readers see no row the night wrote: only rows they saw before it
            seen = silver_views(spark, root)
            assert all(set(seen[v]) <= set(night.views[v]) for v in SILVER_VIEWS), seen
    run_in_process(job, root, *night.argv)  # the rerun to the end
    for _, written in points:
        same(spark, root, night, written)
