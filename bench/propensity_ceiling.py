"""How well can *anything* rank users for propensity_7d and churn in the synthetic shop? (not a test)

Generates a small shop with the shop's own Spark code (``synthetic.users``: traits -> missions -> sessions ->
purchase decisions -> clean events, before text formatting and dirt), takes per task the newest weekly as-of
dates T whose label window ends inside the period (a holdout), and builds the labels of docs/snapshots.md
from the clean events: propensity = a purchase in [T, T+7d) for users with an event before T; churn = no
event in [T, T+30d) for users with an event in [T-90d, T). It then scores the same rows several ways:

- **oracle** (closed form, near-Bayes): knows every user's true traits (mission rate, activity decay,
  engagement -> mean lifetime, a, beta) and every mission *started* before T with its plan (number of
  sessions, session times, target and its price on the final day), but not the churn date: it takes the
  posterior of the churn day given the prior (exponential lifetime from the first active day) and the
  mission starts before T (thinned by the 14-day fade before churn), and then P(label) in closed form:
  in-flight missions' final sessions buy with logistic(a + beta ln rel + 0.5 (n - 2)); new missions arrive
  at rate x activity x fade and are integrated over a fixed sample of mission shapes. Closed form, not a
  Monte-Carlo re-run of the generator, because every draw in the generator is a hash of (seed, salt, keys):
  the shop's code cannot re-draw a user's future with fresh randomness without changing the generator.
  Approximations (Poisson in place of the generator's fixed candidate count; overlap drops and event
  offsets ignored) can only lower it, so it is a lower bound of the true ceiling, and a close one.
- **clairvoyant**: the same, also told the true churn date (not knowable at T: an upper bound).
- **oracle without the missions in flight**: the oracle told nothing about missions started before T beyond
  their start days (their remaining sessions are ignored): what the traits and churn posterior alone give;
  the gap to the oracle is what the shop's sequence signal (intent building over a mission) is worth.
- baselines from the same events: recency (days since the last event), purchase recency, frequency
  (events in [T-30d, T)).

ROC-AUC with 2 SE (Hanley-McNeil; rows of one user at several T are not independent, so it is a bit
optimistic), and each score's AUC minus recency's with a paired 2 SE (bootstrap over users).

    .venv/bin/python bench/propensity_ceiling.py --users 2000 --days 120 --dates 4
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

from shopformer.config import Config, load_config
from shopformer.spark import build_spark
from shopformer.synthetic.catalog import item_catalog
from shopformer.synthetic.events import drop_overlaps, plan_events, session_plans
from shopformer.synthetic.params import DAY_S, ShopParams
from shopformer.synthetic.users import (
    ACTIVITY_FLOOR,
    FADE_DAYS,
    MISSION_COMMITMENT,
    mission_sessions,
    purchase_decisions,
    user_missions,
    user_traits,
    warmup_days,
)

log = logging.getLogger("bench")
PROMO_ON_SHARE = 4.5 / 24.5  # mean promotion length / mean period (2-7 of 14-35 days)
PROP_DAYS, CHURN_DAYS, CHURN_LOOKBACK = 7, 30, 90


def shop_frames(cfg: Config, p: ShopParams) -> dict[str, pd.DataFrame]:
    """Truth, missions, the uncensored session plan and the clean events, from the shop's own code."""
    spark = build_spark(cfg, "propensity_ceiling")
    truth = spark.range(p.users).transform(user_traits, p=p).cache()
    items = spark.range(p.items).transform(
        item_catalog, seed=p.seed, layout=p.layout(), promo_share=p.promo_share
    )
    missions = truth.transform(user_missions, p=p).cache()
    # Every mission's plan, uncut by churn or the period's end: what was decided when it started.
    far = dataclasses.replace(p, days=p.days + 400)
    plan = (
        missions.withColumn("churn_s", F.lit(far.end_s))
        .transform(mission_sessions, p=far)
        .transform(purchase_decisions, items=items, p=far)
    )
    events = (
        missions.transform(mission_sessions, p=p)
        .transform(purchase_decisions, items=items, p=p)
        .transform(session_plans, p=p)
        .transform(drop_overlaps)
        .transform(plan_events, items=items, p=p)
    )
    start = F.lit(p.start_date)
    out: dict[str, DataFrame] = {
        "truth": truth.select(
            "user_id",
            F.datediff("signup_date", start).alias("signup"),
            "is_new",
            F.datediff("churn_date", start).alias("churn"),
            "engagement",
            "missions_per_day",
            "activity_decay_days",
            "purchase_intercept",
            "price_elasticity",
        ),
        "missions": missions.select("user_id", "mission", "start_s"),
        "plan": plan.select(
            "user_id",
            "mission",
            "start_s",
            "session_start_s",
            "is_final",
            "n_sessions",
            "relative_price",
            "intent",
            "buy",
        ),
        "events": events.select("user_id", "event_s", "event_type"),
    }
    frames = {k: v.toPandas() for k, v in out.items()}
    log.info("shop: %s", {k: len(v) for k, v in frames.items()})
    return frames


def mission_shapes(k: int, p: ShopParams) -> dict[str, np.ndarray]:
    """A fixed sample of new-mission shapes: sessions, final-session offset from the start day, rel. price,
    the mission's intent."""
    rng = np.random.default_rng(p.seed)
    n = np.minimum(5, 1 + np.floor(5 * rng.random(k) ** 2))
    spacing = np.floor(p.mission_spacing_scale * (2 + 46 * rng.random(k) ** 2) * 3600)
    evening = np.mod(20 + 2.5 * rng.standard_normal(k), 24)
    hour = np.where(rng.random(k) < 0.55, evening, 7 + 16 * rng.random(k))
    final = np.floor(hour * 3600) + (n - 1) * spacing + np.floor(rng.random(k) * 0.5 * spacing)
    promo = rng.random(k) < p.promo_share * PROMO_ON_SHARE
    rel = np.where(promo, 1 - rng.uniform(0.1, 0.4, k), 1.0) * rng.uniform(0.97, 1.03, k)
    return {"n": n, "final_s": final, "rel": rel, "intent": p.mission_intent * rng.standard_normal(k)}


def logistic(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


class Oracle:
    """Closed-form P(purchase in [T, T+7d)) and P(no event in [T, T+30d)) per user from the truth."""

    def __init__(self, truth: pd.DataFrame, p: ShopParams, shapes: dict[str, np.ndarray]):
        self.t = truth.reset_index(drop=True)
        self.warmup = warmup_days(p)
        self.first = np.where(self.t["is_new"], self.t["signup"], -self.warmup).astype(float)
        self.first_active = np.maximum(self.t["signup"].to_numpy(), 0)
        self.life = p.mean_lifetime_days * np.exp(0.5 * self.t["engagement"].to_numpy())
        self.mid = np.arange(-self.warmup, p.days + 60) + 0.5  # day midpoints
        decay = self.t["activity_decay_days"].to_numpy()[:, None]
        act = ACTIVITY_FLOOR + (1 - ACTIVITY_FLOOR) * np.exp(
            -(self.mid[None] - self.t["signup"].to_numpy()[:, None]) / decay
        )
        self.rate = (
            self.t["missions_per_day"].to_numpy()[:, None] * act * (self.mid[None] >= self.first[:, None])
        )
        a, b = (
            self.t["purchase_intercept"].to_numpy()[:, None],
            self.t["price_elasticity"].to_numpy()[:, None],
        )
        self.pbuy = logistic(
            a
            + b * np.log(shapes["rel"])[None]
            + MISSION_COMMITMENT * (shapes["n"][None] - 2)
            + shapes["intent"][None]
        )
        self.final_s = shapes["final_s"]

    def lam(self, c: int) -> np.ndarray:
        """Mission intensity per user and day (day midpoints) if the churn day is ``c``."""
        fade = np.clip((c - self.mid) / FADE_DAYS, 0.15, 1.0) * (self.mid < c)
        return self.rate * fade[None]

    def grid(self, as_of: int) -> np.ndarray:
        """Churn-day candidates; the last, T + 45, stands for every later day (they all act alike)."""
        return np.arange(1, as_of + CHURN_DAYS + int(FADE_DAYS) + 2)

    def posterior(self, as_of: int, starts: np.ndarray) -> np.ndarray:
        """P(churn day = c | traits, mission starts before T) over ``grid(T)``, one row per user;
        ``starts`` is (users, missions) of start-day midpoints, NaN-padded (a new user's first mission,
        which is always kept, is left out)."""
        grid = self.grid(as_of)
        k = grid[None] - self.first_active[:, None]
        life = self.life[:, None]
        prior = np.where(k >= 1, np.exp(-(k - 1) / life) - np.exp(-k / life), 0)
        prior[:, -1] = np.where(k[:, -1] >= 1, np.exp(-(k[:, -1] - 1) / self.life), 1)
        logl = np.log(np.maximum(prior, 1e-300))
        before = self.mid < as_of
        latest = np.nanmax(np.where(np.isnan(starts), -np.inf, starts), 1)
        for j, c in enumerate(grid):
            fade = np.clip((c - starts) / FADE_DAYS, 0.15, 1.0)
            logl[:, j] += np.nansum(np.log(fade), 1) - (self.lam(int(c)) * before[None]).sum(1)
            logl[latest >= c, j] = -np.inf
        logl -= logl.max(1, keepdims=True)
        post = np.exp(logl)
        return post / post.sum(1, keepdims=True)

    def probs(self, as_of: int, post: np.ndarray, inflight: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(P(purchase), P(churn)) per user given a churn-day distribution ``post``."""
        n_users = len(self.t)
        first_next = np.full(n_users, np.inf)  # earliest planned in-flight session at or after as_of (s)
        grp = inflight.groupby("u")["session_start_s"].min()
        first_next[grp.index.to_numpy()] = grp.to_numpy()
        fin = inflight[inflight["is_final"] & (inflight["session_start_s"] < (as_of + PROP_DAYS) * DAY_S)]
        p_no_buy, p_churn = np.zeros(n_users), np.zeros(n_users)
        days_idx = (np.arange(as_of, as_of + CHURN_DAYS) + self.warmup).astype(int)
        for j, c in enumerate(self.grid(as_of)):
            w = post[:, j]
            live = w > 1e-9
            if not live.any():
                continue
            lam = self.lam(int(c))[:, days_idx]
            end = min(int(c), as_of + CHURN_DAYS)
            quiet = np.exp(-lam[:, : max(end - as_of, 0)].sum(1)) * (first_next >= end * DAY_S)
            p_churn += w * quiet
            horizon = min(max(int(c) - as_of, 0), PROP_DAYS) * DAY_S
            q = np.stack(
                [(self.pbuy * (d * DAY_S + self.final_s < horizon)).mean(1) for d in range(PROP_DAYS)], 1
            )
            nb = np.exp(-(lam[:, :PROP_DAYS] * q).sum(1))
            f = fin[fin["session_start_s"] < int(c) * DAY_S]
            nb_f = np.ones(n_users)
            np.multiply.at(nb_f, f["u"].to_numpy(), 1 - f["p"].to_numpy())
            p_no_buy += w * nb * nb_f
        return 1 - p_no_buy, p_churn


def auc_2se(y: np.ndarray, score: np.ndarray) -> tuple[float, float]:
    """ROC-AUC and 2 standard errors (Hanley & McNeil 1982)."""
    a, n1, n0 = float(roc_auc_score(y, score)), int(y.sum()), int((1 - y).sum())
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    return a, 2 * float(np.sqrt(var))


def labels_and_baselines(as_of: int, ev: pd.DataFrame) -> pd.DataFrame:
    """One row per user with an event in [T-180d, T): the two labels and the baselines' inputs."""
    t0, day = as_of * DAY_S, ev["event_s"] / DAY_S
    past, fut = ev[ev["event_s"] < t0], ev[ev["event_s"] >= t0]
    out = pd.DataFrame({"recency": (t0 - past.groupby("user_id")["event_s"].max()) / DAY_S})
    bought = past[past["event_type"] == "purchase"].groupby("user_id")["event_s"].max()
    out["purchase_recency"] = ((t0 - bought) / DAY_S).reindex(out.index).fillna(1e4)
    recent = past[day[past.index] >= as_of - 30]
    out["frequency"] = recent.groupby("user_id").size().reindex(out.index).fillna(0)
    out = out[out["recency"] <= 180]
    buy = fut[(fut["event_type"] == "purchase") & (day[fut.index] < as_of + PROP_DAYS)]["user_id"].unique()
    active = fut[day[fut.index] < as_of + CHURN_DAYS]["user_id"].unique()
    out["y_prop"] = out.index.isin(buy).astype(int)
    churned = (~out.index.isin(active)).astype(float)
    out["y_churn"] = np.where(out["recency"] <= CHURN_LOOKBACK, churned, np.nan)
    return out


def true_state(
    as_of: int, f: dict[str, pd.DataFrame], truth: pd.DataFrame, intent: float
) -> tuple[np.ndarray, pd.DataFrame]:
    """What the oracle knows at T besides the traits: mission start days before T (users x missions,
    NaN-padded) and the planned sessions at or after T of missions started before T, with P(buy) (``p``)
    and P(buy) averaged over the intent prior (``p_no_intent``: the plan known, the mission's intent not)."""
    uidx = pd.Series(np.arange(len(truth)), index=truth["user_id"])
    m = f["missions"].merge(truth[["user_id", "is_new"]], on="user_id")
    m = m[(m["start_s"] // DAY_S < as_of) & ~(m["is_new"] & (m["mission"] == 1))]
    m = m.assign(u=uidx[m["user_id"]].to_numpy(), mid=m["start_s"] // DAY_S + 0.5)
    m["r"] = m.groupby("u").cumcount()
    starts = np.full((len(truth), int(m["r"].max()) + 1 if len(m) else 1), np.nan)
    starts[m["u"].to_numpy(), m["r"].to_numpy()] = m["mid"].to_numpy()
    pl = f["plan"]
    pl = pl[(pl["start_s"] // DAY_S < as_of) & (pl["session_start_s"] >= as_of * DAY_S)].copy()
    pl["u"] = uidx[pl["user_id"]].to_numpy()
    a, b = truth["purchase_intercept"].to_numpy()[pl["u"]], truth["price_elasticity"].to_numpy()[pl["u"]]
    commit = MISSION_COMMITMENT * (pl["n_sessions"].to_numpy() - 2)
    logit = a + b * np.log(pl["relative_price"].to_numpy()) + commit
    pl["p"] = logistic(logit + pl["intent"].to_numpy())
    z = np.random.default_rng(0).standard_normal(64)
    pl["p_no_intent"] = logistic(logit[:, None] + intent * z[None]).mean(1) if len(pl) else []
    return starts, pl


def rows_at(as_of: int, f: dict[str, pd.DataFrame], oracle: Oracle, intent: float) -> pd.DataFrame:
    """Labels, baselines and the oracles' probabilities at T, one row per user in the population."""
    truth = oracle.t
    out = labels_and_baselines(as_of, f["events"])
    starts, pl = true_state(as_of, f, truth, intent)
    post = oracle.posterior(as_of, starts)
    known = np.zeros_like(post)
    known[np.arange(len(truth)), np.clip(truth["churn"].to_numpy(), 1, post.shape[1]) - 1] = 1
    ui = pd.Series(np.arange(len(truth)), index=truth["user_id"])[out.index].to_numpy()
    variants = (
        ("oracle", post, pl),
        ("clairvoyant", known, pl),
        ("no_intent", post, pl.assign(p=pl["p_no_intent"])),
        ("no_plan", post, pl.iloc[:0]),
    )
    for name, dist, plan in variants:
        p_buy, p_churn = oracle.probs(as_of, dist, plan)
        out[f"{name}_prop"], out[f"{name}_churn"] = p_buy[ui], p_churn[ui]
    churn_s = truth["churn"].to_numpy()[pl["u"].to_numpy()] * DAY_S
    done = pl[
        pl["is_final"]
        & pl["buy"]
        & (pl["session_start_s"] < np.minimum((as_of + PROP_DAYS) * DAY_S, churn_s))
    ]
    out["inflight_buy"] = out.index.isin(
        done["user_id"].unique()
    )  # a purchase planned by a mission begun before T
    return out.assign(as_of=as_of)


SCORES = {  # name -> (propensity score, churn score): higher means likelier label
    "oracle (truth, churn date unknown)": ("oracle_prop", "oracle_churn"),
    "clairvoyant (also the churn date)": ("clairvoyant_prop", "clairvoyant_churn"),
    "oracle without the intent of missions in flight": ("no_intent_prop", "no_intent_churn"),
    "oracle without the missions in flight": ("no_plan_prop", "no_plan_churn"),
    "recency (days since last event)": ("-recency", "recency"),
    "purchase recency": ("-purchase_recency", "purchase_recency"),
    "frequency (events in 30 d)": ("frequency", "-frequency"),
}


def score_of(df: pd.DataFrame, col: str) -> np.ndarray:
    """A score column; a leading '-' flips it so that higher means a likelier label."""
    return (-1.0 if col.startswith("-") else 1.0) * df[col.lstrip("-")].to_numpy()


def diff_2se(df: pd.DataFrame, y: str, col: str, ref: str, *, n_boot: int = 200) -> float:
    """2 SE of AUC(col) - AUC(ref) on the same rows, resampling users (all their as-of dates together)."""
    users = df.index.unique()
    yv, a, b = df[y].to_numpy().astype(int), score_of(df, col), score_of(df, ref)
    pos = users.get_indexer(df.index)
    rng, diffs = np.random.default_rng(0), []
    for _ in range(n_boot):
        w = rng.multinomial(len(users), np.full(len(users), 1 / len(users)))[pos]
        diffs.append(roc_auc_score(yv, a, sample_weight=w) - roc_auc_score(yv, b, sample_weight=w))
    return 2 * float(np.std(diffs))


def table(rows: pd.DataFrame, churn: pd.DataFrame) -> str:
    """The markdown table of ROC-AUC +- 2 SE per score and task, and the paired difference to recency."""
    churn = churn[churn["y_churn"].notna()]
    lines = [
        f"| score | propensity_7d AUC (n={len(rows)}, {rows['y_prop'].mean():.1%} pos) | minus recency "
        f"| churn AUC (n={len(churn)}, {churn['y_churn'].mean():.1%} pos) | minus recency |",
        "|---|---:|---:|---:|---:|",
    ]
    ref = SCORES["recency (days since last event)"]
    for name, cols in SCORES.items():
        cells = []
        for df, col, r, y in ((rows, cols[0], ref[0], "y_prop"), (churn, cols[1], ref[1], "y_churn")):
            yv = df[y].to_numpy().astype(int)
            a, se = auc_2se(yv, score_of(df, col))
            d = a - roc_auc_score(yv, score_of(df, r))
            cells += [f"{a:.3f} ± {se:.3f}", "" if col == r else f"{d:+.3f} ± {diff_2se(df, y, col, r):.3f}"]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--days", type=int, default=120)
    p.add_argument(
        "--dates", type=int, default=4, help="weekly as-of dates per task, the last at days - horizon"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--shapes", type=int, default=400, help="new-mission shapes sampled for the oracle")
    p.add_argument("--intent", type=float, help="synthetic.mission_intent (default: the product default)")
    p.add_argument("--spacing", type=float, help="synthetic.mission_spacing_scale (default: the product's)")
    ns = p.parse_args(argv)
    cfg = load_config("local")
    shop = ShopParams.from_config(cfg, None)  # type: ignore[arg-type]
    shop = dataclasses.replace(
        shop,
        users=ns.users,
        days=ns.days,
        seed=ns.seed,
        mission_intent=shop.mission_intent if ns.intent is None else ns.intent,
        mission_spacing_scale=shop.mission_spacing_scale if ns.spacing is None else ns.spacing,
    )
    shop.validate()
    frames = shop_frames(cfg, shop)
    shapes = mission_shapes(ns.shapes, shop)
    oracle = Oracle(frames["truth"], shop, shapes)
    intent = shop.mission_intent
    # Per task, the newest weekly as-of dates whose label window ends inside the period (a holdout).
    rows = {
        task: pd.concat(
            [rows_at(ns.days - h - 7 * i, frames, oracle, intent) for i in reversed(range(ns.dates))]
        )
        for task, h in (("prop", PROP_DAYS), ("churn", CHURN_DAYS))
    }
    for task, r in rows.items():  # calibration: a sound oracle predicts the label rate
        ok = r[f"y_{task}"].notna()
        log.info(
            "%s: as-of days %s, %d rows, label rate %.3f, oracle mean %.3f",
            task,
            sorted(r["as_of"].unique()),
            ok.sum(),
            r.loc[ok, f"y_{task}"].mean(),
            r.loc[ok, f"oracle_{task}"].mean(),
        )
    prop = rows["prop"]
    log.info(
        "propensity positives that end a mission begun before T: %.3f (of all rows: %.3f)",
        prop.loc[prop["y_prop"] == 1, "inflight_buy"].mean(),
        prop["inflight_buy"].mean(),
    )
    print(table(rows["prop"], rows["churn"]))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
