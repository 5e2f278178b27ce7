"""The purged time split (model/data.py): no label window of a fitted row reaches a date it is judged on;
the user sample that bounds the training rows keeps whole users."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer.config import Config
from shopformer.model import data
from shopformer.model.data import Split, TrainingDataError, split_dates

D = dt.date.fromisoformat


def weekly(first: str, n: int) -> list[dt.date]:
    return [D(first) + dt.timedelta(days=7 * i) for i in range(n)]


def windows_overlap(split: Split) -> list[str]:
    """Every (task, fitted date, evaluated date) whose label windows overlap: [T, T+h) past the date."""
    bad = []
    for task, h in split.horizons.items():
        ends = {
            "train": max(split.train[task]) + dt.timedelta(days=h),
            "valid": max(split.valid[task]) + dt.timedelta(days=h),
        }
        if ends["train"] > min(split.valid[task]):
            bad.append(
                f"{task}: train label window ends {ends['train']} after valid {min(split.valid[task])}"
            )
        if ends["valid"] > min(split.holdout[task]):
            bad.append(
                f"{task}: valid label window ends {ends['valid']} after holdout {min(split.holdout[task])}"
            )
    return bad


def test_the_demo_dates_are_purged_per_task() -> None:
    # The default demo: weekly as-of dates from 2024-01-08; propensity labelled to 04-22, churn to 03-25.
    by_task = {"propensity": weekly("2024-01-08", 16), "churn": weekly("2024-01-08", 12)}
    split = split_dates(by_task, horizons={"propensity": 7, "churn": 30}, holdout=2, valid=1)
    assert split.holdout == {
        "propensity": [D("2024-04-15"), D("2024-04-22")],
        "churn": weekly("2024-03-18", 2),
    }
    # Validation ends its window by the first holdout date: one week back for propensity, 30 days for churn.
    assert split.valid == {"propensity": [D("2024-04-08")], "churn": [D("2024-02-12")]}
    assert split.train == {"propensity": weekly("2024-01-08", 13), "churn": [D("2024-01-08")]}
    assert split.train_dates == weekly("2024-01-08", 13)
    assert windows_overlap(split) == []


def test_no_label_window_overlaps_on_random_calendars() -> None:
    rnd = random.Random(5)
    checked = 0
    for _ in range(300):
        step, n = rnd.choice([1, 2, 7]), rnd.randrange(3, 60)
        dates = sorted(
            rnd.sample([D("2024-01-01") + dt.timedelta(days=step * i) for i in range(n)], k=n // 2 + 1)
        )
        horizons = {"propensity": rnd.choice([1, 7, 14]), "churn": rnd.choice([7, 30])}
        try:
            split = split_dates(
                {"propensity": dates, "churn": dates[: rnd.randrange(1, len(dates) + 1)]},
                horizons=horizons,
                holdout=rnd.randrange(1, 3),
                valid=rnd.randrange(1, 3),
            )
        except TrainingDataError:
            continue
        checked += 1
        assert windows_overlap(split) == [], (dates, horizons)
        for part in (split.train, split.valid, split.holdout):  # every date is a labelled one
            assert all(set(v) <= set(dates) for v in part.values())
    assert checked > 50


def test_the_unpurged_rule_would_overlap() -> None:
    # What the split did before issue 17: train = every labelled date before the first validation date.
    dates = weekly("2024-01-08", 12)
    valid = dates[-3]
    old = Split(
        train={"churn": [x for x in dates if x < valid]},
        valid={"churn": [valid]},
        holdout={"churn": dates[-2:]},
        horizons={"churn": 30},
    )
    assert len(windows_overlap(old)) == 2  # the checker sees both overlaps the purge removes


def test_too_short_a_period_names_the_settings_to_change() -> None:
    with pytest.raises(
        TrainingDataError, match=r"churn: no labelled as-of date .*30-day.*churn_horizon_days"
    ):
        split_dates({"churn": weekly("2024-01-08", 6)}, horizons={"churn": 30}, holdout=1, valid=1)
    with pytest.raises(TrainingDataError, match=r"need 2 for validation.*train\.valid_dates=2"):
        split_dates({"churn": weekly("2024-01-08", 6)}, horizons={"churn": 30}, holdout=1, valid=2)


def test_rows_keep_each_tasks_label_on_its_own_dates_only(spark: SparkSession, cfg: Config) -> None:
    a, b, c = D("2024-01-01"), D("2024-01-08"), D("2024-01-15")
    rows = spark.createDataFrame(
        [("u1", a, 1, 0, 7, 30), ("u1", b, 0, 1, 7, 30), ("u1", c, 1, 1, 7, 30)],
        "user_id string, as_of_date date, label_propensity int, label_churn int, "
        "propensity_horizon_days int, churn_horizon_days int",
    )
    out = data.rows_on(rows, {"propensity": [a, b], "churn": [a]}).orderBy("as_of_date")
    got = [(r.as_of_date, r.label_propensity, r.label_churn) for r in out.collect()]
    assert got == [(a, 1, 0), (b, 0, -1)]
    # Horizons: the configuration's, or the longer window the rows were built with.
    assert data.label_horizons(cfg, rows) == {"propensity": 7, "churn": 30}
    longer = rows.withColumn("propensity_horizon_days", F.lit(14))
    assert data.label_horizons(cfg, longer)["propensity"] == 14


def user_rows(spark: SparkSession, users: int) -> DataFrame:
    """``users`` users on 3 as-of dates each (two sources: a user is its source and id)."""
    dates = weekly("2024-01-01", 3)
    return spark.createDataFrame(
        [(f"s{i % 2}", f"u{i}", x, i) for i in range(users) for x in dates],
        "source string, user_id string, as_of_date date, seq_len int",
    )


def kept_users(df: DataFrame) -> dict[str, int]:
    return {r.user_id: r["count"] for r in df.groupBy("user_id").count().collect()}


def test_the_user_sample_keeps_whole_users_the_same_for_a_seed(spark: SparkSession) -> None:
    rows = user_rows(spark, 40)
    assertDataFrameEqual(data.sample_users(rows, fraction=1.0, seed=7), rows)
    half = data.sample_users(rows, fraction=0.5, seed=7)
    kept = kept_users(half)
    assert 10 <= len(kept) <= 30  # about half of the 40 users ...
    assert set(kept.values()) == {3}  # ... each with all 3 of their dates
    assertDataFrameEqual(data.sample_users(rows, fraction=0.5, seed=7), half)  # deterministic
    assert set(kept_users(data.sample_users(rows, fraction=0.5, seed=8))) != set(kept)


def test_evaluation_sample_draws_from_every_as_of_date(spark: SparkSession, tmp_path) -> None:
    """holdout.sample keeps about max_rows rows spread evenly over the dates. It used to sample then
    limit, and the limit kept the rows of the biggest file (read first): small dates vanished whole."""
    from shopformer.model.holdout import sample

    sizes = {D("2024-01-08"): 60, D("2024-01-15"): 60, D("2024-03-04"): 1800}
    rows = [("shop", f"u{i}", day) for day, n in sizes.items() for i in range(n)]
    schema = "source string, user_id string, as_of_date date"
    spark.createDataFrame(rows, schema).write.partitionBy("as_of_date").parquet(str(tmp_path / "t"))
    df = spark.read.parquet(str(tmp_path / "t"))
    got = sample(df, 600, seed=7)
    assert 540 <= len(got) <= 660
    per_date = got["as_of_date"].value_counts()
    for day, n in sizes.items():  # each date near its share of 600 rows (binomial, 4 sd)
        expect = n * 600 / 1920
        assert abs(per_date.get(day, 0) - expect) <= 4 * (expect**0.5), (day, per_date.to_dict())
    assert got.equals(sample(df, 600, seed=7))  # same rows every run
    assert len(sample(df, 5000)) == 1920  # under the cap: every row
