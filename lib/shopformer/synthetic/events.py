"""Event-level half of the synthetic shop: each session's ordered events with second-level gaps, overlap
removal, REES46 text columns, landing dates and realistic dirt (see docs/synthetic_shop.md)."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shopformer.schemas import require_columns
from shopformer.synthetic.catalog import PRODUCT_ID_BASE, price_on_day, uniform
from shopformer.synthetic.params import DAY_S, ShopParams

REES46_COLUMNS = [
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
]
MIN_SESSION_GAP_S = 31 * 60  # a session starts >= 31 min after every earlier session of the user ends


def _event(kind: str, item: Column, keep: Column) -> Column:
    return F.struct(F.lit(kind).alias("event_type"), item.cast("long").alias("item"), keep.alias("keep"))


def _gap_s(seed: int, *keys: Column) -> Column:
    """Seconds between two events of a session: log-logistic (median 40 s, heavy tail), clipped to 2..1200."""
    u = uniform(seed, 60, *keys)
    return F.least(F.lit(1200), F.greatest(F.lit(2), F.round(40 * F.pow(u / (1 - u), 1 / 1.5)))).cast("long")


def _shown(prob: Column, p: ShopParams) -> Column:
    """``prob`` shifted by the mission's intent on the logit scale: how a non-final session shows intent
    (the target's view and cart); unchanged when ``synthetic.mission_intent`` is 0 (the shop before it)."""
    if p.mission_intent == 0:
        return prob
    lifted = prob * F.exp(F.col("intent"))  # logistic(logit(prob) + intent), defined at prob = 1 too
    return lifted / (lifted + 1 - prob)


def session_plans(sessions: DataFrame, *, p: ShopParams) -> DataFrame:
    """The ordered events of each session: off-mission browsing, views of alternatives in the mission's
    category, sometimes cart + remove of an alternative, then the target's view / cart / remove / purchase."""
    require_columns(
        sessions, ["stage", "is_final", "buy", "category", "target", "session_start_s", "intent"], "plans"
    )
    s, layout = p.seed, p.layout()
    key = [F.col("user_id"), F.col("mission"), F.col("session")]
    stage, final, buy = F.col("stage"), F.col("is_final"), F.col("buy")
    n_browse = F.floor(3 * uniform(s, 61, *key))
    n_alt = F.least(F.lit(5), 1 + F.floor(uniform(s, 62, *key) * 5 * (1.25 - stage)))
    alt_cart = uniform(s, 63, *key) < 0.10 + 0.20 * stage
    view_t = final | (uniform(s, 64, *key) < _shown(stage, p))
    u_cart = uniform(s, 65, *key)
    cart_t = buy | (final & (u_cart < 0.35)) | (~final & view_t & (u_cart < _shown(0.5 * stage, p)))
    remove_t = final & ~buy & cart_t & (uniform(s, 66, *key) < 0.6)
    alt = [layout.pick_item(F.col("category"), uniform(s, 70, *key, F.lit(j))) for j in range(5)]
    browse = [
        layout.pick_item(layout.pick_category(uniform(s, 71, *key, F.lit(j))), uniform(s, 72, *key, F.lit(j)))
        for j in range(2)
    ]
    template = F.array(
        *[_event("view", browse[j], n_browse > j) for j in range(2)],
        *[_event("view", alt[j], n_alt > j) for j in range(5)],
        _event("cart", alt[0], alt_cart),
        _event("remove_from_cart", alt[0], alt_cart),
        _event("view", F.col("target"), view_t),
        _event("cart", F.col("target"), cart_t),
        _event("remove_from_cart", F.col("target"), remove_t),
        _event("purchase", F.col("target"), buy),
    )
    return sessions.withColumn("events", F.filter(template, lambda e: e["keep"])).select(
        *sessions.columns, _with_offsets(F.col("events"), s, key).alias("events")
    )


def _with_offsets(events: Column, seed: int, key: list[Column]) -> Column:
    """Attach each event's offset from the session start: the running sum of the gaps before it."""

    def gap(j: Column) -> Column:  # the first event starts the session
        return F.when(j == 0, F.lit(0).cast("long")).otherwise(_gap_s(seed, *key, j))

    return F.transform(
        events,
        lambda e, i: F.struct(
            e["event_type"].alias("event_type"),
            e["item"].alias("item"),
            F.aggregate(F.sequence(F.lit(0), i), F.lit(0).cast("long"), lambda acc, j: acc + gap(j)).alias(
                "offset_s"
            ),
        ),
    )


def drop_overlaps(plans: DataFrame) -> DataFrame:
    """Drop a session that would start less than 31 min after an earlier session of the user ends (missions
    may overlap in time); a kept session is then a separate session for a 30-min sessionizer."""
    require_columns(plans, ["user_id", "mission", "session", "session_start_s", "events"], "drop_overlaps")
    end = F.col("session_start_s") + F.element_at(F.col("events"), -1)["offset_s"]
    before = (
        Window.partitionBy("user_id")
        .orderBy("session_start_s", "mission", "session")
        .rowsBetween(Window.unboundedPreceding, -1)
    )
    prev_end = F.col("_prev_end")
    return (
        plans.withColumn("session_end_s", end)
        .withColumn("_prev_end", F.max("session_end_s").over(before))
        .where(prev_end.isNull() | (F.col("session_start_s") >= prev_end + MIN_SESSION_GAP_S))
        .select(*plans.columns)
    )


def _session_uuid(seed: int) -> Column:
    h = F.md5(F.concat_ws("/", F.lit(str(seed)), "user_id", "mission", "session"))
    return F.concat_ws("-", *[F.substring(h, a, n) for a, n in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))])


def plan_events(plans: DataFrame, *, items: DataFrame, p: ShopParams) -> DataFrame:
    """One row per event with the item's attributes and its price on the event's day (typed columns,
    ``event_s`` = seconds since the period start, ``event_uid`` = a stable row key for later draws)."""
    require_columns(
        plans, ["user_id", "mission", "session", "session_start_s", "churn_s", "events"], "plan_events"
    )
    ev = plans.select(
        "user_id",
        "churn_s",
        _session_uuid(p.seed).alias("user_session"),
        F.xxhash64(F.lit(p.seed), "user_id", "mission", "session").alias("session_key"),
        "session_start_s",
        F.posexplode("events").alias("pos", "e"),
    )
    event_s = F.col("session_start_s") + F.col("e.offset_s")
    day = F.floor(F.col("event_s") / DAY_S)
    return (
        ev.withColumn("event_s", event_s)
        .where(F.col("event_s") < F.least(F.col("churn_s"), F.lit(p.end_s)))
        .join(F.broadcast(items), F.col("e.item") + PRODUCT_ID_BASE == F.col("product_id"))
        .select(
            "event_s",
            F.col("e.event_type").alias("event_type"),
            "product_id",
            "category_id",
            F.when(F.col("category_code_logged"), F.col("category_code")).alias("category_code"),
            F.when(F.col("brand_logged"), F.col("brand")).alias("brand"),
            price_on_day(p.seed, day).alias("price"),
            "user_id",
            "user_session",
            F.xxhash64("session_key", "pos").alias("event_uid"),
        )
    )


def to_rees46(events: DataFrame, *, p: ShopParams) -> DataFrame:
    """REES46 text columns (all strings, as a raw export is read) + ``event_date`` + ``event_uid``."""
    require_columns(events, ["event_s", "price", "event_uid"], "to_rees46")
    ts = F.timestamp_seconds(F.lit(p.start_epoch_s) + F.col("event_s"))
    return events.select(
        F.date_format(ts, "yyyy-MM-dd HH:mm:ss 'UTC'").alias("event_time"),
        "event_type",
        F.col("product_id").cast("string").alias("product_id"),
        F.col("category_id").cast("string").alias("category_id"),
        "category_code",
        "brand",
        F.format_string("%.2f", F.col("price")).alias("price"),
        F.col("user_id").cast("string").alias("user_id"),
        "user_session",
        F.to_date(ts).alias("event_date"),
        "event_uid",
    )


def add_dirt(raw: DataFrame, *, p: ShopParams) -> DataFrame:
    """Landing ``date`` (a ``late_fraction`` share lands the day after the event) and dirt: half of
    ``dirty_fraction`` rows are exact duplicates, half have one field corrupted (4 kinds, equally often)."""
    require_columns(raw, [*REES46_COLUMNS, "event_date", "event_uid"], "add_dirt")
    s, uid, d = p.seed, F.col("event_uid"), p.dirty_fraction
    u = uniform(s, 81, uid)
    kind = F.floor(uniform(s, 82, uid) * 4)
    corrupt = (u >= d / 2) & (u < d)
    late = uniform(s, 83, uid) < p.late_fraction
    landing = F.when(late, F.date_add("event_date", 1)).otherwise(F.col("event_date"))

    def field(name: str, n: int, bad: Column) -> Column:
        return F.when(corrupt & (kind == n), bad).otherwise(F.col(name)).alias(name)

    dirty = {
        "price": field("price", 0, F.lit("N/A")),
        "event_time": field("event_time", 1, F.lit("2024-13-45 99:99:99 UTC")),
        "event_type": field("event_type", 2, F.lit("click")),
        "user_id": field("user_id", 3, F.lit(None).cast("string")),
    }
    copies = F.sequence(F.lit(1), F.when(u < d / 2, 2).otherwise(1))
    return (
        raw.withColumn("_copy", F.explode(copies))
        .select(
            *[dirty.get(c, F.col(c)) for c in REES46_COLUMNS],
            F.date_format(landing, "yyyy-MM-dd").alias("date"),
            F.pmod(uid, F.lit(p.files_per_day)).alias("_file"),
        )
        .repartition(p.days * p.files_per_day, "date", "_file")
        .sortWithinPartitions("date", "event_time")
        .select(*REES46_COLUMNS, "date")
    )
