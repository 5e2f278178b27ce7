"""Generate the synthetic shop: raw REES46-format logs (one folder per landing date) + ground truth.

The bundled shop lets the whole pipeline run on a laptop with known answers: the truth tables hold every
user's latent traits (churn date, price elasticity, ...) and the item catalog with titles. The period is
synthetic.start_date + synthetic.days; --run-date is lineage only (or, with start_date: null, the period
ends the day before it). Signals are documented in docs/synthetic_shop.md.
"""

from __future__ import annotations

from pyspark.sql import functions as F

from shopformer import cli, tables
from shopformer.spark import build_spark
from shopformer.synthetic.catalog import ITEMS, item_catalog
from shopformer.synthetic.params import ShopParams
from shopformer.synthetic.users import USERS, shop_logs, user_traits

EVENT_TYPES = ("view", "cart", "remove_from_cart", "purchase")


def _generate(args: cli.JobArgs) -> None:
    cfg = args.cfg
    shop = ShopParams.from_config(cfg, args.run_date)
    out, truth = cfg.settings.synthetic.out, cfg.settings.synthetic.truth
    spark = build_spark(cfg, "generate_shop")

    users = spark.range(shop.users).transform(user_traits, p=shop)
    items = spark.range(shop.items).transform(
        item_catalog, seed=shop.seed, layout=shop.layout(), promo_share=shop.promo_share
    )
    tables.overwrite(users, f"{truth}/users", schema=USERS, run_id=args.run_id)
    tables.overwrite(items, f"{truth}/items", schema=ITEMS, run_id=args.run_id)
    # Re-read the small truth tables so the event plan does not recompute them.
    users = tables.read(spark, f"{truth}/users")
    items = tables.read(spark, f"{truth}/items")
    logs = users.transform(shop_logs, items=items, p=shop)
    tables.write_landing_files(logs, out, fmt=shop.format, partition_by=["date"])

    written = spark.read.format(shop.format).option("header", "true").load(out)
    counts = written.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_distinct("date").alias("landing_dates"),
        *[F.count(F.when(F.col("event_type") == t, 1)).alias(t) for t in EVENT_TYPES],
    ).first()
    shape = {
        "start": shop.start_date,
        "days": shop.days,
        "users": shop.users,
        "items": shop.items,
        "out": out,
    }
    cli.emit("GENERATE_SHOP", {**shape, **(counts.asDict() if counts else {})})


def main(argv: list[str] | None = None) -> int:
    """``jobs/generate_shop.py``: the synthetic shop's landing files and ground truth."""
    return cli.run_main("generate_shop", cli.parser(__doc__), argv, _generate)
