"""Each landing file read by its own layout, and bytes that are not UTF-8 (issue 16 item 6: what the fuzzing
found). Raw rows straight from ``raw.read_raw``, classified as the job stages them; no table is written."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from shopformer.errors import SourceError
from shopformer.ingest import layouts
from shopformer.ingest import transforms as ingest
from shopformer.ingest.raw import read_raw
from tests.ingest.helpers import HEADER, REES_COLS, classified, rees_mapping

pytestmark = pytest.mark.integration

D1 = dt.date(2024, 1, 1)
GOOD = "2024-01-01 10:00:00 UTC,view,p1,100,cat.a,acme,1.50,u1,s1"
ROW = dict(zip(REES_COLS, GOOD.split(","), strict=True))
OUT = "user_id string, reason string, raw_record string"


def _files(folder: Path, files: dict[str, bytes]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [str(folder / name) for name in sorted(files)]


def _raw_json(row: dict[str, str | None]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def test_a_csv_line_that_is_not_utf8_is_malformed_not_merged_with_another_event(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Two users whose ids differ only in a Latin-1 byte both decoded to U+FFFD: one event and a
    duplicate. Now each such line is a malformed_record with its values (U+FFFD for the bytes); the same
    letter as UTF-8 is an event; with ``options.encoding`` ISO-8859-1 the Latin-1 ids are read as such."""
    lines = [GOOD.replace("u1", "u\xfc").encode("latin-1"), GOOD.replace("u1", "u\xe9").encode("latin-1")]
    paths = _files(
        tmp_path / "a", {"a.csv": b"\n".join([HEADER.encode(), *lines, GOOD.replace("u1", "uü").encode()])}
    )
    m = rees_mapping()
    got = classified(read_raw(spark, m, paths, D1), m).select("user_id", "reason", "raw_record")
    bad = ("u\ufffd", "malformed_record", _raw_json({**ROW, "user_id": "u\ufffd"}))
    assertDataFrameEqual(got, spark.createDataFrame([bad, bad, ("uü", None, None)], OUT))

    latin = rees_mapping(options={"header": True, "encoding": "ISO-8859-1"})
    paths = _files(tmp_path / "b", {"a.csv": b"\n".join([HEADER.encode(), *lines])})
    got = classified(read_raw(spark, latin, paths, D1), latin).select("user_id", "reason", "raw_record")
    assertDataFrameEqual(got, spark.createDataFrame([("uü", None, None), ("ué", None, None)], OUT))


def test_each_csv_file_is_read_by_its_own_header(spark: SparkSession, tmp_path: Path) -> None:
    """The largest file's first line was every file's header: a larger file with an extra column made
    the good file fail, binary garbage with a backtick there stopped with an AnalysisException. Now the
    extra column (a backtick in its name, through a lookup join too) is read and kept in a reject's raw
    record, and the garbage file is named."""
    extra = "\n".join([f"{HEADER},no`te", *[f"{GOOD},n1", f"{GOOD.replace('view', 'click')},n2"] * 3]) + "\n"
    paths = _files(tmp_path / "a", {"a.csv": f"{HEADER}\n{GOOD}\n".encode(), "b.csv": extra.encode()})
    m = rees_mapping()
    lookup = spark.createDataFrame([("p1", "shelf 1")], "product_id string, shelf string")
    raw = read_raw(spark, m, paths, D1, lookup_columns=["shelf"])
    raw = raw.transform(ingest.join_lookup, lookup=lookup, key="product_id")
    got = classified(raw, m).select("user_id", "reason", "raw_record")
    click = ("u1", "unknown_event_type", _raw_json({**ROW, "event_type": "click", "no`te": "n2"}))
    assertDataFrameEqual(got, spark.createDataFrame([("u1", None, None)] * 4 + [click] * 3, OUT))

    garbage = bytes(range(1, 10)) + b"a`b,\xff\xfe`" + bytes(range(14, 200))
    paths = _files(tmp_path / "b", {"a.csv": f"{HEADER}\n{GOOD}\n".encode(), "c.csv": garbage})
    with pytest.raises(
        SourceError, match=r"column `user_id` used by sources\.shop\.fields\.user_id .* at \S+/c\.csv;"
    ):
        read_raw(spark, m, paths, D1)


def _pq(rows: list[dict]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue().to_pybytes()


def test_each_parquet_file_is_read_with_its_own_columns(spark: SparkSession, tmp_path: Path) -> None:
    """Spark read every Parquet file with the first file's schema: another file's extra column was
    dropped, a file of other columns read as NULLs (every value lost). Now the extra column is kept in a
    reject's raw record, and a file lacking the mapping's columns stops the read naming that file."""
    m = rees_mapping(format="parquet", options={})
    click = {**ROW, "event_type": "click", "note": "kept"}
    paths = _files(tmp_path / "a", {"a.parquet": _pq([ROW]), "b.parquet": _pq([click])})
    got = classified(read_raw(spark, m, paths, D1), m).select("user_id", "reason", "raw_record")
    expected = [("u1", None, None), ("u1", "unknown_event_type", _raw_json(click))]
    assertDataFrameEqual(got, spark.createDataFrame(expected, OUT))

    paths = _files(tmp_path / "b", {"a.parquet": _pq([ROW]), "b.parquet": _pq([{"foo": "1"}])})
    with pytest.raises(SourceError, match=r"column `user_id` .* at \S+/b\.parquet; columns there: \['foo'\]"):
        read_raw(spark, m, paths, D1)


def test_a_json_read_of_only_malformed_lines_rejects_each_line(spark: SparkSession, tmp_path: Path) -> None:
    """It stopped "no columns found (empty file?)" naming no line; now each line is a malformed_record."""
    lines = [b'{"user_id": "u1", "event_ti', b"42", b'{"user_id": "M\xfcller"}']
    paths = _files(tmp_path, {"a.jsonl": b"\n".join(lines) + b"\n"})
    m = rees_mapping(format="json", options={})
    got = classified(read_raw(spark, m, paths, D1), m).select("reason", "raw_record")
    texts = [x.decode("utf-8", "replace") for x in lines]
    assertDataFrameEqual(
        got, spark.createDataFrame([("malformed_record", t) for t in texts], OUT.split(", ", 1)[1])
    )


# ------------------------------------------------------------------ header lines (unit: no Spark)


def test_the_header_is_the_first_line_neither_blank_nor_a_comment() -> None:
    """As Spark's reader takes it: blank lines (Java's trim) and comment lines before it are skipped; the
    line is known only once it ends, or at the end of the file."""
    data = b"\r\n \t\n# note\nid,name\r\n1,a\n"
    assert layouts._header_line(data, False, None, b"#") == b"id,name"
    assert layouts._header_line(b"\n\nid,na", False, None, None) is None  # more may follow
    assert layouts._header_line(b"\n\nid,na", True, None, None) == b"id,na"
    assert layouts._header_line(b" \n\t", True, None, None) is None
    assert layouts._header_line(b"id|name||1|a", True, b"||", None) == b"id|name"


def test_header_names_are_split_as_the_mapping_says_and_a_bad_one_names_its_file() -> None:
    line = b'a,"b, c",d'
    found = layouts.csv_layouts({"x.csv": line, "y.csv": line, "z.csv": None}, {}, None)
    assert found == [layouts.Layout(("a", "b, c", "d"), ("a", "b, c", "d"), ("x.csv", "y.csv"))]
    latin = layouts.csv_layouts({"x.csv": "größe;id".encode()}, {"sep": ";"}, None)
    assert latin == [layouts.Layout(("größe", "id"), ("grÃ¶Ã\x9fe", "id"), ("x.csv",))]
    with pytest.raises(
        SourceError, match=r"CSV header of b\.csv has the column name 'ID' twice \(column 3\)"
    ):
        layouts.csv_layouts({"a.csv": b"id,x", "b.csv": b"id,name,ID"}, {}, None)
    with pytest.raises(SourceError, match=r"CSV header of a\.csv has an empty column name \(column 1\)"):
        layouts.csv_layouts({"a.csv": b",id"}, {}, None)
