"""Property: whatever mix of good and broken lines lands, nothing is lost.

read = accepted + duplicates + rejected, and every input line is found again: as an accepted event (or a
duplicate of one) or as a rejected row carrying that line's content and the reason its defect implies.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession

from shopformer import tables
from shopformer.config import load_config
from shopformer.ingest import job as ingest_job
from tests.ingest.helpers import HEADER, REES_COLS, land

pytestmark = pytest.mark.integration  # many generated examples, each a whole ingest job
DAY = dt.date(2024, 3, 1)
ident = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=4)


@st.composite
def good_row(draw: st.DrawFn) -> list[str]:
    when = dt.datetime.combine(DAY, dt.time()) + dt.timedelta(seconds=draw(st.integers(0, 86_399)))
    price = f"{draw(st.integers(0, 99_999)) / 100:.2f}"
    etype = draw(st.sampled_from(["view", "cart", "remove_from_cart", "purchase"]))
    user, item, session = draw(ident), draw(ident), draw(ident)
    return [f"{when:%Y-%m-%d %H:%M:%S} UTC", etype, item, "1", "cat.x", "b", price, user, session]


DEFECTS = {
    "bad_event_time": lambda r: [_set(r, 0, "2024-13-45 99:99:99 UTC")],
    "negative_price": lambda r: [_set(r, 6, "-" + r[6] if r[6] != "0.00" else "-0.5")],
    "unknown_event_type": lambda r: [_set(r, 1, "click")],
    "missing_user_id": lambda r: [_set(r, 7, "")],
    "missing_item_id": lambda r: [_set(r, 2, "")],
    "bad_price": lambda r: [_set(r, 6, "1.2.3")],
}


def _set(row: list[str], i: int, value: str) -> list[str]:
    return [*row[:i], value, *row[i + 1 :]]


@st.composite
def line(draw: st.DrawFn) -> tuple[str, str, list[str] | None]:
    """(kind, CSV line, fields when the line is well formed)."""
    row = draw(good_row())
    kind = draw(st.sampled_from(["good", "good", "good", *DEFECTS, "too_few", "too_many", "broken_quote"]))
    if kind == "good":
        return kind, ",".join(row), row
    if kind == "too_few":
        return "malformed_record", ",".join(row[: draw(st.integers(1, 8))]), None
    if kind == "too_many":
        return "malformed_record", ",".join([*row, "extra"]), None
    if kind == "broken_quote":
        return "malformed_record", ",".join(['"' + row[0], *row[1:]]), None
    fields = DEFECTS[kind](row)[0]
    return kind, ",".join(fields), fields


def _canonical(fields: list[str]) -> tuple:
    f = dict(zip(REES_COLS, fields, strict=True))
    when = dt.datetime.strptime(f["event_time"], "%Y-%m-%d %H:%M:%S UTC")
    return (f["user_id"], when, f["event_type"], f["product_id"], float(f["price"]), f["user_session"])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(line(), min_size=1, max_size=25), repeat=st.lists(st.integers(0, 24), max_size=5))
def test_every_line_is_accounted_for(spark: SparkSession, lines: list, repeat: list[int]) -> None:
    lines = lines + [lines[i % len(lines)] for i in repeat]  # exact duplicates, of any kind
    root = Path(tempfile.mkdtemp(prefix="ingest-prop-"))
    cfg = load_config("local", [f"paths.root={root}"])
    land(root, "rees46", DAY.isoformat(), "part-0.csv", "\n".join([HEADER, *(t for _, t, _ in lines)]) + "\n")
    report = ingest_job.run(spark, cfg, source="rees46", start=DAY, end=DAY, run_id="prop")

    assert report.read == len(lines) == report.accepted + report.duplicates + report.rejected
    good = [_canonical(f) for kind, _, f in lines if kind == "good"]
    events = tables.read(spark, cfg.table("bronze_events")).collect()
    got = [(e.user_id, e.event_time, e.event_type, e.item_id, e.price, e.source_session_id) for e in events]
    assert sorted(got) == sorted(set(good))
    assert report.duplicates == len(good) - len(set(good))

    rejected = tables.read(spark, cfg.table("bronze_events_rejected")).collect()
    want = collections.Counter(
        (kind, text if f is None else json.dumps(dict(zip(REES_COLS, [v or None for v in f], strict=True))))
        for kind, text, f in lines
        if kind != "good"
    )
    have = collections.Counter((r.reason, _normal(r.raw_record)) for r in rejected)
    assert have == want


def _normal(raw: str) -> str:
    """A rejected JSON record re-serialized the way the test writes it (a raw CSV line stays as is)."""
    if raw.startswith("{"):
        return json.dumps(json.loads(raw))
    return raw
