"""The synthetic shop: REES46 layout, determinism, funnels, sessions, churn, promotions, lateness and dirt.

Shops here are small (hundreds of users, a couple of weeks); statistical checks use margins far from the
values the documented parameters give (docs/synthetic_shop.md)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import replace
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.errors import ConfigError
from shopformer.ops.jobs import job_main
from shopformer.synthetic.catalog import ITEMS, item_catalog, on_promo
from shopformer.synthetic.events import session_plans
from shopformer.synthetic.users import (
    REES46_COLUMNS,
    USERS,
    ShopParams,
    mission_sessions,
    purchase_decisions,
    shop_logs,
    user_missions,
    user_traits,
)

REPO = Path(__file__).resolve().parents[2]
RUN_DATE = dt.date(2024, 3, 1)
TIME_FORMAT = "yyyy-MM-dd HH:mm:ss 'UTC'"
BASE = {"users": 300, "items": 200, "days": 14, "start_date": dt.date(2024, 1, 1), "seed": 7}


def make_shop(
    spark: SparkSession, partitions: int = 2, **changes: object
) -> tuple[ShopParams, DataFrame, DataFrame, DataFrame]:
    """(params, users, items, logs) for the base config with ``changes``."""
    p = replace(ShopParams.from_config(load_config("local"), RUN_DATE), **{**BASE, **changes})
    p.validate()
    users = spark.range(0, p.users, 1, partitions).transform(user_traits, p=p)
    items = spark.range(p.items).transform(
        item_catalog, seed=p.seed, layout=p.layout(), promo_share=p.promo_share
    )
    return p, users, items, users.transform(shop_logs, items=items, p=p)


def parsed(logs: DataFrame) -> DataFrame:
    """Typed view of raw rows (rows whose fields do not parse come out null)."""
    return logs.select(
        "*",
        F.try_to_timestamp("event_time", F.lit(TIME_FORMAT)).alias("ts"),
        F.expr("try_cast(price AS double)").alias("price_d"),
        F.col("product_id").cast("long").alias("pid"),
    )


@pytest.fixture(scope="module")
def big(spark: SparkSession) -> tuple[ShopParams, DataFrame, DataFrame, DataFrame]:
    """A larger clean shop where every item runs promotions, for the statistical checks."""
    p, users, items, logs = make_shop(
        spark, users=2000, days=28, dirty_fraction=0.0, late_fraction=0.0, promo_share=1.0
    )
    return p, users.cache(), items.cache(), parsed(logs).cache()


@pytest.fixture(scope="module")
def clean(spark: SparkSession) -> tuple[ShopParams, DataFrame, DataFrame, DataFrame]:
    """A shop without dirt or late rows, cached for the structural checks."""
    p, users, items, logs = make_shop(spark, dirty_fraction=0.0, late_fraction=0.0)
    return p, users.cache(), items.cache(), parsed(logs).cache()


def test_one_user_one_item_one_day(spark: SparkSession) -> None:
    p, users, items, logs = make_shop(
        spark, users=1, items=1, days=1, new_user_share=0.0, missions_per_day=5.0
    )
    rows = parsed(logs).collect()
    assert users.count() == 1 and items.count() == 1
    assert logs.columns == [*REES46_COLUMNS, "date"]
    assert rows, "a very active user must shop on the only day"
    assert {r.date for r in rows} <= {"2024-01-01", "2024-01-02"}
    assert {r.product_id for r in rows} == {"1000000"}
    assert all(r.ts.date() == p.start_date for r in rows if r.ts is not None)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("format", "xml"),
        ("days", 0),
        ("elasticity_median", 0.5),
        ("dirty_fraction", 0.9),
        ("mission_intent", -1),
        ("mission_spacing_scale", 0),
    ],
)
def test_bad_config_names_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"synthetic.{key}"):
        ShopParams.from_config(load_config("local", [f"synthetic.{key}={value}"]), RUN_DATE)


def test_null_start_date_ends_the_day_before_run_date() -> None:
    cfg = load_config("local", ["synthetic.start_date=null", "synthetic.days=10"])
    assert ShopParams.from_config(cfg, RUN_DATE).start_date == dt.date(2024, 2, 20)


@pytest.mark.integration
def test_same_seed_same_rows_any_partitioning_other_seed_differs(spark: SparkSession) -> None:
    small = {"users": 80, "days": 7, "dirty_fraction": 0.05, "late_fraction": 0.05}
    a = make_shop(spark, partitions=1, **small)[3]
    b = make_shop(spark, partitions=5, **small)[3]
    assertDataFrameEqual(a, b)
    other = make_shop(spark, seed=8, **small)[3]
    assert a.exceptAll(other).count() > 0.9 * a.count()


def test_raw_values_look_like_rees46(clean: tuple) -> None:
    _, _, _, logs = clean
    assert logs.count() > 1000
    for r in logs.limit(500).collect():
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", r.event_time)
        assert r.event_type in ("view", "cart", "remove_from_cart", "purchase")
        assert r.product_id.isdigit() and r.category_id.isdigit() and len(r.category_id) == 19
        assert r.user_id.isdigit() and re.fullmatch(r"\d+\.\d\d", r.price)
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", r.user_session)
        assert r.category_code is None or re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", r.category_code)
        assert r.brand is None or r.brand == r.brand.lower()


def test_purchases_and_removes_follow_their_funnel_in_the_session(clean: tuple) -> None:
    _, _, _, logs = clean
    order = Window.partitionBy("user_session", "pid").orderBy("ts")
    seen = order.rowsBetween(Window.unboundedPreceding, -1)
    steps = logs.select(
        "event_type",
        F.collect_set("event_type").over(seen).alias("before"),
    )
    bad_purchase = steps.where(
        "event_type = 'purchase' AND NOT (array_contains(before, 'view') AND array_contains(before, 'cart'))"
    )
    bad_remove = steps.where("event_type = 'remove_from_cart' AND NOT array_contains(before, 'cart')")
    assert bad_purchase.count() == 0 and bad_remove.count() == 0
    assert steps.where("event_type = 'purchase'").count() > 20


def test_session_gaps_short_inside_long_between(clean: tuple) -> None:
    _, _, _, logs = clean
    by_session = Window.partitionBy("user_session").orderBy("ts")
    # lag() is an offset function: Spark fixes its frame, so none is named here.
    inside = logs.select(
        (F.unix_timestamp("ts") - F.unix_timestamp(F.lag("ts").over(by_session))).alias("gap")
    )
    stats = inside.agg(F.max("gap"), F.min("gap"), F.expr("percentile(gap, 0.5)")).first()
    assert stats[0] < 30 * 60 and stats[1] >= 1 and stats[2] < 180
    sessions = logs.groupBy("user_id", "user_session").agg(F.min("ts").alias("st"), F.max("ts").alias("en"))
    by_user = Window.partitionBy("user_id").orderBy("st")
    between = sessions.select(
        ((F.unix_timestamp("st") - F.unix_timestamp(F.lag("en").over(by_user))) / 3600).alias("gap_h")
    ).where("gap_h IS NOT NULL")
    b = between.agg(F.min("gap_h"), F.expr("percentile(gap_h, 0.5)"), F.count(F.lit(1))).first()
    assert b[0] > 0.5 and b[1] > 3 and b[2] > 200


def test_churned_users_stop_and_new_users_start_at_signup(clean: tuple) -> None:
    p, users, _, logs = clean
    per_user = logs.groupBy(F.col("user_id").cast("long").alias("user_id")).agg(
        F.to_date(F.min("ts")).alias("first"), F.to_date(F.max("ts")).alias("last")
    )
    j = per_user.join(users, "user_id")
    assert j.where("last >= churn_date").count() == 0
    assert j.where("first < signup_date").count() == 0
    end = p.start_date + dt.timedelta(days=p.days)
    churned = users.where(F.col("churn_date") < F.lit(end)).count()
    assert 0.05 * p.users < churned < 0.6 * p.users
    assert (
        j.where(F.col("is_new") & (F.col("first") > F.lit(p.start_date + dt.timedelta(days=3)))).count() > 20
    )


def test_truth_schemas_and_catalog(clean: tuple) -> None:
    p, users, items, logs = clean
    assert [f.name for f in users.schema] == [f.name for f in USERS]
    assert [f.name for f in items.schema] == [f.name for f in ITEMS]
    assert items.select("product_id").distinct().count() == p.items
    assert users.where("price_elasticity >= 0").count() == 0
    for r in items.limit(50).collect():
        assert r.brand.lower() in r.title.lower() and r.category_code.count(".") >= 1
    views = logs.where("event_type = 'view'").groupBy("pid").count().orderBy(F.desc("count")).collect()
    top = sum(r["count"] for r in views[: p.items // 10]) / sum(r["count"] for r in views)
    ratio = views[0]["count"] / views[len(views) // 2]["count"]
    assert top > 0.25 and ratio > 8, f"top 10% of items get {top:.0%} of views, top/median {ratio:.1f}"


@pytest.mark.integration
def test_promotions_lower_prices_and_raise_conversion_of_elastic_users(big: tuple) -> None:
    p, users, items, logs = big
    start = F.lit(p.start_date)
    ev = logs.join(items.withColumnRenamed("product_id", "pid"), "pid")
    ev = ev.withColumn("promo", on_promo(F.datediff(F.to_date("ts"), start))).withColumn(
        "rel", F.col("price_d") / F.col("base_price")
    )
    rel = ev.groupBy("promo").agg(F.max("rel").alias("max"), F.avg("rel").alias("avg")).collect()
    by = {r.promo: r for r in rel}
    assert by[True].max < 0.9 * 1.03 + 0.01 and by[False].avg > 0.98 and by[True].avg < 0.85
    elastic = users.where(F.col("price_elasticity") < p.elasticity_median).select(
        F.col("user_id").cast("string").alias("user_id")
    )
    pairs = (
        ev.join(elastic, "user_id")
        .groupBy("user_session", "pid")
        .agg(
            F.max(F.col("event_type") == "purchase").alias("bought"),
            F.first(F.when(F.col("event_type") == "view", F.col("promo")), ignorenulls=True).alias("promo"),
        )
    )
    conv = {
        r.promo: r.rate
        for r in pairs.groupBy("promo").agg(F.avg(F.col("bought").cast("double")).alias("rate")).collect()
    }
    assert conv[True] > 1.25 * conv[False], conv


@pytest.mark.integration
def test_an_item_left_in_the_cart_raises_the_next_sessions_purchase_rate(big: tuple) -> None:
    _, _, _, logs = big
    ids = lambda t: F.collect_set(F.when(F.col("event_type") == t, F.col("pid")))  # noqa: E731
    left = F.array_except(ids("cart"), F.array_union(ids("remove_from_cart"), ids("purchase")))
    s = logs.groupBy("user_id", "user_session").agg(
        F.min("ts").alias("st"),
        (F.size(left) > 0).alias("carted"),
        F.max(F.col("event_type") == "purchase").alias("bought"),
    )
    # lead() is an offset function: Spark fixes its frame, so none is named here.
    nxt = s.withColumn("next_bought", F.lead("bought").over(Window.partitionBy("user_id").orderBy("st")))
    rates = (
        nxt.where("next_bought IS NOT NULL AND NOT bought")
        .groupBy("carted")
        .agg(F.avg(F.col("next_bought").cast("double")).alias("rate"))
        .collect()
    )
    by = {r.carted: r.rate for r in rates}
    assert by[True] > 1.3 * by[False], by


def test_spacing_scale_stretches_the_hours_between_a_missions_sessions(spark: SparkSession) -> None:
    p, users, _, _ = make_shop(spark, users=40, new_user_share=1.0)
    key = ["user_id", "mission"]
    one = users.transform(user_missions, p=p).select(*key, "spacing_s")
    three = users.transform(user_missions, p=replace(p, mission_spacing_scale=3.0))
    pairs = one.join(three.select(*key, F.col("spacing_s").alias("s3")), key).collect()
    assert pairs, "new users keep their missions' keys when only the spacing changes"
    assert all(abs(r.s3 - 3 * r.spacing_s) <= 3 for r in pairs)
    assert min(r.s3 for r in pairs) >= 3 * 2 * 3600  # the shortest spacing, 2 h, tripled


@pytest.mark.integration
def test_mission_intent_shows_in_earlier_sessions_and_raises_the_purchase(spark: SparkSession) -> None:
    p, users, items, _ = make_shop(spark, mission_intent=2.0)
    plans = (
        users.transform(user_missions, p=p)
        .transform(mission_sessions, p=p)
        .transform(purchase_decisions, items=items, p=p)
        .transform(session_plans, p=p)
    )
    target_seen = F.exists("events", lambda e: e["item"] == F.col("target")).cast("double")
    by = {
        r.high: r
        for r in plans.groupBy((F.col("intent") > 0).alias("high"))
        .agg(
            F.avg(F.when(F.col("is_final"), F.col("buy").cast("double"))).alias("buy"),
            F.avg(F.when(~F.col("is_final"), target_seen)).alias("seen"),
        )
        .collect()
    }
    assert by[True].buy > by[False].buy + 0.25, by
    assert by[True].seen > by[False].seen + 0.15, by
    without = users.transform(user_missions, p=replace(p, mission_intent=0.0))
    assert without.where(F.col("intent") != 0).count() == 0


@pytest.mark.integration
def test_late_rows_land_the_next_day_and_dirt_is_within_tolerance(spark: SparkSession) -> None:
    _, _, _, logs = make_shop(spark, users=1000, dirty_fraction=0.1, late_fraction=0.1)
    rows = parsed(logs).cache()
    n = rows.count()
    lag = rows.where("ts IS NOT NULL").select(F.datediff(F.to_date("date"), F.to_date("ts")).alias("d"))
    late = lag.agg(F.avg((F.col("d") == 1).cast("double")), F.min("d"), F.max("d")).first()
    assert 0.08 < late[0] < 0.12 and late[1] == 0 and late[2] == 1
    duplicates = n - rows.distinct().count()
    corrupt = {
        "price": rows.where("price_d IS NULL").count(),
        "time": rows.where("ts IS NULL").count(),
        "type": rows.where("event_type = 'click'").count(),
        "user": rows.where("user_id IS NULL").count(),
    }
    # Half of dirty_fraction of the clean rows each: 0.05 / 1.05 = 4.8% of the rows written.
    assert 0.038 * n < duplicates < 0.058 * n
    assert 0.038 * n < sum(corrupt.values()) < 0.058 * n and all(v > 0.005 * n for v in corrupt.values()), (
        corrupt
    )


@pytest.mark.integration
def test_job_writes_landing_folders_and_truth(
    spark: SparkSession, cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["--run-date", "2024-03-01", "--set", f"paths.root={tmp_path}"]
    sets = ["synthetic.users=150", "synthetic.days=5", "synthetic.late_fraction=0.2"]
    assert job_main("generate_shop")(argv + [a for s in sets for a in ("--set", s)]) == 0
    out = tmp_path / "landing" / "synthetic"
    folders = sorted(d.name for d in out.iterdir() if d.is_dir())
    assert folders == [f"date=2024-01-{d:02d}" for d in range(1, 7)]
    first = next((out / "date=2024-01-03").glob("*.csv"))
    assert first.read_text().splitlines()[0] == ",".join(REES46_COLUMNS)
    raw = spark.read.option("header", "true").csv(str(out / "date=2024-01-06"))
    assert raw.count() > 0 and raw.where("event_time NOT LIKE '2024-01-05%'").count() == 0
    truth = tmp_path / "synthetic_truth"
    assert tables.read(spark, str(truth / "users")).count() == 150
    items = tables.read(spark, str(truth / "items"))
    assert [(f.name, f.dataType) for f in items.schema] == [(f.name, f.dataType) for f in ITEMS]
