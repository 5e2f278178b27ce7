"""Does the purchase-based price sensitivity predict who buys on discount? The Complete Journey (not a test).

For as-of dates T every 4 weeks, the product's transform (``features.price_sensitivity.from_events``, default
settings) scores each household from its purchases before T, mapped from the package's Parquet the way the
``complete_journey`` source mapping of conf/base.yaml maps them (its field and exclude expressions are
evaluated as written). The target is the household's realized share of units bought on discount in
[T, T + 8 weeks) (``retail_disc > 0 or coupon_disc > 0`` in the raw lines); the
baseline is the same share over every unit before T. Reported: the Spearman correlation of each with the
target, per date, on the households that have all three, and a paired bootstrap 95 % interval of the
score's margin over the baseline (households resampled). The mapping states each line's ``regular_price``
(the shelf price), which the product uses for ``rel_price`` (the estimate only where it is null).
``line_regular_price`` is the earlier experiment, kept for comparison: the same scoring with ``rel_price``
= price paid after coupons / (sales_value + retail_disc), computed here from the raw discount columns.

    .venv/bin/python bench/price_sensitivity_journey.py   # -> bench/results/price_sensitivity_journey.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.stats import spearmanr

from shopformer.config import Config, load_config
from shopformer.features import price_sensitivity as ps
from shopformer.features.sequences import dates_array
from shopformer.ingest.journey import export_journey
from shopformer.spark import build_spark

log = logging.getLogger("bench")
SOURCE = "complete_journey"
HORIZON_DAYS = 56


def journey_lines(spark: SparkSession, cfg: Config, folder: Path) -> DataFrame:
    """The package's transaction lines as events (the source mapping's expressions) + raw discount columns."""
    export_journey(str(folder / "events"), str(folder / "products"))
    m = cfg.section(f"sources.{SOURCE}")
    raw = spark.read.parquet(str(folder / "events"))
    products = spark.read.parquet(str(folder / "products"))
    joined = raw.join(products, m["lookup"]["key"], "left")
    excluded = F.lit(False)
    for condition in m["exclude"].values():
        excluded = excluded | F.coalesce(F.expr(condition), F.lit(False))
    f = m["fields"]
    return joined.where(~excluded).select(
        F.lit(SOURCE).alias("source"),
        F.expr(f["user_id"]).cast("string").alias("user_id"),
        F.to_date(F.expr(f["event_time"])).alias("event_date"),
        F.lit("purchase").alias("event_type"),
        F.expr(f["item_id"]).cast("string").alias("item_id"),
        F.expr(f["price"]).cast("double").alias("price"),
        F.expr(f["regular_price"]).cast("double").alias("regular_price"),
        F.expr(f["quantity"]).cast("int").alias("quantity"),
        ((F.col("retail_disc") > 0) | (F.col("coupon_disc") > 0)).alias("on_discount"),
        F.try_divide(
            F.col("sales_value") - F.col("coupon_disc"), F.col("sales_value") + F.col("retail_disc")
        ).alias("line_rel_price"),
    )


def unit_shares(lines: DataFrame, dates: list[dt.date]) -> DataFrame:
    """(user_id, as_of_date, baseline = share of units on discount before T, target = the same in the
    8 weeks from T): households with units on both sides."""
    units = lines.where(F.col("quantity") > 0).withColumn("as_of_date", F.explode(dates_array(dates)))
    before = F.col("event_date") < F.col("as_of_date")
    after = ~before & (F.col("event_date") < F.date_add("as_of_date", HORIZON_DAYS))

    def share(when: F.Column) -> F.Column:
        disc = F.sum(F.when(when & F.col("on_discount"), F.col("quantity")))
        return F.coalesce(disc, F.lit(0)) / F.sum(F.when(when, F.col("quantity")))

    shares = units.groupBy("user_id", "as_of_date").agg(
        share(before).alias("baseline"), share(after).alias("target")
    )
    return shares.where(F.col("baseline").isNotNull() & F.col("target").isNotNull())


def spearman(frame: pd.DataFrame, column: str) -> float:
    return float(spearmanr(frame[column], frame["target"]).statistic)


def paired_bootstrap(frames: dict[str, pd.DataFrame], *, n: int, seed: int = 0) -> dict:
    """95 % intervals of score - baseline Spearman, per date and for the mean over dates: households are
    resampled with replacement, jointly across dates (a household appears at every date it has rows)."""
    ids = pd.Index(sorted(set().union(*[f.index for f in frames.values()])))
    rng = np.random.default_rng(seed)
    diffs = np.empty((n, len(frames)))
    for b in range(n):
        sample = ids[rng.integers(0, len(ids), len(ids))]
        for j, frame in enumerate(frames.values()):
            boot = frame.reindex(sample).dropna()
            diffs[b, j] = spearman(boot, "score") - spearman(boot, "baseline")
    per_date = np.percentile(diffs, [2.5, 97.5], axis=0).T.round(4).tolist()
    mean = np.percentile(diffs.mean(axis=1), [2.5, 97.5]).round(4).tolist()
    return {"per_date": dict(zip(frames, per_date, strict=True)), "mean": mean}


def evaluate(
    spark: SparkSession, cfg: Config, dates: list[dt.date], folder: Path, *, boot: int
) -> tuple[list[dict], dict]:
    lines = journey_lines(spark, cfg, folder).cache()
    s = ps.PurchaseSensitivitySettings(discount_threshold=ps.settings(cfg).discount_threshold)
    product = ps.from_events(lines, as_of_dates=dates, s=s)
    on_line = lines.where(F.col("quantity") > 0).withColumn("rel_price", F.col("line_rel_price"))
    line_based = ps.purchase_sensitivity(on_line, as_of_dates=dates, s=s)
    shares = unit_shares(lines, dates).toPandas()
    scores = {
        "product": product.toPandas(),
        "line_regular_price": line_based.toPandas(),
    }
    rows, product_frames = [], {}
    for d in dates:
        frame = shares[shares["as_of_date"] == d].set_index("user_id")
        row: dict = {"as_of_date": d.isoformat(), "households_with_target": len(frame)}
        for name, sc in scores.items():
            got = sc[sc["as_of_date"] == d].set_index("user_id")["price_elasticity"]
            both = frame.join((-got).rename("score"), how="inner").dropna()
            row[f"{name}_households"] = len(both)
            row[f"{name}_spearman"] = spearman(both, "score")
            row[f"{name}_baseline_spearman"] = spearman(both, "baseline")
            if name == "product":
                product_frames[d.isoformat()] = both
        rows.append(row)
        log.info("%s", row)
    intervals = paired_bootstrap(product_frames, n=boot)
    for row in rows:
        row["product_minus_baseline_ci95"] = intervals["per_date"][row["as_of_date"]]
    return rows, intervals


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--first", type=dt.date.fromisoformat, default=dt.date(2017, 3, 1))
    p.add_argument("--dates", type=int, default=9, help="as-of dates, every --every-days from --first")
    p.add_argument("--every-days", type=int, default=28)
    p.add_argument("--bootstrap", type=int, default=200, help="resamples for the score - baseline intervals")
    p.add_argument("--out", default="bench/results/price_sensitivity_journey.json")
    ns = p.parse_args(argv)
    dates = [ns.first + dt.timedelta(days=ns.every_days * k) for k in range(ns.dates)]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("local", [f"paths.root={tmp}", "spark.master=local[2]", "spark.delta=false"])
        spark = build_spark(cfg, "bench_price_sensitivity")
        rows, intervals = evaluate(spark, cfg, dates, Path(tmp), boot=ns.bootstrap)
    table = pd.DataFrame(rows)
    means = table.drop(columns=["as_of_date", "product_minus_baseline_ci95"]).mean().round(4).to_dict()
    means["product_minus_baseline_ci95"] = intervals["mean"]
    result = {"dates": rows, "mean": means, "wall_s": round(time.monotonic() - started, 1)}
    Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.out).write_text(json.dumps(result, indent=2) + "\n")
    cols = ["product_spearman", "product_baseline_spearman", "line_regular_price_spearman"]
    print(table[["as_of_date", "product_households", *cols]].round(3).to_string(index=False))  # noqa: T201
    print(json.dumps(result["mean"]), result["wall_s"])  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
