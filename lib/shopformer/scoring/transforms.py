"""Nightly scoring transforms: gold.user_snapshots rows -> model outputs -> scores.* rows.

``score_snapshots`` runs the model inside an iterator pandas UDF (``mapInPandas``): each Python worker loads
the checkpoint once (``load_model`` is cached per process and path) from the file Spark shipped with
``SparkContext.addFile``, so the same code runs in local mode and on a cluster. The other transforms shape
the scored rows into the three tables. All are lazy DataFrame -> DataFrame; ``scoring.job`` does the actions.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    FloatType,
    StringType,
    StructField,
    StructType,
)

from shopformer.errors import ShopformerError
from shopformer.features.sequences import EVENT_TYPE_IDS
from shopformer.schemas import (
    REASON,
    SCORES_USER_EMBEDDINGS,
    SCORES_USER_NEXT_ITEMS,
    SCORES_USER_SCORES,
    SEQ_FLOAT_COLUMNS,
    SEQ_INT_COLUMNS,
    SNAPSHOT_KEYS,
    names,
    require_columns,
)

log = logging.getLogger(__name__)

KEYS = SNAPSHOT_KEYS
# Segments by ascending elasticity tercile: the most negative third reacts most to price.
SEGMENTS = ("high", "medium", "low")

# What the UDF returns per snapshot row: raw model outputs, before the null rule and segments.
SCORED = StructType(
    [
        StructField("source", StringType(), False),
        StructField("user_id", StringType(), False),
        StructField("as_of_date", DateType(), False),
        StructField("has_views", BooleanType(), False),
        StructField("propensity", DoubleType(), False),
        StructField("churn", DoubleType(), False),
        StructField("price_elasticity", DoubleType(), False),
        StructField("user_vector", ArrayType(FloatType()), False),
        StructField("next_items", ArrayType(StringType()), False),
        StructField("propensity_reasons", ArrayType(REASON), True),
        StructField("churn_reasons", ArrayType(REASON), True),
    ]
)


@dataclass(frozen=True)
class ScoringSpec:
    """What a Python worker needs to load and run the model (plain values: it travels in the UDF)."""

    checkpoint_file: str  # name given to SparkContext.addFile; SparkFiles.get resolves it on the worker
    aggregate_names: tuple[str, ...]
    top_k: int = 10
    min_item_id: int = 1  # first frequent item id: padding, missing and hashed ids are never suggested
    torch_threads: int = 1
    reasons: int = 3  # drivers kept per score (docs/scoring.md "Reasons"); 0: none (null columns)


@dataclass(frozen=True)
class Lineage:
    """Which model and run produced a row (stored in every scores.* row)."""

    model_name: str
    model_version: str
    run_id: str


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint loaded in one process: the network, its ``extra`` and the id -> item token map."""

    model: Any
    extra: Mapping[str, Any]
    item_tokens: Mapping[int, str]


_SHIPPED = re.compile(r"model-([0-9a-f]{20})\.pt")


def shipped_name(content: bytes) -> str:
    """The name a checkpoint is shipped under: its content hash (``verify_shipped`` checks it on load)."""
    return f"model-{hashlib.sha256(content).hexdigest()[:20]}.pt"


def verify_shipped(path: str) -> None:
    """Refuse a shipped checkpoint whose bytes no longer match the hash in its name: something changed
    it after the driver shipped it, and a checkpoint is code-adjacent (it is unpickled)."""
    named = _SHIPPED.fullmatch(Path(path).name)
    if named and shipped_name(Path(path).read_bytes()) != named.group(0):
        raise ShopformerError(f"{path}: content does not match the hash in its name; not loading it")


@functools.lru_cache(maxsize=2)
def load_model(path: str, torch_threads: int = 1) -> LoadedModel:
    """Load a checkpoint once per Python process (the UDF calls this for every partition), after
    checking its content against its name."""
    import torch

    from shopformer.model.network import load_checkpoint

    verify_shipped(path)
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    model, _, extra = load_checkpoint(path)
    tokens = extra.get("vocab", {}).get("tokens", {}).get("item", {})
    log.info("loaded scoring model %s (%d item tokens)", path, len(tokens))
    return LoadedModel(model, extra, {int(i): str(t) for t, i in tokens.items()})


def predict_rows(
    loaded: LoadedModel, pdf: pd.DataFrame, *, top_k: int, min_item_id: int, reasons: int = 0
) -> pd.DataFrame:
    """One Arrow batch of model inputs -> SCORED columns (calibrated probabilities, item tokens, reasons)."""
    from shopformer.model.inference import predict_frame

    out = pdf[[*KEYS, "has_views"]].reset_index(drop=True)
    if pdf.empty:
        return pd.DataFrame({f.name: pd.Series(dtype=object) for f in SCORED.fields})
    calibrators = loaded.extra.get("calibrators")
    got = predict_frame(
        loaded.model, pdf, calibrators=calibrators, top_k=top_k, min_item_id=min_item_id, reasons=reasons
    )
    for task in ("propensity", "churn"):
        out[f"{task}_reasons"] = got.get(f"{task}_reasons", [None] * len(pdf))
    out["propensity"] = got["propensity"].astype(np.float64)
    out["churn"] = got["churn"].astype(np.float64)
    out["price_elasticity"] = got["price_elasticity"].astype(np.float64)
    out["user_vector"] = list(got["user_vector"].astype(np.float32))
    ids = got.get("next_items", np.zeros((len(pdf), 0), dtype=np.int64))
    # Ids outside the vocabulary (hashed long tail) have no token to show: skipped.
    out["next_items"] = [
        [loaded.item_tokens[i] for i in row if i in loaded.item_tokens] for row in ids.tolist()
    ]
    return out


def _score_batches(batches: Iterator[pd.DataFrame], spec: ScoringSpec) -> Iterator[pd.DataFrame]:
    from pyspark import SparkFiles

    loaded = load_model(SparkFiles.get(spec.checkpoint_file), spec.torch_threads)
    for pdf in batches:
        yield predict_rows(loaded, pdf, top_k=spec.top_k, min_item_id=spec.min_item_id, reasons=spec.reasons)


def has_views(seq_event_type: Column) -> Column:
    """True when the sequence holds at least one view event (elasticity is only defined then)."""
    return F.exists(seq_event_type, lambda t: t == F.lit(EVENT_TYPE_IDS["view"]))


def score_snapshots(snapshots: DataFrame, *, spec: ScoringSpec, partitions: int | None = None) -> DataFrame:
    """Snapshot rows -> SCORED rows (one per row) through the model in an iterator pandas UDF.

    ``partitions``: hash-partition the rows by key into that many tasks first (None: as read). A night's
    snapshots are one file with one row group, so as read they were one task: one core scored 490,000
    users (20 M-event shop) while the others idled; the model's work is per row, so tasks should follow
    the rows, not the file."""
    inputs = [*SEQ_INT_COLUMNS, *SEQ_FLOAT_COLUMNS, "seq_len", *spec.aggregate_names]
    require_columns(snapshots, [*KEYS, *inputs], "score_snapshots")
    if partitions is not None:
        snapshots = snapshots.repartition(partitions, *KEYS)
    rows = snapshots.select(*KEYS, has_views(F.col("seq_event_type")).alias("has_views"), *inputs)

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return _score_batches(batches, spec)

    return rows.mapInPandas(score, SCORED).select(*names(SCORED))


def _lineage(lineage: Lineage) -> list[Column]:
    return [
        F.lit(lineage.model_name).alias("model_name"),
        F.lit(lineage.model_version).alias("model_version"),
        F.lit(lineage.run_id).alias("run_id"),
    ]


def segment(elasticity: Column, partition_by: Sequence[str]) -> Column:
    """low / medium / high by tercile of ``elasticity`` within ``partition_by`` (null stays null).

    ``ntile(3)`` over ascending elasticity: tile 1 is the most negative third (high sensitivity). Nulls
    form their own window partition so they never take a tercile's place; ties break by user_id.
    """
    ordered = (
        Window.partitionBy(*partition_by, elasticity.isNull())
        .orderBy(elasticity.asc(), F.col("user_id").asc())
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)  # the frame ntile requires
    )
    names_ = F.array(*[F.lit(s) for s in SEGMENTS])
    return F.when(elasticity.isNotNull(), F.element_at(names_, F.ntile(3).over(ordered)))


def elasticity(*, purchase_based: bool) -> Column:
    """The model's elasticity where the user has views; on a (source, as_of_date) where nobody has views
    (a transactions-only source) the purchase-based ``purchase_elasticity`` (features.price_sensitivity)
    when ``purchase_based``; null otherwise. One basis per source and date, so terciles compare like
    with like; a viewing source's buy-only users stay null."""
    if not purchase_based:
        return F.when(F.col("has_views"), F.col("price_elasticity"))
    whole = Window.partitionBy("source", "as_of_date").rowsBetween(
        Window.unboundedPreceding, Window.unboundedFollowing
    )
    nobody_views = F.max(F.col("has_views").cast("int")).over(whole) == 0
    return F.when(F.col("has_views"), F.col("price_elasticity")).when(
        nobody_views, F.col("purchase_elasticity")
    )


def user_scores(
    scored: DataFrame,
    *,
    lineage: Lineage,
    scored_at: dt.datetime,
    purchases: DataFrame | None = None,
) -> DataFrame:
    """scores.user_scores rows: calibrated probabilities, elasticity (``elasticity``) and segment.

    ``purchases``: (source, user_id, as_of_date, price_elasticity) from purchase behaviour, or None."""
    require_columns(scored, names(SCORED), "user_scores")
    if purchases is not None:
        require_columns(purchases, [*KEYS, "price_elasticity"], "user_scores purchases")
        bought = purchases.select(*KEYS, F.col("price_elasticity").alias("purchase_elasticity"))
        scored = scored.join(bought, list(KEYS), "left")
    rows = scored.withColumn("_elasticity", elasticity(purchase_based=purchases is not None))
    e = F.col("_elasticity")
    return rows.select(
        *KEYS,
        F.col("propensity").alias("propensity_7d"),
        F.col("churn").alias("churn_30d"),
        e.alias("price_elasticity"),
        segment(e, ["source", "as_of_date"]).alias("price_sensitivity_segment"),
        "propensity_reasons",
        "churn_reasons",
        *_lineage(lineage),
        F.lit(scored_at).cast("timestamp").alias("scored_at"),
    ).select(*names(SCORES_USER_SCORES))


def user_embeddings(scored: DataFrame, *, lineage: Lineage) -> DataFrame:
    """scores.user_embeddings rows: the model's user vector per (user, as_of_date)."""
    require_columns(scored, [*KEYS, "user_vector"], "user_embeddings")
    return scored.select(*KEYS, "user_vector", *_lineage(lineage)).select(*names(SCORES_USER_EMBEDDINGS))


def user_next_items(scored: DataFrame, *, lineage: Lineage) -> DataFrame:
    """scores.user_next_items rows: one per (user, rank), rank 1 = the most likely next item."""
    require_columns(scored, [*KEYS, "next_items"], "user_next_items")
    exploded = scored.select(*KEYS, F.posexplode("next_items").alias("pos", "item_id"))
    return exploded.select(
        *KEYS, (F.col("pos") + 1).cast("int").alias("rank"), "item_id", *_lineage(lineage)
    ).select(*names(SCORES_USER_NEXT_ITEMS))
