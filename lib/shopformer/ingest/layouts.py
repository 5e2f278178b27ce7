"""Each landing file's own layout: a CSV file's header line, a Parquet file's columns.

Spark takes one file's header (CSV) or schema (Parquet) as every file's: a file with other columns was
blamed on a good file, failed with an ``AnalysisException``, or read as NULLs with its values lost. Here each
file is probed on the driver without a Spark job (the first line of a CSV file, a bounded read through the
Hadoop file system and its compression codec; the footer of a Parquet file) and files are grouped by layout,
so the reader can read each group with its own columns and name the files of a group that lacks one.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from py4j.protocol import Py4JJavaError
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.sql import SparkSession

from shopformer.errors import SourceError, resource_failure

CHUNK = 1024  # bytes of the first read for a header line; each further read is four times the last
MAX_HEADER = 1 << 20  # a first line longer than this is cut here (it is no header a mapping can use)
THREADS = 8  # files probed at once (an object store answers each read in tens of milliseconds)
_BOM = b"\xef\xbb\xbf"
_EOL = re.compile(rb"\r\n|\r|\n")
_BLANK = bytes(range(0x21))  # what Java's String.trim removes: Spark skips such lines before the header
T = TypeVar("T")


@dataclass(frozen=True)
class Layout:
    """Files that share one layout: column names as the mapping sees them, as Spark's reader checks them
    (the header decoded ISO-8859-1 when CSV is read losslessly, else the same), and the files."""

    names: tuple[str, ...]
    checked: tuple[str, ...]
    files: tuple[str, ...]


def first_line(exc: Exception) -> str:
    """The informative line of a Spark error (for a raw Py4J error: the innermost JVM cause)."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        cause = java
        while cause.getCause() is not None:
            cause = cause.getCause()
        text = str(cause.toString())
        if "FAILED_READ_FILE" not in text:  # the file name sits on the read error, not on its cause
            text = str(java.toString())
    else:
        text = str(exc)
    text = text.strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _each(paths: Sequence[str], probe: Callable[[str], T], what: str) -> dict[str, T]:
    """``probe`` of every file (a few at a time); a file that cannot be read is a SourceError naming it."""

    def one(path: str) -> T:
        try:
            return probe(path)
        except (CapturedException, Py4JJavaError) as exc:
            if resource_failure(exc) is not None:
                raise
            raise SourceError(f"cannot read the {what} of {path}: {first_line(exc)}") from exc

    with ThreadPoolExecutor(max_workers=min(THREADS, max(1, len(paths)))) as pool:
        return dict(zip(paths, pool.map(one, paths), strict=True))


def _header_line(data: bytes, eof: bool, line_sep: bytes | None, comment: bytes | None) -> bytes | None:
    """The first line that is neither blank nor a comment, once ``data`` holds all of it; else None."""
    parts = data.split(line_sep) if line_sep else _EOL.split(data)
    complete = parts if eof else parts[:-1]
    for line in complete:
        if line.strip(_BLANK) and not (comment and line.startswith(comment)):
            return line
    return None


def header_lines(
    spark: SparkSession, paths: Sequence[str], *, line_sep: str | None = None, comment: str | None = None
) -> dict[str, bytes | None]:
    """Each file's header: its first non-blank, non-comment line (BOM removed, as Spark does), decompressed
    by the codec its name says (``.gz`` …); None for a file without one (0 bytes, blank lines only)."""
    jvm, conf = spark.sparkContext._jvm, spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    assert jvm is not None
    codecs = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(conf)
    sep, mark = (line_sep.encode() if line_sep else None), (comment.encode() if comment else None)

    def probe(path: str) -> bytes | None:
        hpath = jvm.org.apache.hadoop.fs.Path(path)
        stream = hpath.getFileSystem(conf).open(hpath)
        try:
            codec = codecs.getCodec(hpath)
            if codec is not None:
                stream = codec.createInputStream(stream)
            return _read_header(stream, sep, mark)
        finally:
            stream.close()

    return _each(paths, probe, "header line")


def _read_header(stream: Any, sep: bytes | None, mark: bytes | None) -> bytes | None:
    """Read a JVM input stream until its header line ends (1 KiB first, four times more each time)."""
    data, size = b"", CHUNK
    while True:
        chunk = bytes(stream.readNBytes(size))  # py4j copies it: read little, a header is short
        data = chunk.removeprefix(_BOM) if not data else data + chunk  # a BOM starts a file only
        eof, size = len(chunk) < size or len(data) >= MAX_HEADER, min(size * 4, MAX_HEADER)
        line = _header_line(data[:MAX_HEADER], eof, sep, mark)
        if line is not None or eof:
            return line


def parquet_columns(spark: SparkSession, paths: Sequence[str]) -> dict[str, tuple[str, ...] | None]:
    """Each Parquet file's top-level column names from its footer; None for a 0-byte file (Spark skips it)."""
    jvm, conf = spark.sparkContext._jvm, spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    assert jvm is not None
    parquet = jvm.org.apache.parquet.hadoop

    def probe(path: str) -> tuple[str, ...] | None:
        source = parquet.util.HadoopInputFile.fromPath(jvm.org.apache.hadoop.fs.Path(path), conf)
        if source.getLength() == 0:
            return None
        reader = parquet.ParquetFileReader.open(source)
        try:
            schema = reader.getFileMetaData().getSchema()
            return tuple(str(schema.getFieldName(i)) for i in range(schema.getFieldCount()))
        finally:
            reader.close()

    return _each(paths, probe, "Parquet footer")


def split_header(line: str, options: Mapping[str, str]) -> list[str]:
    """A header line's column names, split as the mapping's CSV options say (``sep``, ``quote``,
    ``escape``); Spark's reader then checks them against each file's header (``enforceSchema=false``)."""
    sep = options.get("sep", options.get("delimiter", ","))
    sep = {"\\t": "\t", "\\u0001": "\u0001"}.get(sep, sep)
    quote, escape = options.get("quote", '"'), options.get("escape", "\\")
    if len(sep) != 1 or len(quote) > 1 or len(escape) > 1:
        return line.split(sep)
    kwargs: dict[str, Any] = (
        {"quoting": csv.QUOTE_NONE}
        if quote in ("", "\u0000")
        else {"quotechar": quote, "doublequote": escape in ("", quote)}
    )
    try:
        escapechar = escape if escape and escape != quote else None
        return next(csv.reader([line], delimiter=sep, escapechar=escapechar, **kwargs), [])
    except csv.Error:
        return line.split(sep)


def csv_layouts(
    headers: Mapping[str, bytes | None], options: Mapping[str, str], encoding: str | None
) -> list[Layout]:
    """Files grouped by header line; ``encoding`` None: read losslessly (UTF-8 names, ISO-8859-1 checked
    names). A header with an empty or repeated column name is a SourceError naming its file."""
    by_line: dict[bytes, list[str]] = {}
    for path, line in headers.items():
        if line is not None:
            by_line.setdefault(line, []).append(path)
    layouts = []
    for line, files in by_line.items():
        names = split_header(line.decode(encoding or "utf-8", "replace"), options)
        checked = split_header(line.decode("iso-8859-1"), options) if encoding is None else names
        seen: set[str] = set()
        for i, name in enumerate(names):
            if not name or name.lower() in seen:
                what = "an empty column name" if not name else f"the column name {name!r} twice"
                raise SourceError(f"the CSV header of {files[0]} has {what} (column {i + 1}): {names}")
            seen.add(name.lower())
        if len(checked) != len(names):
            checked = names
        layouts.append(Layout(tuple(names), tuple(checked), tuple(files)))
    return layouts


def parquet_layouts(columns: Mapping[str, tuple[str, ...] | None]) -> list[Layout]:
    """Files grouped by their column names (0-byte files left out: they hold no rows)."""
    by_names: dict[tuple[str, ...], list[str]] = {}
    for path, names in columns.items():
        if names is not None:
            by_names.setdefault(names, []).append(path)
    return [Layout(names, names, tuple(files)) for names, files in by_names.items()]
