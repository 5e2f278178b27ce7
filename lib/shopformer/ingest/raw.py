"""Landing files -> raw rows: every source column a string, plus the reserved columns ``sources.RESERVED``.

CSV and Parquet files are read by their own layout (``layouts``): files are grouped by header line or
column names, each group is read with its own columns and checked against the mapping (a column the mapping
needs and a group lacks names that group's files), and the groups are unioned by name, so a file with an
extra or reordered column keeps its values in ``_raw_record``. CSV bytes are read losslessly (ISO-8859-1)
and each value is checked to be UTF-8: a line that is not is ``_corrupt_record``, rather than decoded to
U+FFFD and merged with another event (unless the mapping sets another ``options.encoding``). JSON lines are
read as text and parsed per line. Lazy after the probes and the schema reads.

A run over many landing dates (a backfill) groups the files of all its dates by layout: the per-layout work
(decoding expressions, the mapping check) happens once, not once per folder; only the file read is per
date (it stamps ``_ingest_date``), and those reads are unioned as a balanced tree (a chain of n unions
costs n^2 plan analysis). Measured on 43 folders: 19 s of planning before, see docs/ingestion.md.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping, Sequence

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from shopformer.errors import ConfigError, SourceError
from shopformer.ingest import layouts
from shopformer.ingest.sources import (
    CORRUPT,
    RESERVED,
    SourceMapping,
    check_expressions,
    load,
    text_schema,
)
from shopformer.ingest.sources import INGEST_DATE as DAY
from shopformer.ingest.sources import quoted as q
from shopformer.ingest.sources import where_of as _where

LOSSLESS = "ISO-8859-1"  # one character per byte: the bytes of a line survive the CSV reader unchanged
Group = tuple[DataFrame, list[str], list[str]]  # (names + CORRUPT + _metadata + DAY, the names, its files)
Dated = Sequence[tuple[dt.date, Sequence[str]]]  # (landing date the rows become, its files) per read


class Loader:
    """Reads files of one layout: one reader per ingest date (``DAY`` stamped, ``_metadata`` kept as a
    column), unioned as a balanced tree."""

    def __init__(self, spark: SparkSession, batches: Dated) -> None:
        self.spark = spark
        self.day_of = {p: day for day, paths in batches for p in paths}

    def __call__(
        self, fmt: str, files: Sequence[str], options: Mapping[str, str], schema: StructType | None
    ) -> DataFrame:
        by_day: dict[dt.date, list[str]] = {}
        for f in files:
            by_day.setdefault(self.day_of[f], []).append(f)
        return union_all(
            [
                load(self.spark, fmt, paths, options, schema).select(
                    "*", F.col("_metadata"), F.lit(day).alias(DAY)
                )
                for day, paths in by_day.items()
            ]
        )


def union_all(frames: Sequence[DataFrame]) -> DataFrame:
    """Positional union of frames of one schema as a balanced tree (each union is analysed when built:
    a chain costs n^2, a tree n log n)."""
    if len(frames) == 1:
        return frames[0]
    mid = len(frames) // 2
    return union_all(frames[:mid]).union(union_all(frames[mid:]))


def read_raw(
    spark: SparkSession,
    m: SourceMapping,
    paths: list[str],
    ingest_date: dt.date,
    *,
    lookup_columns: Sequence[str] = (),
) -> DataFrame:
    """One landing date's files (``read_dated``)."""
    return read_dated(spark, m, [(ingest_date, paths)], lookup_columns=lookup_columns)


def read_dated(
    spark: SparkSession, m: SourceMapping, batches: Dated, *, lookup_columns: Sequence[str] = ()
) -> DataFrame:
    """The files of every batch as raw string columns plus ``RESERVED`` columns (``_ingest_date``: the
    batch's date); each layout group checked against the mapping (with the lookup's columns, joined
    later) before anything runs."""
    loader = Loader(spark, batches)
    paths = list(loader.day_of)
    if m.format == "parquet":
        groups = _parquet_groups(m, paths, loader)
    elif m.format == "csv":
        groups = _csv_groups(spark, m, paths, loader)
    else:
        groups = [_json_group(spark, m, paths, loader)]
    frames = []
    for df, names, files in groups:
        clash = sorted(set(names) & set(RESERVED))
        if clash:
            raise SourceError(f"files at {_where(files)} have column(s) {clash}, reserved for ingestion")
        if m.format != "json":  # JSON: one schema for the whole read, checked by the job
            _check_group(spark, m, names, lookup_columns, files)
        raw_json = F.to_json(F.struct(*[F.col(q(c)) for c in names]), {"ignoreNullFields": "false"})
        frames.append(
            df.select(
                *[F.col(q(c)) for c in names],
                F.col(CORRUPT),
                F.coalesce(F.col(CORRUPT), raw_json).alias("_raw_record"),
                F.col("_metadata.file_path").alias("_source_file"),
                F.col(DAY),
            )
        )
    return functools.reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


def _check_group(
    spark: SparkSession, m: SourceMapping, names: list[str], extra: Sequence[str], files: list[str]
) -> None:
    """Resolve the mapping against a group's columns (and the lookup's): analysis only, no job."""
    cols = list(dict.fromkeys([*names, *[c for c in extra if c not in names], *RESERVED]))
    empty = spark.createDataFrame([], StructType([StructField(c, StringType()) for c in cols]))
    check_expressions(empty, m, _where(files))


def _options(m: SourceMapping) -> dict[str, str]:
    return {k.lower(): v for k, v in m.options.items()}


def _csv_groups(spark: SparkSession, m: SourceMapping, paths: list[str], loader: Loader) -> list[Group]:
    """One group per distinct header line (or one for all files when ``columns`` is given)."""
    opts = _options(m)
    encoding = opts.get("encoding") or opts.get("charset")
    lossless = encoding is None or encoding.replace("-", "").replace("_", "").lower() == "utf8"
    base = {k: v for k, v in m.options.items() if k.lower() not in ("encoding", "charset")}
    base |= {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT, "encoding": LOSSLESS}
    if not lossless:
        base["encoding"] = _python_codec(encoding, m)
    if m.columns is not None or opts.get("header", "false").lower() != "true":
        names = (
            list(m.columns)
            if m.columns is not None
            else load(spark, "csv", paths, {**base, "inferSchema": "false"}, None).columns
        )
        df = loader("csv", paths, base, text_schema(names))
        return [(_decoded(df, names, names) if lossless else df, names, paths)]
    headers = layouts.header_lines(spark, paths, line_sep=opts.get("linesep"), comment=opts.get("comment"))
    found = layouts.csv_layouts(headers, opts, None if lossless else base["encoding"])
    if not found:
        raise SourceError(f"no columns found in the csv files at {_where(paths)} (empty file?)")
    groups = []
    for lay in found:
        files = list(lay.files)
        df = loader("csv", files, {**base, "enforceSchema": "false"}, text_schema(lay.checked))
        names = list(lay.names)
        groups.append((_decoded(df, list(lay.checked), names) if lossless else df, names, files))
    return groups


def _python_codec(encoding: str, m: SourceMapping) -> str:
    """A configured encoding must be one Python knows and ASCII-compatible (the header is split by bytes)."""
    try:
        ok = "a,\n".encode(encoding) == b"a,\n"
    except LookupError:
        ok = False
    if not ok:
        raise ConfigError(
            f"config key 'sources.{m.name}.options.encoding': {encoding!r} is not an ASCII-compatible "
            "encoding (UTF-8, ISO-8859-1, windows-1252 …)"
        )
    return encoding


def _bytes_as_text(c: Column) -> Column:
    """A value read ISO-8859-1 back to its bytes, as a string that may not be valid UTF-8."""
    return F.encode(c, LOSSLESS).cast("string")


def _decoded(df: DataFrame, read_as: list[str], names: list[str]) -> DataFrame:
    """Values as UTF-8; a row holding bytes that are not UTF-8 is ``_corrupt_record`` (its values with
    U+FFFD for those bytes, as a JSON object like any raw record), never silently another value."""
    raw = [_bytes_as_text(F.col(q(c))) for c in read_as]
    # one check per row: an ASCII separator keeps a cut sequence at the end of one value from pairing with
    # the next value's bytes, so the joined text is valid exactly when every value is
    valid = F.is_valid_utf8(F.concat_ws(",", *raw))
    values = [
        F.when(valid, r).otherwise(F.make_valid_utf8(r)).alias(n) for r, n in zip(raw, names, strict=True)
    ]
    as_json = F.to_json(F.struct(*values), {"ignoreNullFields": "false"})
    corrupt = F.make_valid_utf8(_bytes_as_text(F.col(CORRUPT)))
    return df.select(
        *values,
        F.coalesce(corrupt, F.when(~valid, as_json)).alias(CORRUPT),
        F.col("_metadata"),
        F.col(DAY),
    )


def _parquet_groups(m: SourceMapping, paths: list[str], loader: Loader) -> list[Group]:
    """One group per distinct set of columns, each read with its own schema and cast to strings."""
    found = layouts.parquet_layouts(layouts.parquet_columns(loader.spark, paths))
    if not found:
        raise SourceError(f"cannot read parquet files at {_where(paths)}: every file is empty (0 bytes)")
    groups = []
    for lay in found:
        df = loader("parquet", list(lay.files), m.options, None)
        names = [c for c in df.columns if c not in ("_metadata", DAY)]
        cols = [F.col(q(c)).cast("string").alias(c) for c in names]
        groups.append(
            (
                df.select(*cols, F.lit(None).alias(CORRUPT), F.col("_metadata"), F.col(DAY)),
                names,
                list(lay.files),
            )
        )
    return groups


def _json_group(spark: SparkSession, m: SourceMapping, paths: list[str], loader: Loader) -> Group:
    """JSON lines: the keys of every object read (schema inference), then each line parsed on its own."""
    opts = {**m.options, "mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    if m.columns is not None:
        names = list(m.columns)
    else:
        found = load(spark, "json", paths, {**m.options, "primitivesAsString": "true"}, None).columns
        names = [c for c in found if c != CORRUPT]
        if names:
            names += _absent_keys(m, names)
        elif CORRUPT in found:  # only malformed lines: each is a malformed_record reject
            names = _referenced(spark, m)
    if not names:
        raise SourceError(f"no columns found in the json files at {_where(paths)} (empty file?)")
    return _json_lines(loader, paths, opts, names), names, paths


def _json_lines(loader: Loader, paths: list[str], opts: Mapping[str, str], names: list[str]) -> DataFrame:
    """JSON lines read as text and parsed per line, so no line is lost: Spark's JSON reader keeps only the
    first value of a line holding two objects (or one followed by text) and drops the rest silently.
    Such a line, and one that is not valid UTF-8 (which the JSON reader rejected too), is
    ``_corrupt_record`` with the whole line. Blank lines are skipped, as the JSON reader does."""
    text = loader("text", paths, {k: v for k, v in opts.items() if k in ("lineSep",)}, None)
    line = F.col("value")
    one_value = F.coalesce(F.json_array_length(F.concat(F.lit("["), line, F.lit("]"))) == 1, F.lit(False))
    corrupt = F.when(one_value & F.is_valid_utf8(line), F.col(f"j.{CORRUPT}")).otherwise(line)
    return (
        text.where(line.rlike("[^ \\t\\r]"))  # JSON whitespace only: no value, skipped (as the reader does)
        .select(
            line, F.from_json(line, text_schema(names), dict(opts)).alias("j"), F.col("_metadata"), F.col(DAY)
        )
        .select(
            *[F.col("j")[c].alias(c) for c in names], corrupt.alias(CORRUPT), F.col("_metadata"), F.col(DAY)
        )
    )


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _absent_keys(m: SourceMapping, names: list[str]) -> list[str]:
    """Keys a JSON mapping reads as a bare column that no object of the read holds: JSON writers often
    omit null values, so an absent key is null (the explicit schema then reads it as such), not a missing
    column."""
    wanted = [sql for sql in m.expressions.values() if _IDENT.fullmatch(sql)]
    return sorted({c for c in wanted if c not in names})


def _referenced(spark: SparkSession, m: SourceMapping) -> list[str]:
    """Every column the mapping's expressions name (found by resolving them against a growing empty
    frame): the columns of a read of only malformed lines, whose rows are all rejected anyway."""
    names: list[str] = []
    for _ in range(200):  # each round adds one column
        empty = spark.createDataFrame([], text_schema([*names, *[c for c in RESERVED if c != CORRUPT]]))
        missing = None
        for sql in m.expressions.values():
            try:
                empty.select(F.expr(sql))
            except AnalysisException as exc:
                param = (exc.getMessageParameters() or {}).get("objectName", "")
                missing = param.strip("`") if re.fullmatch(r"`[^`.]+`", param) else None
                if missing:
                    break
        if not missing or missing in names:
            return names
        names.append(missing)
    return names
