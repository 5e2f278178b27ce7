"""Ingestion: mapping validation, reject reasons, event ids, duplicates, time zones, and the run as a whole
(reconciled counts, idempotent reruns, late events, failures that stop before writing)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from shopformer.config import Config
from shopformer.errors import ConfigError
from shopformer.ingest.sources import parse_mapping
from shopformer.ingest.transforms import (
    accepted_events,
    accounting,
    copies_total,
    disposition_counts,
    rejected_records,
)
from shopformer.schemas import BRONZE_EVENTS
from tests.ingest.helpers import (
    classified,
    expected_event_id,
    raw_frame,
    rees_mapping,
    rees_row,
    resolve,
)

ORDER_COLS = ["ts", "kind", "item", "price", "qty", "user", "sess", "invoice"]
ORDERS: dict[str, Any] = {
    "format": "csv",
    "path": "{landing}/orders/date={date}",
    "time_format": "yyyy-MM-dd HH:mm:ss",
    "time_zone": "Europe/London",
    "fields": {
        "user_id": "user",
        "event_time": "ts",
        "event_type": "kind",
        "item_id": "item",
        "price": "price",
        "quantity": "qty",
        "source_session_id": "sess",
    },
    "event_types": {"order": "purchase"},
    "exclude": {"cancellation": "startswith(invoice, 'C')", "non_product": "item IN ('POST', 'M')"},
}


def _orders(**changes: Any):
    return parse_mapping("orders", {**ORDERS, **changes})


def _order(
    ts="2024-01-01 10:00:00",
    kind="order",
    item="p1",
    price="2.5",
    qty="1",
    user="u1",
    sess="s1",
    invoice="100",
):
    return (ts, kind, item, price, qty, user, sess, invoice)


def _reasons(df: DataFrame) -> DataFrame:
    return df.select("source_session_id", "reason")


# ---------------------------------------------------------------- mapping validation (ConfigError)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"colour": "red"}, "colour"),
        ({"format": "xml"}, "sources.orders.format"),
        ({"fields": {k: v for k, v in ORDERS["fields"].items() if k != "user_id"}}, "fields.user_id"),
        ({"fields": {**ORDERS["fields"], "colour": "x"}}, "colour"),
        ({"event_types": {"order": "buy"}}, "sources.orders.event_types.order"),
        ({"time_zone": "Mars/Olympus"}, "sources.orders.time_zone"),
        ({"exclude": {"bad_price": "true"}}, "sources.orders.exclude.bad_price"),
        ({"path": ""}, "sources.orders.path"),
        ({"time_format": []}, "sources.orders.time_format"),
        ({"lookup": {"path": "x"}}, "sources.orders.lookup.key"),
    ],
)
def test_bad_mapping_is_a_config_error_naming_the_key(change: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _orders(**change)


def test_builtin_mappings_parse(cfg: Config) -> None:
    from shopformer.ingest.sources import load_mapping

    names = {"rees46", "synthetic", "rees46_noheader", "rees46_cosmetics", "uci_online_retail"}
    assert names | {"uci_online_retail_i"} <= set(cfg.get("sources"))
    for name in cfg.get("sources"):
        assert load_mapping(cfg, name).fields["user_id"]


# ---------------------------------------------------------------- transforms on inline rows


def test_empty_input_gives_empty_outputs_with_the_table_schemas(spark: SparkSession) -> None:
    out = resolve(raw_frame(spark, []), rees_mapping())
    assert out.count() == 0
    assert accepted_events(out, run_id="r").schema.names == BRONZE_EVENTS.names


def test_each_reject_reason_and_first_failing_check_wins(spark: SparkSession) -> None:
    rows = [
        (*_order(sess="malformed"), "2024-01-01,broken"),
        _order(sess="cancel_wins_over_missing_user", invoice="C9", user=None),
        _order(sess="non_product", item="POST"),
        _order(sess="missing_user", user="  "),
        _order(sess="missing_item_before_time", item=None, ts="garbage"),
        _order(sess="bad_time", ts="2024-13-45 99:00:00"),
        _order(sess="future", ts="2024-01-05 00:00:00"),
        _order(sess="unknown_type", kind="click"),
        _order(sess="bad_price", price="1,5"),
        _order(sess="nan_price", price="NaN"),
        _order(sess="negative_price", price="-0.01"),
        _order(sess="zero_qty", qty="0"),
        _order(sess="fraction_qty", qty="1.5"),
        _order(sess="text_qty", qty="two"),
        _order(sess="ok_null_price", price=None),
        _order(sess="ok_float_qty", qty="3.0"),
        _order(sess="ok_zero_price", price="0"),
    ]
    out = classified(raw_frame(spark, rows, columns=ORDER_COLS), _orders())
    expected = [
        ("malformed", "malformed_record"),
        ("cancel_wins_over_missing_user", "cancellation"),
        ("non_product", "non_product"),
        ("missing_user", "missing_user_id"),
        ("missing_item_before_time", "missing_item_id"),
        ("bad_time", "bad_event_time"),
        ("future", "event_time_in_future"),
        ("unknown_type", "unknown_event_type"),
        ("bad_price", "bad_price"),
        ("nan_price", "bad_price"),
        ("negative_price", "negative_price"),
        ("zero_qty", "bad_quantity"),
        ("fraction_qty", "bad_quantity"),
        ("text_qty", "bad_quantity"),
        ("ok_null_price", None),
        ("ok_float_qty", None),
        ("ok_zero_price", None),
    ]
    schema = "source_session_id string, reason string"
    assertDataFrameEqual(_reasons(out), spark.createDataFrame(expected, schema))
    rejected = rejected_records(out, run_id="r").where("reason = 'malformed_record'")
    assert rejected.select("raw_record").first()[0] == "2024-01-01,broken"


def test_quantity_defaults_to_one_and_keeps_whole_numbers(spark: SparkSession) -> None:
    rows = [_order(sess="a", qty=None), _order(sess="b", qty=" 3.0 "), _order(sess="c", qty="12")]
    out = classified(raw_frame(spark, rows, columns=ORDER_COLS), _orders())
    expected = spark.createDataFrame(
        [("a", 1), ("b", 3), ("c", 12)], "source_session_id string, quantity int"
    )
    assertDataFrameEqual(out.select("source_session_id", "quantity"), expected)


def test_local_times_become_utc_and_event_date_is_the_utc_date(spark: SparkSession) -> None:
    rows = [
        _order(sess="winter", ts="2024-01-15 08:26:00"),  # GMT = UTC
        _order(sess="summer", ts="2024-06-01 10:00:00"),  # BST = UTC+1
        _order(sess="after_midnight_bst", ts="2024-06-02 00:30:00"),  # previous UTC day
    ]
    raw = raw_frame(spark, rows, columns=ORDER_COLS, ingest_date="2024-06-02")
    out = classified(raw, _orders(), hours=24 * 365)
    expected = [
        ("winter", dt.datetime(2024, 1, 15, 8, 26), dt.date(2024, 1, 15)),
        ("summer", dt.datetime(2024, 6, 1, 9, 0), dt.date(2024, 6, 1)),
        ("after_midnight_bst", dt.datetime(2024, 6, 1, 23, 30), dt.date(2024, 6, 1)),
    ]
    schema = "source_session_id string, event_time timestamp, event_date date"
    assertDataFrameEqual(out.select(*schema_names(schema)), spark.createDataFrame(expected, schema))


def schema_names(ddl: str) -> list[str]:
    return [part.strip().split(" ")[0] for part in ddl.split(",")]


def test_future_limit_is_end_of_landing_date_plus_max_future_hours(spark: SparkSession) -> None:
    rows = [
        rees_row(when="2024-01-02 23:59:59 UTC", session="inside"),
        rees_row(when="2024-01-03 00:00:00 UTC", session="at_limit"),
        rees_row(when="2024-01-03 00:00:01 UTC", session="beyond"),
        rees_row(when="2023-06-01 00:00:00 UTC", session="old_is_fine"),
    ]
    out = classified(raw_frame(spark, rows, ingest_date="2024-01-01"), rees_mapping(), hours=24)
    expected = [
        ("inside", None),
        ("at_limit", None),
        ("beyond", "event_time_in_future"),
        ("old_is_fine", None),
    ]
    schema = "source_session_id string, reason string"
    assertDataFrameEqual(_reasons(out), spark.createDataFrame(expected, schema))


def test_event_ids_are_null_safe_and_match_an_independent_hash(spark: SparkSession) -> None:
    rows = [rees_row(session=None, price=None), rees_row(session="s1", price=None)]
    out = classified(raw_frame(spark, rows), rees_mapping())
    micros = str(int(dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC).timestamp() * 1_000_000))
    expected = [
        (None, expected_event_id("shop", "u1", micros, "view", "p1", None, "1", None)),
        ("s1", expected_event_id("shop", "u1", micros, "view", "p1", None, "1", "s1")),
    ]
    assertDataFrameEqual(
        out.select("source_session_id", "event_id"),
        spark.createDataFrame(expected, "source_session_id string, event_id string"),
    )


def test_exact_duplicates_collapse_and_known_ids_count_as_duplicates(spark: SparkSession) -> None:
    rows = [
        rees_row(session="a"),
        rees_row(session="a"),
        rees_row(session="a", price="1.5"),  # same canonical content, different spelling
        rees_row(session="a", price="1.6"),  # a different event
        rees_row(session="resent"),
    ]
    m = rees_mapping()
    resent_id = classified(raw_frame(spark, [rees_row(session="resent")]), m).select("event_id")
    out = resolve(raw_frame(spark, rows), m, existing=resent_id)
    expected = [("a", 1.5, 3, False), ("a", 1.6, 1, False), ("resent", 1.5, 1, True)]
    schema = "source_session_id string, price double, copies long, known boolean"
    assertDataFrameEqual(out.select(*schema_names(schema)), spark.createDataFrame(expected, schema))
    kept = accepted_events(out, run_id="r").select("source_session_id", "price")
    assertDataFrameEqual(
        kept, spark.createDataFrame([("a", 1.5), ("a", 1.6)], "source_session_id string, price double")
    )


def test_the_kept_copy_is_the_first_landing_date_then_file_then_attributes(spark: SparkSession) -> None:
    """Copies of one id differ only in descriptive attributes: the same one wins whatever the row order."""
    m = rees_mapping()
    early = raw_frame(
        spark, [rees_row(session="s", brand="zzz")], ingest_date="2024-01-01", source_file="f:/z"
    )
    late = raw_frame(
        spark, [rees_row(session="s", brand="aaa")], ingest_date="2024-01-02", source_file="f:/a"
    )
    same_file = raw_frame(
        spark,
        [
            rees_row(session="t", brand="b"),
            rees_row(session="t", brand="a"),
            rees_row(session="t", brand=None),
        ],
        ingest_date="2024-01-02",
        source_file="f:/a",
    )
    other_file = raw_frame(
        spark, [rees_row(session="t", brand="0")], ingest_date="2024-01-02", source_file="f:/b"
    )
    expected = spark.createDataFrame(
        [("s", "zzz", dt.date(2024, 1, 1), 2), ("t", None, dt.date(2024, 1, 2), 4)],
        "source_session_id string, brand string, ingest_date date, copies long",
    )
    for parts in ([early, late, same_file, other_file], [other_file, same_file, late, early]):
        raw = parts[0].unionByName(parts[1]).unionByName(parts[2]).unionByName(parts[3])
        out = resolve(raw, m).select("source_session_id", "brand", "ingest_date", "copies")
        assertDataFrameEqual(out, expected)


def test_only_rejected_rows_keep_their_raw_record(spark: SparkSession) -> None:
    rows = [rees_row(session="ok"), rees_row(session="bad", price="-1")]
    out = classified(raw_frame(spark, rows), rees_mapping()).select(
        "source_session_id", "reason", "raw_record"
    )
    bad_raw = raw_frame(spark, [rees_row(session="bad", price="-1")]).select("_raw_record").first()[0]
    expected = [("ok", None, None), ("bad", "negative_price", bad_raw)]
    schema = "source_session_id string, reason string, raw_record string"
    assertDataFrameEqual(out, spark.createDataFrame(expected, schema))


def test_duplicate_of_a_rejected_row_is_still_a_rejection(spark: SparkSession) -> None:
    raw = raw_frame(spark, [rees_row(price="-1"), rees_row(price="-1")])
    staged = classified(raw, rees_mapping())
    resolved = resolve(raw, rees_mapping())
    assert resolved.count() == 0
    expected = spark.createDataFrame(
        [("rejected", "negative_price", 2, dt.date(2024, 1, 1))],
        "disposition string, reason string, n long, ingest_date date",
    )
    assertDataFrameEqual(disposition_counts(accounting(staged, resolved)), expected)


def test_disposition_counts_per_landing_date_add_up_to_the_rows_read(spark: SparkSession) -> None:
    """A duplicate counts on its own landing date, even when the kept copy came from another."""
    m = rees_mapping()
    d1 = raw_frame(spark, [rees_row(session="x"), rees_row(session="x"), rees_row(session="y")])
    d2 = raw_frame(
        spark,
        [rees_row(session="x"), rees_row(session="z"), rees_row(session="z", etype="click")],
        ingest_date="2024-01-02",
    )
    raw = d1.unionByName(d2)
    staged, resolved = classified(raw, m), resolve(raw, m)
    day1, day2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
    expected = [
        ("accepted", None, 2, day1),
        ("duplicate", None, 1, day1),
        ("accepted", None, 1, day2),
        ("duplicate", None, 1, day2),
        ("rejected", "unknown_event_type", 1, day2),
    ]
    schema = "disposition string, reason string, n long, ingest_date date"
    assertDataFrameEqual(
        disposition_counts(accounting(staged, resolved)), spark.createDataFrame(expected, schema)
    )
    assert copies_total(resolved).first()[0] == 5
