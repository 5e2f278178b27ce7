"""Source mappings (``sources.<name>`` in conf) and the readers that turn landing files into raw rows.

Everything here that touches files needs a SparkSession; the pure transforms live in ``ingest``.
A raw frame holds every source column as a string plus the reserved columns in ``RESERVED``; a mapping
or a file that cannot work fails here, before anything is written, naming the key, column or path.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from shopformer.config import Config
from shopformer.errors import ConfigError, SourceError, resource_failure
from shopformer.schemas import EVENT_TYPES

CORRUPT = "_corrupt_record"
RESERVED = (CORRUPT, "_raw_record", "_source_file", "_ingest_date")
CANONICAL_FIELDS = (
    "user_id",
    "event_time",
    "event_type",
    "item_id",
    "category",
    "brand",
    "price",
    "regular_price",
    "quantity",
    "source_session_id",
    "item_title",
)
REQUIRED_FIELDS = ("user_id", "event_time", "event_type", "item_id")
# Reason codes the ingest itself assigns; a mapping's ``exclude`` codes must not reuse them.
BUILTIN_REASONS = (
    "malformed_record",
    "missing_user_id",
    "missing_item_id",
    "bad_event_time",
    "event_time_in_future",
    "event_time_too_old",
    "unknown_event_type",
    "bad_price",
    "negative_price",
    "bad_regular_price",
    "negative_regular_price",
    "bad_quantity",
)
FORMATS = ("csv", "json", "parquet")
_KEYS = {
    "format",
    "options",
    "columns",
    "path",
    "time_format",
    "time_zone",
    "fields",
    "event_types",
    "exclude",
    "lookup",
}
_LOOKUP_KEYS = {"path", "format", "options", "key"}
_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_OFFSET = re.compile(r"^[+-]\d{2}:\d{2}$")


@dataclass(frozen=True)
class Lookup:
    """A side file joined on ``key`` (e.g. an item table holding category and brand)."""

    path: str
    format: str
    options: Mapping[str, str]
    key: str


@dataclass(frozen=True)
class SourceMapping:
    """How one raw format becomes canonical events; parsed and checked from ``sources.<name>``."""

    name: str
    format: str
    path: str
    fields: Mapping[str, str]
    event_types: Mapping[str, str]
    time_format: tuple[str, ...]
    time_zone: str = "UTC"
    options: Mapping[str, str] = field(default_factory=dict)
    columns: tuple[str, ...] | None = None
    exclude: Mapping[str, str] = field(default_factory=dict)
    lookup: Lookup | None = None

    @property
    def expressions(self) -> dict[str, str]:
        """Every SQL snippet of the mapping by its config key (for column checks)."""
        return {
            **{f"sources.{self.name}.fields.{k}": v for k, v in self.fields.items()},
            **{f"sources.{self.name}.exclude.{k}": v for k, v in self.exclude.items()},
        }


def _str_map(value: Any, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
    return {str(k): _option(v) for k, v in value.items()}


def _option(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_time_zone(tz: str, key: str) -> None:
    if tz.upper() == "UTC" or _OFFSET.match(tz):
        return
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"config key '{key}': unknown time zone {tz!r}") from exc


def _parse_lookup(value: Any, key: str) -> Lookup | None:
    if value is None:
        return None
    spec = _str_map(value, key)
    unknown = set(spec) - _LOOKUP_KEYS
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in '{key}'")
    for needed in ("path", "key"):
        if not spec.get(needed):
            raise ConfigError(f"missing config key '{key}.{needed}'")
    fmt = spec.get("format", "csv")
    if fmt not in FORMATS:
        raise ConfigError(f"config key '{key}.format' must be one of {FORMATS}, got {fmt!r}")
    options = _str_map(value.get("options"), f"{key}.options")
    return Lookup(path=spec["path"], format=fmt, options=options, key=spec["key"])


def _parse_fields(section: Mapping[str, Any], prefix: str) -> dict[str, str]:
    fields = _str_map(section.get("fields"), f"{prefix}.fields")
    unknown = set(fields) - set(CANONICAL_FIELDS)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in '{prefix}.fields'")
    for name in REQUIRED_FIELDS:
        if not fields.get(name, "").strip():
            raise ConfigError(f"missing config key '{prefix}.fields.{name}'")
    return fields


def _parse_event_types(section: Mapping[str, Any], prefix: str) -> dict[str, str]:
    types = _str_map(section.get("event_types"), f"{prefix}.event_types")
    if not types:
        raise ConfigError(f"missing config key '{prefix}.event_types' (source type -> canonical type)")
    for raw, canonical in types.items():
        if canonical not in EVENT_TYPES:
            raise ConfigError(
                f"config key '{prefix}.event_types.{raw}' maps to {canonical!r}, not one of {EVENT_TYPES}"
            )
    return types


def _parse_exclude(section: Mapping[str, Any], prefix: str) -> dict[str, str]:
    exclude = _str_map(section.get("exclude"), f"{prefix}.exclude")
    for code in exclude:
        if not _CODE.match(code) or code in BUILTIN_REASONS:
            raise ConfigError(
                f"config key '{prefix}.exclude.{code}': a reason code must be snake_case and not one of "
                f"the built-in codes {BUILTIN_REASONS}"
            )
    return exclude


def parse_mapping(name: str, section: Mapping[str, Any]) -> SourceMapping:
    """Check a ``sources.<name>`` section and build the mapping; errors name the offending key."""
    prefix = f"sources.{name}"
    if not _NAME.match(name):
        raise ConfigError(f"source name {name!r} may hold only letters, digits, '_', '.', '-'")
    unknown = set(section) - _KEYS
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in '{prefix}' (known: {sorted(_KEYS)})")
    fmt = str(section.get("format", "csv"))
    if fmt not in FORMATS:
        raise ConfigError(f"config key '{prefix}.format' must be one of {FORMATS}, got {fmt!r}")
    if not section.get("path"):
        raise ConfigError(f"missing config key '{prefix}.path'")
    columns = section.get("columns")
    if columns is not None and (not isinstance(columns, list) or not columns):
        raise ConfigError(f"config key '{prefix}.columns' must be a non-empty list of column names or null")
    formats = section.get("time_format")
    formats = [formats] if isinstance(formats, str) else formats
    if not formats or not all(isinstance(f, str) and f for f in formats):
        raise ConfigError(f"config key '{prefix}.time_format' must be a pattern or a list of patterns")
    tz = str(section.get("time_zone") or "UTC")
    _check_time_zone(tz, f"{prefix}.time_zone")
    return SourceMapping(
        name=name,
        format=fmt,
        path=str(section["path"]),
        fields=_parse_fields(section, prefix),
        event_types=_parse_event_types(section, prefix),
        time_format=tuple(formats),
        time_zone=tz,
        options=_str_map(section.get("options"), f"{prefix}.options"),
        columns=tuple(str(c) for c in columns) if columns else None,
        exclude=_parse_exclude(section, prefix),
        lookup=_parse_lookup(section.get("lookup"), f"{prefix}.lookup"),
    )


def load_mapping(cfg: Config, name: str) -> SourceMapping:
    return parse_mapping(name, cfg.section(f"sources.{name}"))


def resolve_path(cfg: Config, template: str, key: str, day: dt.date | None = None) -> str:
    """Expand ``{landing}``/``{root}``/``{warehouse}`` and ``{date}`` in a mapping path."""
    return cfg.expand(template, key, **({} if day is None else {"date": day.isoformat()}))


Paths = str | list[str]  # a folder or file, or the list of files a run reads (ingest.manifest)


def _where(path: Paths) -> str:
    if isinstance(path, str):
        return path
    return path[0] if len(path) == 1 else f"{path[0]} (and {len(path) - 1} more files)"


def _load(spark: SparkSession, fmt: str, path: Paths, options: Mapping[str, str], schema: StructType | None):
    reader = spark.read.format(fmt).options(**options)
    if schema is not None:
        reader = reader.schema(schema)
    try:
        return reader.load(path)
    except (CapturedException, Py4JJavaError) as exc:  # a file Spark cannot even list or infer from
        if resource_failure(exc) is not None:  # out of memory is not a bad file (errors.classify: exit 5)
            raise
        raise SourceError(f"cannot read {fmt} files at {_where(path)}: {first_line(exc)}") from exc


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


def _text_schema(names: tuple[str, ...] | list[str]) -> StructType:
    return StructType([StructField(c, StringType()) for c in names] + [StructField(CORRUPT, StringType())])


def _read_text_format(spark: SparkSession, m: SourceMapping, path: Paths) -> tuple[DataFrame, list[str]]:
    """CSV / JSON lines: all-string schema + ``_corrupt_record`` in PERMISSIVE mode."""
    opts = {**m.options, "mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    if m.columns is not None:
        names = list(m.columns)
    elif m.format == "csv":
        # Only the header line is read here; inferSchema off keeps every column a string.
        names = _load(spark, "csv", path, {**m.options, "inferSchema": "false"}, None).columns
        opts["enforceSchema"] = "false"  # every file's header must then match, else the read fails
    else:
        names = _load(spark, "json", path, {**m.options, "primitivesAsString": "true"}, None).columns
        names = [c for c in names if c != CORRUPT]
        names += _absent_keys(m, names)
    if not names:
        raise SourceError(f"no columns found in the {m.format} files at {_where(path)} (empty file?)")
    if m.format == "json":
        return _json_lines(spark, path, opts, names), names
    return _load(spark, m.format, path, opts, _text_schema(names)), names


def _json_lines(spark: SparkSession, path: Paths, opts: Mapping[str, str], names: list[str]) -> DataFrame:
    """JSON lines read as text and parsed per line, so no line is lost: Spark's JSON reader keeps only the
    first value of a line holding two objects (or one followed by text) and drops the rest silently.
    Such a line, and one that is not valid UTF-8 (which the JSON reader rejected too), is
    ``_corrupt_record`` with the whole line. Blank lines are skipped, as the JSON reader does."""
    text = _load(spark, "text", path, {k: v for k, v in opts.items() if k in ("lineSep",)}, None)
    line = F.col("value")
    one_value = F.coalesce(F.json_array_length(F.concat(F.lit("["), line, F.lit("]"))) == 1, F.lit(False))
    corrupt = F.when(one_value & F.is_valid_utf8(line), F.col(f"j.{CORRUPT}")).otherwise(line)
    return (
        text.where(line.rlike("[^ \\t\\r]"))  # JSON whitespace only: no value, skipped (as the reader does)
        .select(line, F.from_json(line, _text_schema(names), dict(opts)).alias("j"), F.col("_metadata"))
        .select(*[F.col("j")[c].alias(c) for c in names], corrupt.alias(CORRUPT), F.col("_metadata"))
    )


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _absent_keys(m: SourceMapping, names: list[str]) -> list[str]:
    """Keys a JSON mapping reads as a bare column that no object of the read holds: JSON writers often
    omit null values, so an absent key is null (the explicit schema then reads it as such), not a missing
    column. Only when the read found some columns (a file of broken lines still says "empty file?")."""
    wanted = [sql for sql in m.expressions.values() if _IDENT.fullmatch(sql)]
    return sorted({c for c in wanted if c not in names}) if names else []


def read_raw(spark: SparkSession, m: SourceMapping, path: Paths, ingest_date: dt.date) -> DataFrame:
    """One landing folder (or the files listed) as raw string columns plus ``RESERVED`` columns (lazy after
    the header)."""
    if m.format == "parquet":
        df = _load(spark, "parquet", path, m.options, None)
        names = list(df.columns)
        df = df.select(*[F.col(f"`{c}`").cast("string").alias(c) for c in names], F.lit(None).alias(CORRUPT))
    else:
        df, names = _read_text_format(spark, m, path)
    clash = sorted(set(names) & set(RESERVED))
    if clash:
        raise SourceError(f"files at {_where(path)} have column(s) {clash}, reserved for ingestion")
    raw_json = F.to_json(F.struct(*[F.col(f"`{c}`") for c in names]), {"ignoreNullFields": "false"})
    return df.select(
        *[F.col(f"`{c}`") for c in names],
        F.col(CORRUPT),
        F.coalesce(F.col(CORRUPT), raw_json).alias("_raw_record"),
        F.col("_metadata.file_path").alias("_source_file"),
        F.lit(ingest_date).alias("_ingest_date"),
    )


def read_lookup(spark: SparkSession, cfg: Config, m: SourceMapping) -> DataFrame | None:
    """The mapping's side file, every column a string (``None`` when the mapping has no lookup)."""
    if m.lookup is None:
        return None
    lk = m.lookup
    path = resolve_path(cfg, lk.path, f"sources.{m.name}.lookup.path")
    options = {**lk.options, "inferSchema": "false"} if lk.format == "csv" else dict(lk.options)
    if lk.format == "json":
        options["primitivesAsString"] = "true"
    df = _load(spark, lk.format, path, options, None)
    if lk.key not in df.columns:
        raise SourceError(f"lookup key column '{lk.key}' (sources.{m.name}.lookup.key) not in {path}")
    return df.select(*[F.col(f"`{c}`").cast("string").alias(c) for c in df.columns])


def check_expressions(raw: DataFrame, m: SourceMapping, path: str) -> None:
    """Resolve every mapping expression against the raw columns: a missing column names the file."""
    for key, sql in m.expressions.items():
        try:
            raw.select(F.expr(sql))
        except AnalysisException as exc:
            params = exc.getMessageParameters() or {}
            cond = exc.getCondition() or ""
            if cond.startswith("UNRESOLVED_COLUMN"):
                have = [c for c in raw.columns if c not in RESERVED]
                raise SourceError(
                    f"column {params.get('objectName')} used by {key} ({sql!r}) is not in the files at "
                    f"{path}; columns there: {have}"
                ) from exc
            raise ConfigError(f"config key '{key}': invalid SQL {sql!r}: {first_line(exc)}") from exc


def export_workbook(xlsx: str, folder: str) -> Any:
    """Every sheet of an Excel workbook as one CSV file in ``folder`` (how a spreadsheet delivery such as
    UCI Online Retail lands; pandas writes floats as exported, e.g. Customer ID "12417.0"). Returns the
    pandas frame written.
    Needs ``openpyxl``; the workbook is small by nature (Excel caps a sheet at 1,048,576 rows)."""
    import pandas as pd

    sheets = pd.read_excel(xlsx, sheet_name=None, engine="openpyxl")
    pdf = pd.concat(sheets.values(), ignore_index=True)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    pdf.to_csv(out / "orders.csv", index=False)
    return pdf
