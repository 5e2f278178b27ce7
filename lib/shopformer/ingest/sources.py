"""Source mappings (``sources.<name>`` in conf), the lookup side file and the checks of a mapping against
the columns read; ``ingest.raw`` turns landing files into raw rows.

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
from shopformer.ingest.layouts import first_line
from shopformer.schemas import EVENT_TYPES

CORRUPT = "_corrupt_record"
INGEST_DATE = "_ingest_date"  # the landing date a raw row was read for
RESERVED = (CORRUPT, "_raw_record", "_source_file", INGEST_DATE)
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


def where_of(path: Paths) -> str:
    if isinstance(path, str):
        return path
    return path[0] if len(path) == 1 else f"{path[0]} (and {len(path) - 1} more files)"


def load(spark: SparkSession, fmt: str, path: Paths, options: Mapping[str, str], schema: StructType | None):
    reader = spark.read.format(fmt).options(**options)
    if schema is not None:
        reader = reader.schema(schema)
    try:
        return reader.load(path)
    except (CapturedException, Py4JJavaError) as exc:  # a file Spark cannot even list or infer from
        if resource_failure(exc) is not None:  # out of memory is not a bad file (errors.classify: exit 5)
            raise
        raise SourceError(f"cannot read {fmt} files at {where_of(path)}: {first_line(exc)}") from exc


def quoted(name: str) -> str:
    """A column name quoted for Spark (a CSV header may hold a backtick)."""
    return "`" + name.replace("`", "``") + "`"


def text_schema(names: tuple[str, ...] | list[str]) -> StructType:
    return StructType([StructField(c, StringType()) for c in names] + [StructField(CORRUPT, StringType())])


def read_lookup(spark: SparkSession, cfg: Config, m: SourceMapping) -> DataFrame | None:
    """The mapping's side file, every column a string (``None`` when the mapping has no lookup)."""
    if m.lookup is None:
        return None
    lk = m.lookup
    path = resolve_path(cfg, lk.path, f"sources.{m.name}.lookup.path")
    options = {**lk.options, "inferSchema": "false"} if lk.format == "csv" else dict(lk.options)
    if lk.format == "json":
        options["primitivesAsString"] = "true"
    df = load(spark, lk.format, path, options, None)
    if lk.key not in df.columns:
        raise SourceError(f"lookup key column '{lk.key}' (sources.{m.name}.lookup.key) not in {path}")
    return df.select(*[F.col(quoted(c)).cast("string").alias(c) for c in df.columns])


def check_expressions(raw: DataFrame, m: SourceMapping, path: str) -> None:
    """Resolve every mapping expression against the raw columns: a missing column names the file."""
    for key, sql in m.expressions.items():
        try:
            raw.select(F.expr(sql))
        except AnalysisException as exc:
            params = exc.getMessageParameters() or {}
            cond = exc.getCondition() or ""
            if cond.startswith("UNRESOLVED_COLUMN"):
                have = [c if len(c) <= 80 else c[:80] + "…" for c in raw.columns if c not in RESERVED]
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
