"""``regular_price``, the optional unit price before any discount: parsed and checked like ``price`` (an
unparseable or negative one rejects the row with its own reason), NULL where the source does not map it."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from shopformer.ingest.sources import parse_mapping
from tests.ingest.helpers import classified, raw_frame, rees_mapping, rees_row

COLS = ["ts", "item", "price", "shelf", "user", "sess"]
LINES: dict[str, Any] = {
    "format": "csv",
    "path": "{landing}/lines/date={date}",
    "time_format": "yyyy-MM-dd HH:mm:ss",
    "fields": {
        "user_id": "user",
        "event_time": "ts",
        "event_type": "'purchase'",
        "item_id": "item",
        "price": "price",
        "regular_price": "shelf",
        "source_session_id": "sess",
    },
    "event_types": {"purchase": "purchase"},
}
OUT = "source_session_id string, price double, regular_price double, reason string"


def _line(sess: str, price: str | None, shelf: str | None) -> tuple[str | None, ...]:
    return ("2024-01-01 10:00:00", "p1", price, shelf, "u1", sess)


def test_regular_price_is_parsed_and_checked_like_price(spark: SparkSession) -> None:
    rows = [
        _line("on_shelf", "2.0", "2.0"),
        _line("discounted", "1.5", " 2.5 "),
        _line("not_stated", "2.0", None),
        _line("blank", "2.0", ""),
        _line("free", "0", "0"),
        _line("text", "2.0", "2,5"),
        _line("nan", "2.0", "NaN"),
        _line("negative", "2.0", "-0.01"),
        _line("negative_price_first", "-1", "-1"),
    ]
    out = classified(raw_frame(spark, rows, columns=COLS), parse_mapping("lines", LINES))
    expected = [
        ("on_shelf", 2.0, 2.0, None),
        ("discounted", 1.5, 2.5, None),
        ("not_stated", 2.0, None, None),
        ("blank", 2.0, None, None),
        ("free", 0.0, 0.0, None),
        ("text", 2.0, None, "bad_regular_price"),
        ("nan", 2.0, float("nan"), "bad_regular_price"),
        ("negative", 2.0, -0.01, "negative_regular_price"),
        ("negative_price_first", -1.0, -1.0, "negative_price"),
    ]
    got = out.select("source_session_id", "price", "regular_price", "reason")
    assertDataFrameEqual(got, spark.createDataFrame(expected, OUT))


def test_a_source_that_does_not_map_it_gets_null(spark: SparkSession) -> None:
    mapping = rees_mapping()
    assert "regular_price" not in mapping.fields
    out = classified(raw_frame(spark, [rees_row(session="s1", price="3.5")]), mapping)
    want = spark.createDataFrame([("s1", 3.5, None, None)], OUT)
    assertDataFrameEqual(out.select("source_session_id", "price", "regular_price", "reason"), want)
