"""Fuzzing ingest over a few hundred landing files (issue 16 item 6): whatever lands, nothing read is lost.

A seeded generator (``SHOPFORMER_FUZZ_SEED``, default 16) lands files for four sources: CSV with a header
(the rees46 mapping as shipped), CSV of Europe/Berlin local times (its spring DST change is the night of the
second landing date; RFC 4180 quotes, two time formats, an exclude rule), JSON lines and Parquet. Each file is
one example with its own mix of good rows and defects: BOM, CRLF, blank lines, gzip, non-ASCII and Latin-1
bytes, quoted commas and newlines, very long lines, binary garbage, empty files, JSON objects of other keys,
and exact or equivalent duplicates inside a file, across files and across dates. One range run per source
over three landing dates; for two sources a late file and a fourth date in one more run (duplicates of events
already in bronze). Then every file is checked from the tables: each line is an accepted event equal to the
expected one, a duplicate of one, or a reject of that file (``bronze.events_rejected.source_file``;
bronze.events carries no file) with the expected reason and raw content; each run reconciles exactly.
Whole-file defects that stop a run are checked one folder each: a ``SourceError`` naming the file or its
columns, nothing written.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import gzip
import json
import logging
import os
import random
import re
import zoneinfo
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.errors import SourceError
from shopformer.ingest import job as ingest_job
from shopformer.ingest.job import IngestReport
from tests.ingest.helpers import HEADER, REES_COLS, with_mapping

pytestmark = pytest.mark.slow  # ~300 generated files, 6 ingest runs and 12 failing ones
log = logging.getLogger(__name__)
SEED = int(os.environ.get("SHOPFORMER_FUZZ_SEED", "16"))
D1, D2, D3, D4 = (dt.date(2024, 3, 30) + dt.timedelta(days=i) for i in range(4))
FILES_PER_DAY = 24
SECOND_RUN = ("fz_csv", "fz_json")  # each run costs seconds: two sources get the late file and fourth date
BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
ISO, DOTTED = "yyyy-MM-dd HH:mm:ss", "dd.MM.yyyy HH:mm:ss"
SOURCES: dict[str, dict[str, object]] = {
    "fz_csv": {},
    "fz_local": {
        "options": {"header": True, "escape": '"'},
        "time_format": [ISO, DOTTED],
        "time_zone": "Europe/Berlin",
        "exclude": {"test_traffic": "startswith(user_id, 'qa_')"},
    },
    "fz_json": {"format": "json", "options": {}},
    "fz_parquet": {"format": "parquet", "options": {}, "time_format": ISO},
}
# fmt: off
ORDER = [  # docs/ingestion.md: the first failing check wins
    "malformed_record", "test_traffic", "missing_user_id", "missing_item_id", "bad_event_time",
    "event_time_in_future", "event_time_too_old", "unknown_event_type", "bad_price", "negative_price",
]
# fmt: on
TYPES = ["view", "cart", "remove_from_cart", "purchase"]
WORDS = ["shoes", "electronics.phone", "Müller", "東京", "café crème", "a, b", "🎉 sale", "naïve, déjà vu"]
QUOTED = ['the "big" one', "back\\slash", '"quoted"']  # fz_local only: RFC 4180 quotes (escape '"')
LATIN1 = ["Müller", "Crème", "Façade", "Ångström"]  # written as Latin-1 bytes into a UTF-8 source
LATIN1_ID = "üéß"  # appended to an id of such a line now and then
PQ_TYPES = {"event_time": pa.timestamp("us"), "price": pa.float64()}
PQ_SCHEMA = pa.schema([(c, PQ_TYPES.get(c, pa.string())) for c in REES_COLS])
Fields = dict[str, object]


@dataclasses.dataclass(frozen=True)
class Spec:
    """What one physical line (or Parquet row) must become, whatever its landing date."""

    raw: str | tuple  # the expected raw_record: the line's text, or its non-null columns (``_norm``)
    reason: str | None = None  # a reason the line has on any date (None: valid unless its time is out)
    when: dt.datetime | None = None  # UTC event time, when it parses
    key: tuple | None = None  # (user, time, type, item, price, session): the event's identity
    attrs: tuple = ()  # (category, brand) as bronze keeps them

    def verdict(self, day: dt.date, hours: int, days: int) -> str | None:
        if self.reason is not None and ORDER.index(self.reason) < ORDER.index("event_time_in_future"):
            return self.reason
        assert self.when is not None
        if self.when > dt.datetime.combine(day, dt.time()) + dt.timedelta(days=1, hours=hours):
            return "event_time_in_future"
        if self.when < dt.datetime.combine(day - dt.timedelta(days=days), dt.time()):
            return "event_time_too_old"
        return self.reason


Unit = tuple[bytes | Fields, tuple[Spec, ...]]  # what one record is written as, and what it must become


def _collapse(text: str) -> str:
    """Java's and Python's UTF-8 decoders replace a bad byte run with a different number of U+FFFD."""
    return re.sub("\ufffd+", "\ufffd", text)


def _norm(raw: str | dict, parquet: bool = False) -> str | tuple:
    """A raw record compared: a row's non-null columns (Parquet prices as floats), or a line's text."""
    if isinstance(raw, str):
        with contextlib.suppress(ValueError):
            raw = json.loads(raw) if raw.startswith("{") else raw
    if isinstance(raw, str) or not isinstance(raw, dict):
        return _collapse(str(raw))
    items = {k: repr(float(v)) if parquet and k == "price" else _collapse(str(v)) for k, v in raw.items()}
    return tuple(sorted((k, v) for k, v in items.items() if raw[k] is not None))


def _clean(v: object) -> str | None:
    """ingest's _clean: trimmed of spaces, blank is missing."""
    return None if v is None or not str(v).strip(" ") else str(v).strip(" ")


class Gen:
    """Units for one source: rows with 0-2 defects, malformed lines, exact copies and equivalent variants."""

    def __init__(self, rng: random.Random, source: str) -> None:
        self.rng, self.source, self.rows, self.units = rng, source, [], []
        self.fmt = "csv" if source in ("fz_csv", "fz_local") else source.removeprefix("fz_")

    def ident(self, prefix: str) -> str:
        r, chars = self.rng, "abcdefgh0123456789"
        return prefix + "".join(r.choice(chars) for _ in range(r.randint(1, 3))) + r.choice(["", "", "é"])

    def word(self) -> str | None:
        r = self.rng
        if r.random() < 0.006:
            return "long-" + "c" * r.randint(20_000, 100_000)
        pool = WORDS + (QUOTED if self.source == "fz_local" else []) + ([""] if self.fmt != "parquet" else [])
        return r.choice([*pool, None])

    def when(self, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
        """(UTC time, written wall time): mostly the landing day, some DST hours, future and old times."""
        r, base = self.rng, dt.datetime.combine(day, dt.time())
        roll = r.random()
        if roll < 0.05:
            wall = base + dt.timedelta(days=1, hours=r.choice([24, 24, 48]), seconds=r.choice([0, 1, 3600]))
        elif roll < 0.09:
            wall = (
                base - dt.timedelta(days=3650, seconds=r.choice([0, 1, 86_400]))
                if r.random() < 0.6
                else base.replace(1970)
            )
        elif roll < 0.25 and self.source == "fz_local":
            night = r.choice([dt.datetime(2024, 3, 31, 1), dt.datetime(2023, 10, 29, 1)])
            wall = night + dt.timedelta(seconds=r.randrange(0, 3 * 3600, 300))
        else:
            wall = base + dt.timedelta(seconds=r.randrange(-3600, 86_400))
        if self.source != "fz_local":
            return wall, wall
        return wall.replace(tzinfo=BERLIN).astimezone(dt.UTC).replace(tzinfo=None), wall

    def time_text(self, wall: dt.datetime) -> object:
        if self.fmt == "parquet":
            return wall
        if self.source == "fz_local":
            return wall.strftime(self.rng.choice(["%Y-%m-%d %H:%M:%S", "%d.%m.%Y %H:%M:%S"]))
        return f"{wall:%Y-%m-%d %H:%M:%S} UTC"

    def row(self, day: dt.date) -> tuple[Fields, dict]:
        """A good row: written values and (UTC time, wall time)."""
        r = self.rng
        when, wall = self.when(day)
        cents = r.choice([0, 1, 150, 999, r.randrange(100_000_00)])
        price = (
            cents / 100
            if self.fmt == "parquet"
            else r.choice([f"{cents / 100:.2f}", None] if r.random() < 0.1 else [f"{cents / 100:.2f}"])
        )
        fields = {
            "event_time": self.time_text(wall),
            "event_type": r.choice(TYPES),
            "product_id": self.ident("p"),
            "category_id": str(r.randrange(1000)),
            "category_code": self.word(),
            "brand": self.word(),
            "price": price,
            "user_id": self.ident("u"),
            "user_session": r.choice([self.ident("s"), None]),
        }
        return fields, {"when": when, "wall": wall}

    def defect(self, fields: Fields, meta: dict) -> None:
        """One defect (a row may get two: the first in ``ORDER`` is its reason)."""
        r, pq_ = self.rng, self.fmt == "parquet"
        kind = r.choice(
            ["missing", "missing", "time", "type", "price", "negative"] + ["qa"] * (self.source == "fz_local")
        )
        if kind == "missing":
            fields[r.choice(["user_id", "product_id"])] = r.choice([None, "", "   "])
        elif kind == "time":
            meta["when"] = None
            local = ["2024-03-31T02:30:00", "31.03.2024 25:00:00", "30.02.2024 10:00:00"]
            utc = ["2024-13-45 99:99:99 UTC", "2024-03-31T10:00:00Z", "2024-02-30 10:00:00 UTC", "yesterday"]
            fields["event_time"] = (
                None if pq_ else r.choice([*(local if self.source == "fz_local" else utc), ""])
            )
        elif kind == "type":
            fields["event_type"] = r.choice(["click", "VIEW", "\tview", "", None])
        elif kind == "price":
            fields["price"] = r.choice(
                [float("nan"), float("inf"), -float("inf")]
                if pq_
                else ["1.2.3", "abc", "NaN", "Infinity", "-Infinity", "1,50"]
            )
        elif kind == "negative":
            fields["price"] = (
                -r.choice([0.01, 1.5, 999.0]) if pq_ else "-" + r.choice(["0.01", "1.50", "999"])
            )
        else:
            fields["user_id"] = "qa_" + self.ident("")

    def spec(self, f: Fields, when: dt.datetime | None, raw: dict) -> Spec:
        """The oracle for a well-formed row (values as Spark reads them)."""
        user, item, etype = _clean(f["user_id"]), _clean(f["product_id"]), _clean(f["event_type"])
        reasons = (
            ["test_traffic"] if self.source == "fz_local" and str(f["user_id"]).startswith("qa_") else []
        )
        reasons += ["missing_user_id"] * (user is None) + ["missing_item_id"] * (item is None)
        reasons += ["bad_event_time"] * (when is None) + ["unknown_event_type"] * (etype not in TYPES)
        price: float | None = None
        if _clean(f["price"]) is not None:
            try:
                price = float(str(_clean(f["price"])))
            except ValueError:
                price = float("nan")
            reasons += ["bad_price"] * (price != price or abs(price) == float("inf")) + ["negative_price"] * (
                price < 0
            )
        code = f["category_code"] if f["category_code"] not in (None, "") else f["category_id"]
        key = (user, when, etype, item, price, _clean(f["user_session"]))
        norm = _norm(raw, self.fmt == "parquet")
        return Spec(
            norm, min(reasons, key=ORDER.index, default=None), when, key, (_clean(code), _clean(f["brand"]))
        )

    def row_unit(self, fields: Fields, meta: dict, every_key: bool = False) -> Unit:
        if self.fmt == "parquet":
            raw = {
                k: f"{v:%Y-%m-%d %H:%M:%S}" if isinstance(v, dt.datetime) else v for k, v in fields.items()
            }
            return fields, (self.spec(fields, meta["when"], raw),)
        if self.fmt == "json":
            line, raw = self.json_line(fields, every_key=every_key)
            return line.encode(), (self.spec(fields, meta["when"], raw),)
        line = _csv([fields[c] for c in REES_COLS], self.rng)
        others = "".join(str(v) for k, v in fields.items() if k != "brand" and v is not None)
        # Latin-1 bytes (in the brand, now and then in an id): not UTF-8, so the line is malformed (before,
        # they decoded to U+FFFD, and two ids differing in such a byte merged as duplicates)
        latin1 = fields["brand"] in LATIN1 and all(c.isascii() or c in LATIN1_ID for c in others)
        enc = "latin-1" if latin1 else "utf-8"
        seen = {
            k: None if v in (None, "") else str(v).encode(enc).decode("utf-8", "replace")
            for k, v in fields.items()
        }
        if latin1:
            return line.encode(enc), (Spec(_norm(seen), "malformed_record"),)
        return line.encode(enc), (self.spec(seen, meta["when"], seen),)

    def json_line(
        self, fields: Fields, ascii_only: bool | None = None, every_key: bool = False
    ) -> tuple[str, dict]:
        """Keys in any order, absent or null when missing, numbers unquoted where they read back alike."""
        r, items, raw = self.rng, [], {}
        for k, v in fields.items():
            if v is None and not every_key and r.random() < 0.5:
                continue
            number = isinstance(v, str) and re.fullmatch(r"[1-9]\d*(\.\d+)?", v) and repr(json.loads(v)) == v
            text = (
                v
                if number and r.random() < 0.4
                else json.dumps(v, ensure_ascii=r.random() < 0.5 if ascii_only is None else ascii_only)
            )
            items.append(f"{json.dumps(k)}:{text}")
            raw[k] = v
        if r.random() < 0.05:
            items.append('"note":"an extra key"')
            raw["note"] = "an extra key"
        r.shuffle(items)
        return "{" + r.choice([",", ", "]).join(items) + "}", raw

    def malformed(self, day: dt.date) -> Unit:
        """A line the reader cannot split into the columns: each physical line a malformed_record."""
        r = self.rng
        fields, _ = self.row(day)
        if self.fmt == "json":
            fields["brand"] = "Crème"
            line, _ = self.json_line(fields, ascii_only=True)
            make: dict[str, Callable[[], bytes]] = {
                "cut": lambda: line[: r.randrange(1, len(line) - 1)].encode(),
                "scalar": lambda: r.choice([b"42", b'"a string"', b"true", b"null"]),
                "garbage": self.garbage,
                "latin1": lambda: line.replace(json.dumps("Crème"), '"Crème"').encode("latin-1"),
                "long": lambda: b'{"brand": "' + b"y" * r.randint(30_000, 120_000),
            }
            data = make[r.choice(list(make))]()
            return data, (Spec(_norm(data.decode("utf-8", "replace")), "malformed_record"),)
        values = [fields[c] for c in REES_COLS]
        kind = r.choice(["few", "many", "quote", "newline", "garbage", "long"])
        if kind == "newline":  # without multiLine a quoted newline ends the line: two broken halves
            values[r.choice([4, 5])] = "first\nsecond"
        text: dict[str, Callable[[], str]] = {
            "few": lambda: _csv(values[: r.randint(1, 8)], r),
            "many": lambda: _csv([*values, r.choice(["extra", ""])], r),
            "quote": lambda: '"' + _csv(values, r).replace('"', ""),
            "newline": lambda: _csv(values, r),
            "long": lambda: "x" * r.randint(30_000, 120_000),
        }
        data = self.garbage() if kind == "garbage" else text[kind]().encode()
        lines = data.decode("utf-8", "replace").split("\n")
        return data, tuple(Spec(_norm(t), "malformed_record") for t in lines)

    def garbage(self) -> bytes:
        """Binary garbage that stays one line and one column: no newline, comma, quote, brace or backtick."""
        r = self.rng
        ok = [b for b in range(1, 256) if b not in b'\n\r,"\\`{[']
        return bytes([r.choice(b"abxyz")]) + bytes(r.choice(ok) for _ in range(r.randint(0, 120)))

    def variant(self, fields: Fields, meta: dict) -> tuple[Fields, dict]:
        """The same event written otherwise (padding, price or time format, category id, brand)."""
        r, f = self.rng, dict(fields)
        change = r.choice(["pad", "price", "time", "category_id", "brand"])
        k = r.choice(["user_id", "product_id", "event_type", "user_session"])
        if change == "pad" and isinstance(f[k], str):
            f[k] = " " + str(f[k]) + "  "
        elif change == "price" and isinstance(f["price"], str):
            p = str(f["price"])
            f["price"] = r.choice([str(float(p)), "0" + p, "+" + p, p + "0", f"{float(p)}e0"])
        elif change == "time" and self.source == "fz_local":
            f["event_time"] = self.time_text(meta["wall"])
        elif change == "category_id" and f["category_code"] not in (None, ""):
            f["category_id"] = str(r.randrange(1000))
        elif change == "brand" and _clean(f["brand"]) is not None:
            f["brand"] = r.choice([w for w in WORDS if w])
        return f, meta

    def unit(self, day: dt.date) -> Unit:
        r, roll = self.rng, self.rng.random()
        if self.units and roll < 0.12:
            return r.choice(self.units)  # an exact copy of any earlier line: same file, file or date
        if self.rows and roll < 0.2:
            fields, meta = self.variant(*r.choice(self.rows))
        elif roll < 0.3 and self.fmt != "parquet":
            return self.keep(self.malformed(day))
        else:
            fields, meta = self.row(day)
            if self.source == "fz_csv" and r.random() < 0.04:
                ascii_ = {k: str(v).replace("é", "e") for k, v in fields.items() if isinstance(v, str)}
                fields.update(ascii_, category_code="shoes", brand=r.choice(LATIN1))
                if r.random() < 0.5:
                    k = r.choice(["user_id", "product_id"])
                    fields[k] = str(fields[k]) + r.choice(LATIN1_ID)
            if roll < 0.62:
                for _ in range(r.choice([1, 1, 1, 2])):
                    self.defect(fields, meta)
            else:
                self.rows.append((fields, meta))
        return self.keep(self.row_unit(fields, meta))

    def keep(self, unit: Unit) -> Unit:
        self.units.append(unit)
        return unit


def _csv(values: list[object], rng: random.Random) -> str:
    """One CSV line: quoted where needed (quotes doubled), now and then where not."""
    out = []
    for v in values:
        text = "" if v is None else str(v)
        if any(c in text for c in ',"\n\r') or (text and rng.random() < 0.03):
            text = '"' + text.replace('"', '""') + '"'
        out.append(text)
    return ",".join(out)


@dataclasses.dataclass(frozen=True)
class Landed:
    """One example: a landing file, the landing date whose rows it becomes, what each of its lines must be."""

    source: str
    folder: dt.date
    day: dt.date
    name: str
    specs: tuple[Spec, ...]


def _text_file(
    gen: Gen, day: dt.date, n: int, first: bool, kind: str | None = None
) -> tuple[str, bytes, list[Spec]]:
    """A CSV or JSON-lines file: its mix of units, or a whole-file oddity; BOM, CRLF, blank lines, gzip; a
    CSV file with an extra column (its header has it too). ``kind`` "garbage": a file of binary garbage
    lines (a JSON read of only such lines rejects each one).

    The first file of a read has rows, in JSON one object with every key: a read of only 0-byte files stops
    the run "(empty file?)", and a key no object holds reads as null only when the mapping reads it as a
    bare column (rees46's category is an expression over two keys)."""
    r, csv = gen.rng, gen.fmt == "csv"
    roll = 0.05 if kind == "garbage" else 1.0 if first else r.random()
    if roll < 0.03:
        return "empty", b"", []
    if roll < 0.09:  # binary garbage (after the header), or JSON objects without any mapped key
        kind = "garbage" if csv or roll < 0.06 else "other-keys"
        lines = [
            gen.garbage()
            if kind == "garbage"
            else json.dumps({"foo": gen.ident("f"), "bar": r.randrange(99)}).encode()
            for _ in range(n)
        ]
        specs = [
            Spec(_norm(x.decode("utf-8", "replace")), "malformed_record")
            if kind == "garbage"
            else Spec(_norm(x.decode()), "missing_user_id")
            for x in lines
        ]
    else:
        kind = "header-only" if csv and roll < 0.11 else "rows"
        units = [] if kind == "header-only" else [gen.unit(day) for _ in range(n)]
        units = [gen.row_unit(*gen.row(day), every_key=True), *units] if first and not csv else units
        if csv and kind == "rows" and r.random() < 0.08:
            kind, units = "extra-column", [_with_note(u, r) for u in units]  # type: ignore[arg-type]
        lines, specs = [u[0] for u in units], [s for u in units for s in u[1]]  # type: ignore[misc]
    eol = b"\r\n" if r.random() < 0.15 else b"\n"
    header = HEADER + ",note" * (kind == "extra-column")
    body = [header.encode()] * csv + [
        x for line in lines for x in [line] + [r.choice([b"", b"  ", b"\t"])] * (r.random() < 0.1)
    ]
    bom = r.random() < 0.1 and (
        csv or not specs or specs[0].reason != "malformed_record"
    )  # JSON: BOM + bad line 1 untried
    data = b"\xef\xbb\xbf" * bom + eol.join(body) + eol * (r.random() < 0.9)
    if r.random() < 0.1:
        return f"{kind}.gz", gzip.compress(data, mtime=0), specs
    return kind, data, specs


def _with_note(unit: tuple[bytes, tuple[Spec, ...]], rng: random.Random) -> tuple[bytes, tuple[Spec, ...]]:
    """A CSV unit in a file with one more column, ``note``: its value is in the line's raw record."""
    data, specs = unit
    value = f"n{rng.randrange(100)}"
    line = data + b"," + value.encode()
    if all(isinstance(s.raw, tuple) for s in specs):  # a row read into columns (valid, or not UTF-8)
        return line, tuple(
            dataclasses.replace(s, raw=tuple(sorted([*s.raw, ("note", value)]))) for s in specs
        )
    return line, tuple(
        Spec(_norm(t), "malformed_record") for t in line.decode("utf-8", "replace").split("\n")
    )


def _parquet_file(gen: Gen, day: dt.date, n: int, first: bool) -> tuple[str, bytes | pa.Table, list[Spec]]:
    """A Parquet file of typed rows; now and then a 0-byte file (never first: a read of only 0-byte files
    stops the run), one of no rows, or one with an extra column (each file is read by its own columns)."""
    r = gen.rng
    roll = r.random()
    if not first and roll < 0.03:
        return "empty", b"", []
    units = [] if roll < 0.06 else [gen.unit(day) for _ in range(n)]
    rows, specs = [u[0] for u in units], [s for u in units for s in u[1]]  # type: ignore[misc]
    if r.random() < 0.08:  # its values kept in the raw records of its rejects
        notes = [f"n{r.randrange(100)}" for _ in rows]
        rows = [{**row, "note": v} for row, v in zip(rows, notes, strict=True)]  # type: ignore[dict-item]
        specs = [
            dataclasses.replace(s, raw=tuple(sorted([*s.raw, ("note", v)])))  # type: ignore[misc]
            for s, v in zip(specs, notes, strict=True)
        ]
        table = pa.Table.from_pylist(rows, schema=PQ_SCHEMA.append(pa.field("note", pa.string())))
        return "extra-column", table, specs
    return "rows", pa.Table.from_pylist(rows, schema=PQ_SCHEMA), specs


EXT = {"fz_csv": "csv", "fz_local": "csv", "fz_json": "jsonl", "fz_parquet": "parquet"}


def _land(
    root: Path, gen: Gen, folder: dt.date, day: dt.date, prefix: str, count: int, only: str | None = None
) -> list[Landed]:
    out = []
    for i in range(count):
        n = gen.rng.randint(1, 10)
        if gen.fmt == "parquet":
            kind, data, specs = _parquet_file(gen, day, n, first=i == 0)
        else:
            kind, data, specs = _text_file(gen, day, n, first=i == 0, kind=only)
        stem, gz = kind.removesuffix(".gz"), kind.endswith(".gz")
        name = f"{prefix}{i:03d}-{stem}.{EXT[gen.source]}{'.gz' * gz}"
        path = root / "landing" / gen.source / f"date={folder}" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, pa.Table):
            pq.write_table(data, path)
        else:
            path.write_bytes(data)
        out.append(Landed(gen.source, folder, day, name, tuple(specs)))
    return out


def _config(root: Path) -> Config:
    cfg = load_config("local", [f"paths.root={root}"])
    for name, changes in SOURCES.items():
        cfg = with_mapping(cfg, name, path=f"{{landing}}/{name}/date={{date}}", **changes)
    return cfg


@dataclasses.dataclass
class Fuzz:
    cfg: Config
    files: dict[tuple[str, int], list[Landed]]  # by (source, run)
    reports: dict[tuple[str, int], IngestReport]
    events: list  # bronze.events rows
    rejects: list  # bronze.events_rejected rows


@pytest.fixture(scope="module")
def fuzz(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Fuzz:
    """Every source: three landing dates in one range run; then, for two, a late file and a fourth date."""
    root = tmp_path_factory.mktemp("fuzz")
    cfg = _config(root)
    files, reports = {}, {}
    for source in SOURCES:
        gen = Gen(random.Random(f"{SEED}:{source}"), source)
        files[source, 1] = [x for d in (D1, D2, D3) for x in _land(root, gen, d, d, "", FILES_PER_DAY)]
        reports[source, 1] = ingest_job.run(
            spark, cfg, source=source, start=D1, end=D3, run_id=f"fuzz1:{source}"
        )
        if source in SECOND_RUN:  # late files and a fourth date: duplicates of events already in bronze
            files[source, 2] = (
                _land(root, gen, D2, D4, "late-", 1)
                + _land(root, gen, D1, D4, "late-", 1, only="garbage")  # a read of only malformed lines
                + _land(root, gen, D4, D4, "", 6)
            )
            reports[source, 2] = ingest_job.run(
                spark, cfg, source=source, start=D4, end=D4, run_id=f"fuzz2:{source}"
            )
    events = tables.read(spark, cfg.table("bronze_events")).collect()
    rejects = tables.read(spark, cfg.table("bronze_events_rejected")).collect()
    return Fuzz(cfg, files, reports, events, rejects)


def _model(fz: Fuzz) -> tuple[dict, dict]:
    """Expected bronze events {(source, key): (ingest date, attrs)} and per run (read, accepted, duplicates,
    rejected by reason): the kept copy is the first by landing date, file, category, brand."""
    limits = fz.cfg.settings.ingest
    events: dict[tuple, tuple] = {}
    counts = {}
    for (source, run), files in fz.files.items():
        copies: dict[tuple, list] = collections.defaultdict(list)
        reasons: collections.Counter[str] = collections.Counter()
        for f in files:
            for s in f.specs:
                reason = s.verdict(f.day, limits.max_future_hours, limits.max_age_days)
                if reason:
                    reasons[reason] += 1
                else:
                    order = tuple((v is not None, v or "") for v in s.attrs)
                    copies[s.key].append(((f.day, str(f.folder), f.name, *order), f.day, s.attrs))
        new = {k: min(c) for k, c in copies.items() if (source, k) not in events}
        events.update({(source, k): (day, attrs) for k, (_, day, attrs) in new.items()})
        read = sum(len(f.specs) for f in files)
        valid = sum(len(c) for c in copies.values())
        counts[source, run] = (read, len(new), valid - len(new), dict(sorted(reasons.items())))
    return events, counts


def _where(path: str) -> tuple[str, str]:
    """(landing folder date, file name) of a source_file."""
    found = re.search(r"date=([0-9-]{10})/([^/]+)$", path)
    assert found, path
    return found[1], found[2]


def test_every_run_reconciles_exactly(fuzz: Fuzz) -> None:
    """read = accepted + duplicates + rejected, each as the model of the generated lines says."""
    _, counts = _model(fuzz)
    for (source, run), rep in fuzz.reports.items():
        got = (rep.read, rep.accepted, rep.duplicates, rep.rejected_by_reason)
        assert got == counts[source, run], (source, run)
        assert rep.read == rep.accepted + rep.duplicates + rep.rejected
    late = [
        f for (_, run), files in fuzz.files.items() if run == 2 for f in files if f.name.startswith("late-")
    ]
    assert sorted(
        _where(p) for (_, run), rep in fuzz.reports.items() if run == 2 for p in rep.late_files
    ) == sorted((str(f.folder), f.name) for f in late)
    total = collections.Counter[str]()
    for rep in fuzz.reports.values():
        total.update(
            {
                "read": rep.read,
                "accepted": rep.accepted,
                "duplicates": rep.duplicates,
                **rep.rejected_by_reason,
            }
        )
    log.info("fuzz seed %s: %d files, %s", SEED, sum(len(f) for f in fuzz.files.values()), dict(total))


def test_every_line_of_every_file_is_accounted_for(fuzz: Fuzz) -> None:
    """Per file: each good line's event is in bronze (kept or a duplicate of it), each bad line is a reject
    of that file with its reason and raw content, and the file has no other reject."""
    limits = fuzz.cfg.settings.ingest
    have = {
        (e.source, (e.user_id, e.event_time, e.event_type, e.item_id, e.price, e.source_session_id))
        for e in fuzz.events
    }
    rejects = collections.Counter(
        (r.source, *_where(r.source_file), r.reason, _norm(r.raw_record, r.source == "fz_parquet"))
        for r in fuzz.rejects
    )
    problems = []
    for files in fuzz.files.values():
        for f in files:
            for i, s in enumerate(f.specs):
                reason = s.verdict(f.day, limits.max_future_hours, limits.max_age_days)
                if reason is None and (f.source, s.key) not in have:
                    problems.append(f"{f.source} {f.folder}/{f.name} line {i}: event {s.key} not in bronze")
                elif reason is not None and rejects[(f.source, str(f.folder), f.name, reason, s.raw)] <= 0:
                    problems.append(
                        f"{f.source} {f.folder}/{f.name} line {i}: no {reason} reject {str(s.raw)[:300]}"
                    )
                elif reason is not None:
                    rejects[(f.source, str(f.folder), f.name, reason, s.raw)] -= 1
    problems += [f"unexpected reject {str(k)[:400]}" for k, n in rejects.items() if n > 0]
    assert not problems, "\n".join(problems[:20])


EVENT_COLS = (
    "source string, user_id string, event_time timestamp, event_date date, event_type string, "
    "item_id string, category string, brand string, price double, quantity int, source_session_id string, "
    "item_title string, ingest_date date"
)


def test_bronze_holds_exactly_the_expected_events(fuzz: Fuzz, spark: SparkSession) -> None:
    """Each event once, as its kept copy says (landing date, category, brand); nothing else."""
    events, _ = _model(fuzz)
    rows = [
        (source, user, when, when.date(), etype, item, attrs[0], attrs[1], price, 1, session, None, day)
        for (source, (user, when, etype, item, price, session)), (day, attrs) in events.items()
    ]
    names = [c.split()[0] for c in EVENT_COLS.split(", ")]
    actual = tables.read(spark, fuzz.cfg.table("bronze_events")).select(*names)
    assertDataFrameEqual(actual, spark.createDataFrame(rows, EVENT_COLS))


# ------------------------------------------------------------------ whole-file defects that stop the run
GOOD = (
    "\n".join([HEADER, *(f"2024-03-30 10:{i:02d}:00 UTC,view,p{i},1,c,b,1.50,u{i},s" for i in range(20))])
    + "\n"
)
ROW = dict(zip(REES_COLS, GOOD.splitlines()[1].split(","), strict=True))


def _gz_cut() -> bytes:
    data = gzip.compress(GOOD.encode() * 50, mtime=0)
    return data[: len(data) // 2]


def _pq(rows: list[dict]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


def _garbage(n: int) -> bytes:
    r = random.Random(SEED)
    return bytes(r.choice([b for b in range(1, 256) if b not in b"\n\r,`"]) for _ in range(n))


# (case, source, files, what the SourceError says). Each CSV file is judged by its own header and each
# Parquet file by its own columns: the file lacking what the mapping reads is named, whatever its size or
# place in the folder (before: the largest CSV file's first line was every file's header, so a good file
# was blamed or a backtick there stopped with an AnalysisException; a Parquet file other than the first
# with other columns was read as NULLs, its values lost).
# fmt: off
WHOLE_FILE_DEFECTS: list[tuple[str, str, dict[str, bytes], str]] = [
    ("truncated gzip", "fz_csv",
     {"a.csv": GOOD.encode(), "b.csv.gz": _gz_cut()},
     r"(FAILED_READ_FILE.*|cannot read the header line of \S+)/b\.csv\.gz"),
    ("only a 0-byte file", "fz_csv",
     {"a.csv": b""}, r"no columns found in the csv files .*a\.csv \(empty file\?\)"),
    ("a column missing", "fz_csv",
     {"a.csv": GOOD.encode(), "b.csv": HEADER.replace(",brand", "").encode()},
     r"column `brand` .* at \S+/b\.csv; columns there"),
    ("a column renamed, larger file", "fz_csv",
     {"a.csv": GOOD.encode()[:200], "b.csv": GOOD.replace("brand", "maker").encode()},
     r"column `brand` .* at \S+/b\.csv; columns there: \[.*'maker'"),
    ("binary garbage, smaller", "fz_csv",
     {"a.csv": GOOD.encode(), "b.csv": _garbage(300)}, r"column `user_id` .* at \S+/b\.csv; columns there"),
    ("binary garbage, larger", "fz_csv",
     {"a.csv": GOOD.encode(), "b.csv": _garbage(5000)},
     r"column `user_id` used by sources\.fz_csv\.fields\.user_id .* at \S+/b\.csv; columns there"),
    ("binary garbage with a backtick, larger", "fz_csv",
     {"a.csv": GOOD.encode(), "b.csv": b"ab`" + _garbage(5000)},
     r"column `user_id` used by sources\.fz_csv\.fields\.user_id .* at \S+/b\.csv; columns there"),
    ("only a 0-byte file", "fz_json",
     {"a.jsonl": b""}, r"no columns found in the json files .*a\.jsonl \(empty file\?\)"),
    ("keys differing in case", "fz_json",
     {"a.jsonl": (json.dumps(ROW) + "\n" + json.dumps({"USER_ID": "u"})).encode()},
     r"COLUMN_ALREADY_EXISTS.*`user_id`"),
    ("binary garbage", "fz_parquet",
     {"a.parquet": _pq([ROW]), "b.parquet": _garbage(3000)},
     r"cannot read the Parquet footer of \S+/b\.parquet:"),
    ("truncated", "fz_parquet",
     {"a.parquet": _pq([ROW]), "b.parquet": _pq([ROW] * 50)[:-100]},
     r"cannot read the Parquet footer of \S+/b\.parquet:"),
    ("other columns first", "fz_parquet",
     {"a.parquet": _pq([{"foo": "1"}]), "b.parquet": _pq([ROW])},
     r"column `user_id` .* at \S+/a\.parquet; columns there: \['foo'\]"),
    ("other columns, not first", "fz_parquet",
     {"a.parquet": _pq([ROW]), "b.parquet": _pq([{"foo": "1"}])},
     r"column `user_id` .* at \S+/b\.parquet; columns there: \['foo'\]"),
    ("a column of another type", "fz_parquet",
     {"a.parquet": _pq([ROW]), "b.parquet": _pq([{**ROW, "price": 1.5}])},
     r"PARQUET_COLUMN_DATA_TYPE_MISMATCH.*/b\.parquet.*\[price\]"),
]
# fmt: on


def test_whole_file_defects_stop_with_an_error_naming_the_file_and_write_nothing(
    spark: SparkSession, tmp_path: Path
) -> None:
    problems = []
    for i, (case, source, files, pattern) in enumerate(WHOLE_FILE_DEFECTS):
        cfg = _config(tmp_path / str(i))
        folder = tmp_path / str(i) / "landing" / source / f"date={D1}"
        folder.mkdir(parents=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        try:
            ingest_job.run(spark, cfg, source=source, start=D1, end=D1, run_id="whole-file")
            problems.append(f"{source} {case}: no error")
        except SourceError as exc:
            if not re.search(pattern, str(exc)):
                problems.append(f"{source} {case}: {exc}")
        except Exception as exc:  # anything but a SourceError is a finding
            problems.append(f"{source} {case}: {type(exc).__name__}: {str(exc)[:300]}")
        if tables.exists(spark, cfg.table("bronze_events")) or tables.exists(
            spark, cfg.table("bronze_events_rejected")
        ):
            problems.append(f"{source} {case}: wrote a table")
    assert not problems, "\n".join(problems)
