"""Ingestion of the real public samples in ../shared/datasets (read in place, never copied into the repo).

Counts are checked against an independent pandas classification of the same files, and a known row of
each dataset is spot-checked in its canonical form.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from pyspark.sql import SparkSession

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.ingest import job as ingest_job
from shopformer.ingest.sources import export_workbook
from tests.ingest.helpers import REES_COLS, with_mapping

pytestmark = [pytest.mark.real_data, pytest.mark.integration]

REES = "rees46_multi_category_store_head"
COSMETICS = "rees46_cosmetics_shop_42piscine_heads"
NON_PRODUCT = {
    "POST",
    "DOT",
    "M",
    "C2",
    "D",
    "S",
    "B",
    "CRUK",
    "PADS",
    "AMAZONFEE",
    "BANK CHARGES",
    "ADJUST",
    "ADJUST2",
    "TEST001",
    "TEST002",
}


def _read_rees(path: Path, header: bool = True) -> tuple[pd.DataFrame, int]:
    """(well-formed rows, number of lines with the wrong token count) parsed by Python's csv module."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    names = rows.pop(0) if header else REES_COLS
    good = [r for r in rows if len(r) == len(names)]
    pdf = pd.DataFrame(good, columns=names).replace("", None)
    return pdf, len(rows) - len(good)


def _expected_rees(pdf: pd.DataFrame) -> tuple[int, int]:
    """(accepted, duplicates) for well-formed REES46-format rows, all of which are valid in these samples."""
    pdf = pdf.assign(price=pdf["price"].astype(float))
    assert pdf[["user_id", "product_id", "event_time"]].notna().all().all()
    assert set(pdf["event_type"]) <= {"view", "cart", "remove_from_cart", "purchase"}
    key = ["user_id", "event_time", "event_type", "product_id", "price", "user_session"]
    distinct = len(pdf.drop_duplicates(subset=key))
    return distinct, len(pdf) - distinct


def _run(spark: SparkSession, cfg: Config, source: str, day: dt.date, path: Path) -> ingest_job.IngestReport:
    return ingest_job.run(spark, cfg, source=source, start=day, end=day, run_id="real", input_path=str(path))


def _event(spark: SparkSession, cfg: Config, source: str, **where: str) -> dict:
    cond = " AND ".join([f"source = '{source}'", *[f"{k} = '{v}'" for k, v in where.items()]])
    rows = tables.read(spark, cfg.table("bronze_events")).where(cond).collect()
    assert len(rows) == 1, rows
    return rows[0].asDict()


def _counts(report: ingest_job.IngestReport) -> tuple[int, int, int, int]:
    return report.read, report.accepted, report.duplicates, report.rejected


def test_rees46_october_with_header(spark: SparkSession, cfg: Config, shared_datasets: Path) -> None:
    path = shared_datasets / REES / "2019-Oct_head_17435rows.csv"
    report = _run(spark, cfg, "rees46", dt.date(2019, 10, 1), path)
    pdf, malformed = _read_rees(path)
    assert malformed == 1  # the sample's last line is cut off mid-row
    accepted, duplicates = _expected_rees(pdf)
    assert _counts(report) == (17435, accepted, duplicates, 1)
    assert report.rejected_by_reason == {"malformed_record": 1}
    row = _event(
        spark, cfg, "rees46", user_id="541312140", item_id="44600062", event_time="2019-10-01 00:00:00"
    )
    assert (row["event_time"], row["event_type"], row["category"], row["brand"], row["price"]) == (
        dt.datetime(2019, 10, 1),
        "view",
        "2103807459595387724",
        "shiseido",
        35.79,
    )
    assert row["source_session_id"] == "72d76fde-8bb3-4e00-8c23-a032dfed738c" and row["quantity"] == 1


def test_rees46_november_without_header(spark: SparkSession, cfg: Config, shared_datasets: Path) -> None:
    path = shared_datasets / REES / "2019-Nov_head_683rows_noheader.csv"
    report = _run(spark, cfg, "rees46_noheader", dt.date(2019, 11, 1), path)
    pdf, malformed = _read_rees(path, header=False)
    accepted, duplicates = _expected_rees(pdf)
    assert _counts(report) == (683, accepted, duplicates, malformed)
    first = {"user_id": "520088904", "item_id": "1003461", "event_time": "2019-11-01 00:00:00"}
    row = _event(spark, cfg, "rees46_noheader", **first)
    assert (row["category"], row["brand"], row["price"]) == ("electronics.smartphone", "xiaomi", 489.07)


def test_rees46_cosmetics_months_with_item_lookup(
    spark: SparkSession, cfg: Config, shared_datasets: Path
) -> None:
    folder = shared_datasets / COSMETICS
    items = pd.read_csv(folder / "item.csv", dtype=str)
    lookup = {
        "path": str(folder / "item.csv"),
        "format": "csv",
        "options": {"header": True},
        "key": "product_id",
    }
    cfg = with_mapping(cfg, "rees46_cosmetics", lookup=lookup)
    for month in ("2022_oct", "2022_nov", "2022_dec", "2023_jan", "2023_feb"):
        path = folder / f"data_{month}.csv"
        pdf, malformed = _read_rees(path)
        day = dt.date.fromisoformat(pdf["event_time"].min()[:10])
        report = _run(spark, cfg, "rees46_cosmetics", day, path)
        accepted, duplicates = _expected_rees(pdf)
        assert _counts(report) == (999, accepted, duplicates, malformed)
    known = items[items["product_id"] == "5773203"]
    top = {c: known[c].dropna().max() if known[c].notna().any() else None for c in known.columns}
    row = _event(spark, cfg, "rees46_cosmetics", user_id="463240011", item_id="5773203", event_type="cart")
    assert (row["event_time"], row["price"]) == (dt.datetime(2022, 10, 1), 2.62)
    assert (row["category"], row["brand"]) == (top["category_code"] or top["category_id"], top["brand"])


def _xlsx_to_csv(xlsx: Path, out: Path) -> pd.DataFrame:
    """All sheets of the workbook as one CSV (what jobs/land_workbook.py lands) and the frame written."""
    return export_workbook(str(xlsx), str(out))


def _expected_uci(
    pdf: pd.DataFrame, invoice: str, customer: str, price: str
) -> tuple[dict[str, int], int, int]:
    """Independent classification in the documented order: (rejected by reason, accepted, duplicates)."""
    reason = pd.Series([None] * len(pdf), index=pdf.index, dtype=object)

    def mark(mask: pd.Series, code: str) -> None:
        reason[mask & reason.isna()] = code

    stock = pdf["StockCode"].astype(str).str.strip()
    mark(pdf[invoice].astype(str).str.upper().str.startswith("C"), "cancellation")
    mark(stock.str.upper().isin(NON_PRODUCT) | stock.str.lower().str.startswith("gift_0001"), "non_product")
    mark(pdf[customer].isna(), "missing_user_id")
    mark(pdf["StockCode"].isna(), "missing_item_id")
    mark(pdf[price] < 0, "negative_price")
    mark(~((pdf["Quantity"] > 0) & (pdf["Quantity"] % 1 == 0)), "bad_quantity")
    valid = pdf[reason.isna()].assign(StockCode=stock[reason.isna()])
    key = [customer, "InvoiceDate", "StockCode", price, "Quantity", invoice]
    distinct = len(valid.drop_duplicates(subset=key))
    return reason.value_counts().to_dict(), distinct, len(valid) - distinct


Ingested = tuple[Config, pd.DataFrame, ingest_job.IngestReport]  # its config, the exported frame, the report
Uci = Callable[[str, str], Ingested]


@pytest.fixture(scope="module")
def uci(spark: SparkSession, shared_datasets: Path, tmp_path_factory: pytest.TempPathFactory) -> Uci:
    """``uci(file, source)``: the workbook exported as jobs/land_workbook.py lands it and ingested, once per
    module in a root of its own (the counts test and the known-rows test read the same run): its config,
    the exported frame and the ingest's report."""
    done: dict[tuple[str, str], Ingested] = {}

    def ingested(file: str, source: str) -> Ingested:
        if (file, source) not in done:
            root = tmp_path_factory.mktemp("uci")
            cfg = load_config("local", [f"paths.root={root}"])
            pdf = _xlsx_to_csv(shared_datasets / "uci_online_retail" / file, root / "csv")
            done[file, source] = cfg, pdf, _run(spark, cfg, source, dt.date(2011, 12, 31), root / "csv")
        return done[file, source]

    return ingested


@pytest.mark.parametrize(
    ("file", "source", "cols"),
    [
        (
            "online_retail_II_10_non_UK_countries.xlsx",
            "uci_online_retail",
            ("Invoice", "Customer ID", "Price"),
        ),
        (
            "Online_Retail_random_40000rows.xlsx",
            "uci_online_retail_i",
            ("InvoiceNo", "CustomerID", "UnitPrice"),
        ),
    ],
)
def test_uci_online_retail(uci: Uci, file: str, source: str, cols: tuple) -> None:
    _cfg, pdf, report = uci(file, source)
    rejected, accepted, duplicates = _expected_uci(pdf, *cols)
    assert report.read == len(pdf)
    assert (report.rejected_by_reason, report.accepted, report.duplicates) == (rejected, accepted, duplicates)
    assert "cancellation" in rejected and "non_product" in rejected


def test_uci_known_rows_in_canonical_form(spark: SparkSession, uci: Uci) -> None:
    cfg, pdf, _report = uci("online_retail_II_10_non_UK_countries.xlsx", "uci_online_retail")
    row = _event(spark, cfg, "uci_online_retail", source_session_id="490397", item_id="21844")
    assert (row["user_id"], row["event_type"], row["price"], row["quantity"], row["item_title"]) == (
        "12417",
        "purchase",
        2.95,
        6,
        "RETRO SPOT MUG",
    )
    assert row["event_time"] == dt.datetime(2009, 12, 6, 10, 30)  # GMT in winter: UTC unchanged
    summer = pdf[(pdf["InvoiceDate"].dt.month == 7) & pdf["Customer ID"].notna() & (pdf["Quantity"] > 0)]
    summer = summer[~summer["Invoice"].astype(str).str.startswith("C")].iloc[0]
    got = _event(
        spark,
        cfg,
        "uci_online_retail",
        source_session_id=str(summer["Invoice"]),
        item_id=str(summer["StockCode"]),
    )
    assert got["event_time"] == summer["InvoiceDate"].to_pydatetime() - dt.timedelta(hours=1)  # BST -> UTC
