"""Readers see whole nights only (issue 16 item 1), on real Spark + Delta: the score views show a night once
scores.published_nights names it and score quality judged it, and only the rows of the run it names."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.schemas import SCORES_USER_EMBEDDINGS, SCORES_USER_NEXT_ITEMS, SCORES_USER_SCORES
from shopformer.scoring import publish, quality_job, sql_views

N1, N2 = dt.date(2024, 3, 4), dt.date(2024, 3, 5)
pytestmark = pytest.mark.integration  # the scoring and score-quality jobs against Delta tables

USERS = [f"u{i}" for i in range(6)]
SCORE_TABLES = {
    "scores_user_scores": SCORES_USER_SCORES,
    "scores_user_embeddings": SCORES_USER_EMBEDDINGS,
    "scores_user_next_items": SCORES_USER_NEXT_ITEMS,
}


def _rows(table: str, night: dt.date, version: str, run_id: str) -> list[tuple]:
    """A night's rows of one score table: every user, two next items each; values depend on the version."""
    lineage = ("shopformer", version, run_id)
    at = dt.datetime.combine(night, dt.time(), tzinfo=dt.UTC)
    bump = int(version) / 100
    if table == "scores_user_scores":
        return [
            ("shop", u, night, 0.1 + i / 10 + bump, 0.5, -1.0 - i, "high", None, None, *lineage, at)
            for i, u in enumerate(USERS)
        ]
    if table == "scores_user_embeddings":
        return [("shop", u, night, [float(i), bump], *lineage) for i, u in enumerate(USERS)]
    return [("shop", u, night, r, f"i{r + i}", *lineage) for i, u in enumerate(USERS) for r in (1, 2)]


def write(spark: SparkSession, cfg: Config, night: dt.date, *names: str, version: str = "3") -> None:
    """What the scoring job writes for a night, table by table (fewer names: a job killed part-way)."""
    for name in names:
        tables.replace_where(
            spark.createDataFrame(
                _rows(name, night, version, f"score:{night}:v{version}"), SCORE_TABLES[name]
            ),
            cfg.table(name),
            predicate=f"as_of_date = DATE'{night.isoformat()}'",
            schema=SCORE_TABLES[name],
            partition_by=["as_of_date"],
            run_id=f"score:{night}:v{version}",
        )


def view(spark: SparkSession, cfg: Config, name: str) -> DataFrame:
    sql_views.register_views(spark, cfg)
    return spark.table(name)


def visible(spark: SparkSession, cfg: Config) -> dict[str, list[tuple[dt.date, str]]]:
    """(night, model version) of every row each score view shows, and of the latest view."""
    return {
        name: sorted({(r["as_of_date"], r["model_version"]) for r in view(spark, cfg, name).collect()})
        for name in [*SCORE_TABLES, "scores_latest_user_scores"]
    }


def assert_views_equal_tables(spark: SparkSession, cfg: Config, nights: list[dt.date]) -> None:
    """Each score view holds exactly its table's rows of the given nights: the three tables agree."""
    for name in SCORE_TABLES:
        table = tables.read(spark, cfg.table(name)).where(F.col("as_of_date").isin(nights))
        assertDataFrameEqual(view(spark, cfg, name), table)


def complete(spark: SparkSession, cfg: Config, night: dt.date, *, version: str = "3") -> None:
    """The rest of a night as the jobs run it: publish (scoring's last commit), then score quality."""
    publish.publish_scored(spark, cfg, run_date=night, run_id=f"score:{night}:v{version}")
    quality_job.run(spark, cfg, run_date=night, run_id=f"quality:{night}")


@pytest.fixture(scope="module")
def judged_n1(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root where N1 is written, published and judged, built once for this module (a whole night costs
    ~10 s of Delta commits); tests that start from it take a copy (``after_n1``)."""
    root = tmp_path_factory.mktemp("judged_n1")
    cfg = load_config("local", [f"paths.root={root}"])
    write(spark, cfg, N1, *SCORE_TABLES)
    complete(spark, cfg, N1)
    return root


@pytest.fixture
def after_n1(judged_n1: Path, cfg: Config) -> Config:
    """``cfg`` (this test's own root) holding a copy of ``judged_n1``: N1 whole, published and judged."""
    shutil.copytree(judged_n1, Path(str(cfg.get("paths.root"))), dirs_exist_ok=True)
    return cfg


def test_a_night_is_seen_only_once_published_and_judged(spark: SparkSession, cfg: Config) -> None:
    nothing = {name: [] for name in [*SCORE_TABLES, "scores_latest_user_scores"]}
    write(spark, cfg, N1, *SCORE_TABLES)
    assert visible(spark, cfg) == nothing  # all three tables written, not published
    publish.publish_scored(spark, cfg, run_date=N1, run_id=f"score:{N1}:v3")
    assert visible(spark, cfg) == nothing  # published, quality pending
    quality_job.run(spark, cfg, run_date=N1, run_id=f"quality:{N1}")
    assert visible(spark, cfg) == {name: [(N1, "3")] for name in nothing}
    assert_views_equal_tables(spark, cfg, [N1])
    night = view(spark, cfg, "scores_published_nights").collect()
    assert [
        (r["as_of_date"], r["users"], r["quality_verdict"], r["scoring_run_id"], r["run_id"]) for r in night
    ] == [(N1, len(USERS), "passed", f"score:{N1}:v3", f"quality:{N1}")]
    assert night[0]["published_at"] == dt.datetime(2024, 3, 4)  # the run date at midnight (session tz UTC)


def test_a_half_written_night_stays_invisible_until_completed(spark: SparkSession, after_n1: Config) -> None:
    cfg = after_n1
    write(spark, cfg, N2, "scores_user_scores")  # the half night: killed after the first commit
    seen = visible(spark, cfg)
    assert seen["scores_latest_user_scores"] == [(N1, "3")]  # yesterday's whole night, not the half one
    assert all(nights == [(N1, "3")] for nights in seen.values())
    write(spark, cfg, N2, *SCORE_TABLES)  # the rerun writes all three, then publishes and is judged
    complete(spark, cfg, N2)
    assert visible(spark, cfg)["scores_latest_user_scores"] == [(N2, "3")]
    assert visible(spark, cfg)["scores_user_embeddings"] == [(N1, "3"), (N2, "3")]
    assert_views_equal_tables(spark, cfg, [N1, N2])


def test_a_rerun_republishes_without_duplicates(spark: SparkSession, after_n1: Config) -> None:
    cfg = after_n1
    path = cfg.table("scores_published_nights")
    write(spark, cfg, N2, *SCORE_TABLES)
    complete(spark, cfg, N2)
    before = tables.read(spark, path).collect()
    version = tables.version(spark, path)
    complete(spark, cfg, N2)  # the same night again: the same rows, one MERGE per job
    assertDataFrameEqual(tables.read(spark, path), before)
    assert tables.version(spark, path) == version + 2
    # A rescoring with another model: while it rewrites the tables, the night's old rows are no longer
    # the published run's and the new ones not yet published, so readers fall back to N1, never a mix.
    write(spark, cfg, N2, "scores_user_scores", "scores_user_embeddings", version="4")
    assert visible(spark, cfg)["scores_latest_user_scores"] == [(N1, "3")]
    assert visible(spark, cfg)["scores_user_next_items"] == [(N1, "3"), (N2, "3")]
    write(spark, cfg, N2, "scores_user_next_items", version="4")
    complete(spark, cfg, N2, version="4")
    rows = tables.read(spark, path).orderBy("as_of_date").collect()
    assert [(r["as_of_date"], r["model_version"], r["quality_verdict"]) for r in rows] == [
        (N1, "3", "passed"),
        (N2, "4", "passed"),
    ]
    assert visible(spark, cfg)["scores_latest_user_scores"] == [(N2, "4")]
    assert_views_equal_tables(spark, cfg, [N1, N2])


def test_examples_read_published_nights_only(spark: SparkSession, after_n1: Config) -> None:
    cfg = after_n1
    write(spark, cfg, N2, *SCORE_TABLES)
    publish.publish_scored(spark, cfg, run_date=N2, run_id=f"score:{N2}:v3")  # quality not run yet
    sql_views.register_views(spark, cfg)
    buyers = spark.sql(sql_views.example_queries()["likely_buyers_this_week"]).collect()
    assert {r["as_of_date"] for r in buyers} == {N1} and len(buyers) == len(USERS)
