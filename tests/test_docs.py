"""The reference docs stay true: every table column and every configuration key the code has is documented.

A new column or conf key without a line in docs/tables.md / docs/configuration.md fails here, so the
references SQL users and operators read cannot silently fall behind the code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyspark.sql import SparkSession
from pyspark.sql.types import StructType

from shopformer import schemas
from shopformer.features.snapshots import snapshot_schema

DOCS = Path(__file__).resolve().parents[1] / "docs"
CONF = Path(__file__).resolve().parents[1] / "conf" / "base.yaml"

TABLE_SCHEMAS: dict[str, StructType] = {
    "bronze.events": schemas.BRONZE_EVENTS,
    "bronze.events_rejected": schemas.BRONZE_REJECTED,
    "silver.sessions": schemas.SILVER_SESSIONS,
    "silver.published_dates": schemas.SILVER_PUBLISHED_DATES,
    "gold.vocabularies": schemas.GOLD_VOCABULARIES,
    "gold.item_embeddings": schemas.GOLD_ITEM_EMBEDDINGS,
    "scores.user_scores": schemas.SCORES_USER_SCORES,
    "scores.user_embeddings": schemas.SCORES_USER_EMBEDDINGS,
    "scores.user_next_items": schemas.SCORES_USER_NEXT_ITEMS,
    "scores.score_quality": schemas.SCORES_SCORE_QUALITY,
    "scores.published_nights": schemas.SCORES_PUBLISHED_NIGHTS,
}


def section(text: str, title: str) -> str:
    """The body of the ``## <title>`` section (up to the next ``## ``)."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert m, f"no '## {title}' section"
    return m.group(1)


def leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict) or not node:
        return [prefix]
    return [k for key, v in node.items() for k in leaf_keys(v, f"{prefix}.{key}" if prefix else str(key))]


def test_section_lookup_fails_on_a_missing_title() -> None:
    with pytest.raises(AssertionError, match="no '## nope' section"):
        section("## a\nx\n", "nope")


@pytest.mark.parametrize("table", sorted(TABLE_SCHEMAS))
def test_every_column_of_a_table_is_in_the_table_reference(table: str) -> None:
    body = section((DOCS / "tables.md").read_text(), table)
    missing = [f.name for f in TABLE_SCHEMAS[table].fields if f"`{f.name}`" not in body]
    assert missing == [], f"docs/tables.md '## {table}' lacks {missing}"


def test_silver_events_documents_what_it_adds_to_bronze() -> None:
    body = section((DOCS / "tables.md").read_text(), "silver.events")
    added = [f.name for f in schemas.SILVER_EVENTS.fields if f.name not in schemas.BRONZE_EVENTS.names]
    assert added and [c for c in added if f"`{c}`" not in body] == []


def test_every_snapshot_column_is_in_the_snapshots_doc(spark: SparkSession) -> None:  # DDL needs a JVM
    text = (DOCS / "snapshots.md").read_text()
    # Per-window aggregates are documented once as `<metric>_wd`.
    names = {re.sub(r"_\d+d$", "_wd", f.name) for f in snapshot_schema([7, 30, 90]).fields}
    assert sorted(n for n in names if f"`{n}`" not in text) == []


def test_every_configuration_key_is_in_the_configuration_reference() -> None:
    base = yaml.safe_load(CONF.read_text())
    keys = [k for k in leaf_keys(base) if not k.startswith("sources.")]
    text = (DOCS / "configuration.md").read_text()
    assert len(keys) > 80
    # A mapping value (``vocab.max_size: {item: …}``) is documented as one key.
    prefixes = [[".".join(k.split(".")[:i]) for i in range(2, k.count(".") + 2)] for k in keys]
    assert [k for k, ps in zip(keys, prefixes, strict=True) if not any(f"`{p}`" in text for p in ps)] == []
