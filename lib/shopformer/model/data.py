"""Training data from gold.user_snapshots: time-based split, model-ready columns, Petastorm converters.

Split by as-of date, never by user: the holdout is the newest labelled as-of dates, validation the ones just
before, training everything earlier, so every evaluation is "train on the past, predict the future". Only
small, bounded things reach the driver: the date list, the vocabulary, item vectors and row samples for
the feature scaler and for evaluation (``train.max_eval_rows``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import tables
from shopformer.config import Config
from shopformer.errors import ShopformerError
from shopformer.schemas import SEQ_FLOAT_COLUMNS, SEQ_INT_COLUMNS


class TrainingDataError(ShopformerError):
    """The snapshots cannot support a time-based train / valid / holdout split."""


@dataclass(frozen=True)
class Split:
    """Per task, the newest labelled dates are its holdout and the ones before its validation dates
    (labels mature at different speeds: churn needs 30 days, propensity 7). The model is fine-tuned on
    dates before every task's validation dates, so no evaluated row was trained on."""

    train: list[dt.date]
    valid: dict[str, list[dt.date]]
    holdout: dict[str, list[dt.date]]


def labelled_dates(snaps: DataFrame, label: str) -> list[dt.date]:
    """As-of dates where ``label`` is complete (one tiny aggregate)."""
    rows = snaps.where(F.col(label).isNotNull()).select("as_of_date").distinct().collect()
    return sorted(r[0] for r in rows)


def split_dates(by_task: dict[str, Sequence[dt.date]], *, holdout: int, valid: int) -> Split:
    hold, val = {}, {}
    for task, dates in by_task.items():
        if len(dates) < holdout + valid + 1:
            raise TrainingDataError(
                f"{task}: need at least {holdout + valid + 1} labelled as-of dates (train.holdout_dates="
                f"{holdout}, train.valid_dates={valid}), have {len(dates)}: snapshot a longer period"
            )
        d = list(dates)
        hold[task], val[task] = d[-holdout:], d[-holdout - valid : -holdout]
    cut = min(v[0] for v in val.values())
    train = sorted({x for dates in by_task.values() for x in dates if x < cut})
    if not train:
        raise TrainingDataError(f"no labelled as-of date before the first validation date {cut}")
    return Split(train=train, valid=val, holdout=hold)


def _zeros(n: int, dtype: str) -> Column:
    return F.array_repeat(F.lit(0).cast(dtype), n)


def model_columns(
    snaps: DataFrame, *, aggregate_names: Sequence[str], price_len: int, keep: Sequence[str] = ()
) -> DataFrame:
    """Fixed-length, null-free columns Petastorm can feed: labels -1 when null, aggregates NaN when null,
    price arrays zero (with ``price_n_views`` 0) where a row has none. ``keep``: columns passed through."""
    filled = [
        *[F.col(c) for c in keep],
        *[F.col(c).cast("array<int>").alias(c) for c in SEQ_INT_COLUMNS],
        *[F.col(c).cast("array<float>").alias(c) for c in SEQ_FLOAT_COLUMNS],
        F.col("seq_len").cast("int"),
        *[F.coalesce(F.col(c).cast("float"), F.lit(float("nan"))).alias(c) for c in aggregate_names],
        *[F.coalesce(F.col(c), F.lit(-1)).cast("int").alias(c) for c in ("label_propensity", "label_churn")],
        F.coalesce("price_n_views", F.lit(0)).cast("int").alias("price_n_views"),
        F.coalesce("price_item", _zeros(price_len, "int")).alias("price_item"),
        F.coalesce("price_rel_price", _zeros(price_len, "float")).alias("price_rel_price"),
        F.coalesce("price_bought", _zeros(price_len, "int")).alias("price_bought"),
    ]
    return snaps.select(*filled)


def read_snapshots(spark: SparkSession, cfg: Config) -> DataFrame:
    path = cfg.table("gold_user_snapshots")
    if not tables.exists(spark, path):
        raise TrainingDataError(f"no gold.user_snapshots at {path}: run build_snapshots first")
    return tables.read(spark, path)


def vocab_version_of(snaps: DataFrame, dates: Sequence[dt.date]) -> str:
    versions = [
        r[0]
        for r in snaps.where(F.col("as_of_date").isin(list(dates)))
        .select("vocab_version")
        .distinct()
        .collect()
    ]
    if len(versions) != 1:
        raise TrainingDataError(f"training snapshots must share one vocab_version, found {sorted(versions)}")
    return str(versions[0])


def vocabulary(spark: SparkSession, cfg: Config, version: str) -> tuple[dict[str, int], np.ndarray, dict]:
    """(size per kind, item frequency per id for the sampled-softmax proposal, the tables as plain dicts)."""
    from shopformer.features.vocab import KIND_COLUMNS, first_frequent_id, vocab_sizes

    vocab = tables.read(spark, cfg.table("gold_vocabularies")).where(F.col("vocab_version") == version)
    sizes = {r["kind"]: int(r["size"]) for r in vocab_sizes(vocab).collect()}
    rows = vocab.select(
        "kind", "token", "id", "count", "hash_buckets"
    ).collect()  # the vocabulary, not events
    # A kind the source never has (no category/brand in transactions-only data) has no rows: its ids are
    # all "missing" (1), and the table needs the reserved ids only.
    buckets = int(rows[0]["hash_buckets"]) if rows else cfg.settings.vocab.hash_buckets
    sizes = {kind: sizes.get(kind, first_frequent_id(buckets)) for kind in KIND_COLUMNS}
    counts = np.ones(sizes.get("item", 2), dtype=np.float64)
    for r in rows:
        if r["kind"] == "item":
            counts[r["id"]] = float(r["count"])
    plain = {
        "version": version,
        "hash_buckets": buckets,
        "tokens": {
            k: {r["token"]: r["id"] for r in rows if r["kind"] == k} for k in ("item", "category", "brand")
        },
    }
    return sizes, counts, plain


def item_text(
    spark: SparkSession, cfg: Config, tokens: dict[str, int]
) -> tuple[list[int], np.ndarray] | None:
    """Vectors of the vocabulary's items from gold.item_embeddings (None when the catalog has no text)."""
    path = cfg.table("gold_item_embeddings")
    if not tables.exists(spark, path) or not tokens:
        return None
    rows = tables.read(spark, path).select("item_id", "embedding").collect()  # one vector per item
    ids = [tokens[r["item_id"]] for r in rows if r["item_id"] in tokens]
    if not ids:
        return None
    vectors = np.asarray([r["embedding"] for r in rows if r["item_id"] in tokens], dtype=np.float32)
    return ids, vectors
