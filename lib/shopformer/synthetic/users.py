"""The synthetic shop's users: traits -> shopping missions -> sessions -> purchase decisions -> event logs.

Spark-native and seeded: every draw is a hash of (seed, salt, keys) (``synthetic.catalog.uniform``), so the
same seed gives the same rows on any cluster and partitioning, and size scales with ``users x days`` alone.
Every signal and parameter is documented in docs/synthetic_shop.md; that doc is the contract, so the shop
is never tuned to flatter a model.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, DateType, DoubleType, LongType, StringType, StructField, StructType

from shopformer.schemas import names, require_columns
from shopformer.synthetic.catalog import PRODUCT_ID_BASE, normal, price_on_day, uniform
from shopformer.synthetic.events import (
    REES46_COLUMNS,
    add_dirt,
    drop_overlaps,
    plan_events,
    session_plans,
    to_rees46,
)
from shopformer.synthetic.params import DAY_S, ShopParams

__all__ = [
    "REES46_COLUMNS",
    "USERS",
    "ShopParams",
    "mission_sessions",
    "purchase_decisions",
    "shop_logs",
    "user_missions",
    "user_traits",
]
USER_ID_BASE = 512_000_000
FADE_DAYS = 14.0  # activity fades linearly over the last 14 days before a user's churn date
ACTIVITY_FLOOR = 0.3  # long-tenured users keep 30% of their initial mission rate
MAX_SESSIONS = 5
MISSION_COMMITMENT = 0.5  # logit P(buy) per mission session beyond two
WARMUP_DAYS = 10  # longer than the longest mission (5 sessions x <= 72 h), per unit of spacing scale

USERS = StructType(
    [
        StructField("user_id", LongType(), False),
        StructField("signup_date", DateType(), False),  # before start_date for users already active then
        StructField("is_new", BooleanType(), False),  # arrived during the generated period
        StructField("churn_date", DateType(), False),  # no events on or after it (may be after the period)
        StructField("engagement", DoubleType(), False),  # latent z: more missions and a longer lifetime
        StructField("missions_per_day", DoubleType(), False),
        StructField("activity_decay_days", DoubleType(), False),
        StructField("purchase_intercept", DoubleType(), False),  # logit P(buy) at relative price 1
        StructField("price_elasticity", DoubleType(), False),  # beta: logit P(buy) += beta x ln(rel price)
        StructField("favorite_category_1", StringType(), False),
        StructField("favorite_category_2", StringType(), False),
    ]
)


def user_traits(ids: DataFrame, *, p: ShopParams) -> DataFrame:
    """Latent traits of every user (schema ``USERS``) from ``spark.range(users)``: the ground truth."""
    require_columns(ids, ["id"], "user_traits")
    i, s, layout = F.col("id"), p.seed, p.layout()
    z = normal(s, 31, i)
    is_new = uniform(s, 32, i) < p.new_user_share
    signup_day = F.when(is_new, F.floor(uniform(s, 33, i) * p.days)).otherwise(
        -30 - F.floor(uniform(s, 33, i) * 700)
    )
    lifetime = -F.log(uniform(s, 34, i)) * p.mean_lifetime_days * F.exp(0.5 * z)
    churn_day = F.greatest(signup_day, F.lit(0)) + F.ceil(lifetime)
    logit = math.log(p.purchase_rate / (1 - p.purchase_rate))
    return ids.select(
        (F.lit(USER_ID_BASE) + i).alias("user_id"),
        F.date_add(F.lit(p.start_date), signup_day.cast("int")).alias("signup_date"),
        is_new.alias("is_new"),
        F.date_add(F.lit(p.start_date), churn_day.cast("int")).alias("churn_date"),
        z.alias("engagement"),
        (p.missions_per_day * F.exp(0.5 * z + 0.3 * normal(s, 35, i))).alias("missions_per_day"),
        (p.activity_decay_days * F.exp(0.4 * normal(s, 36, i))).alias("activity_decay_days"),
        (logit + 0.5 * normal(s, 38, i)).alias("purchase_intercept"),
        (p.elasticity_median * F.exp(0.5 * normal(s, 37, i))).alias("price_elasticity"),
        F.element_at(layout.codes, layout.pick_category(uniform(s, 39, i)) + 1).alias("favorite_category_1"),
        F.element_at(layout.codes, layout.pick_category(uniform(s, 40, i)) + 1).alias("favorite_category_2"),
    )


def warmup_days(p: ShopParams) -> int:
    """Days before the period in which missions of users already active may start (WARMUP_DAYS x scale)."""
    return math.ceil(WARMUP_DAYS * p.mission_spacing_scale)


def _hour_of_day_s(seed: int, *keys: Column) -> Column:
    """Seconds into the day: 55% evening peak (N(20h, 2.5h)), the rest uniform over 07-23h."""
    evening = F.pmod(20 + 2.5 * normal(seed, 52, *keys), F.lit(24.0))
    hours = F.when(uniform(seed, 53, *keys) < 0.55, evening).otherwise(7 + 16 * uniform(seed, 54, *keys))
    return F.floor(hours * 3600).cast("long")


def user_missions(users: DataFrame, *, p: ShopParams) -> DataFrame:
    """Shopping missions: candidate start times over the user's active span, thinned by activity decay
    with tenure and by the fade before churn; each targets a (mostly favourite) category and one item."""
    require_columns(users, names(USERS), "user_missions")
    s, layout, u = p.seed, p.layout(), F.col("user_id")
    signup, churn = (
        F.datediff("signup_date", F.lit(p.start_date)),
        F.datediff("churn_date", F.lit(p.start_date)),
    )
    # Users already active at the start have missions in flight: start candidates WARMUP_DAYS early and
    # drop the sessions before the period (mission_sessions), so day 1 looks like any other day.
    first = F.when(F.col("is_new"), signup).otherwise(F.lit(-warmup_days(p)))
    span = F.greatest(F.least(churn, F.lit(p.days)) - first, F.lit(0)).cast("double")
    n = F.floor(F.col("missions_per_day") * span + uniform(s, 41, u)).cast("int")
    k = F.col("mission")
    first_new = F.col("is_new") & (k == 1)  # a new user arrives with a mission on the signup day
    t = first + uniform(s, 42, u, k) * F.when(first_new, F.least(span, F.lit(1.0))).otherwise(span)
    activity = ACTIVITY_FLOOR + (1 - ACTIVITY_FLOOR) * F.exp(-(t - signup) / F.col("activity_decay_days"))
    fade = F.least(F.lit(1.0), F.greatest(F.lit(0.15), (churn - t) / FADE_DAYS))
    fav_1, fav_2 = (
        F.array_position(layout.codes, F.col(c)).cast("int") - 1
        for c in ("favorite_category_1", "favorite_category_2")
    )  # each favourite's index in the taxonomy
    u_cat = uniform(s, 44, u, k)
    cat = F.when(u_cat < 0.45, fav_1).when(u_cat < 0.7, fav_2)
    cat = cat.otherwise(layout.pick_category(uniform(s, 45, u, k)))
    n_sessions = F.least(F.lit(MAX_SESSIONS), 1 + F.floor(5 * F.pow(uniform(s, 46, u, k), 2))).cast("int")
    spacing_h = p.mission_spacing_scale * (2 + 46 * F.pow(uniform(s, 47, u, k), 2))
    return (
        users.withColumn("mission", F.explode(F.when(n > 0, F.sequence(F.lit(1), n))))
        .where(first_new | (uniform(s, 43, u, k) < activity * fade))
        .withColumn("category", cat)
        .select(
            "user_id",
            "mission",
            "category",
            layout.pick_item(F.col("category"), uniform(s, 48, u, k)).alias("target"),
            n_sessions.alias("n_sessions"),
            F.floor(spacing_h * 3600).cast("long").alias("spacing_s"),
            (F.floor(t).cast("long") * DAY_S + _hour_of_day_s(s, u, k)).alias("start_s"),
            (churn.cast("long") * DAY_S).alias("churn_s"),
            "purchase_intercept",
            "price_elasticity",
            (p.mission_intent * normal(s, 49, u, k)).alias("intent"),  # logit P(buy) += intent
        )
    )


def mission_sessions(missions: DataFrame, *, p: ShopParams) -> DataFrame:
    """One row per session of a mission, spaced hours to days apart; the funnel deepens with ``stage``."""
    require_columns(
        missions, ["user_id", "mission", "n_sessions", "spacing_s", "start_s", "churn_s"], "sessions"
    )
    s, u, k, j = p.seed, F.col("user_id"), F.col("mission"), F.col("session")
    jitter = F.floor(uniform(s, 51, u, k, j) * 0.5 * F.col("spacing_s")).cast("long")
    start = F.col("start_s") + j * F.col("spacing_s") + jitter
    return (
        missions.withColumn("session", F.explode(F.sequence(F.lit(0), F.col("n_sessions") - 1)))
        .withColumn("session_start_s", start)
        .where(F.col("session_start_s").between(F.lit(0), F.least(F.col("churn_s"), F.lit(p.end_s)) - 1))
        .select(
            *missions.columns,
            "session",
            "session_start_s",
            ((j + 1) / F.col("n_sessions")).alias("stage"),
            (j == F.col("n_sessions") - 1).alias("is_final"),
        )
    )


def purchase_decisions(sessions: DataFrame, *, items: DataFrame, p: ShopParams) -> DataFrame:
    """Final sessions buy the target with P = logistic(a_user + beta_user x ln(price / base price)
    + 0.5 x (n_sessions - 2) + intent): intent builds over a mission's sessions."""
    require_columns(
        sessions,
        ["target", "session_start_s", "is_final", "n_sessions", "purchase_intercept", "intent"],
        "decisions",
    )
    cols = [
        "product_id",
        "base_price",
        "promo_period_days",
        "promo_length_days",
        "promo_offset_days",
        "promo_depth",
    ]
    item = F.broadcast(items.select(*cols))
    day = F.floor(F.col("session_start_s") / DAY_S)
    rel = price_on_day(p.seed, day) / F.col("base_price")
    commitment = MISSION_COMMITMENT * (F.col("n_sessions") - 2)  # longer research, likelier purchase
    logit = F.col("purchase_intercept") + F.col("price_elasticity") * F.log(rel) + commitment
    logit = logit + F.col("intent")  # the mission's own intent (synthetic.mission_intent; 0 = none)
    draw = uniform(p.seed, 55, F.col("user_id"), F.col("mission"))
    return sessions.join(item, F.col("target") + PRODUCT_ID_BASE == F.col("product_id")).select(
        *sessions.columns,
        rel.alias("relative_price"),
        (F.col("is_final") & (draw < 1 / (1 + F.exp(-logit)))).alias("buy"),
    )


def shop_logs(users: DataFrame, *, items: DataFrame, p: ShopParams) -> DataFrame:
    """Raw landing rows (REES46 columns + landing ``date``) from the truth tables, whole pipeline."""
    return (
        users.transform(user_missions, p=p)
        .transform(mission_sessions, p=p)
        .transform(purchase_decisions, items=items, p=p)
        .transform(session_plans, p=p)
        .transform(drop_overlaps)
        .transform(plan_events, items=items, p=p)
        .transform(to_rees46, p=p)
        .transform(add_dirt, p=p)
    )
