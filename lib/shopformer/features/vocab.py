"""Vocabularies: item, category and brand tokens -> dense int ids, shared by training and scoring.

Layout of every kind's id space (documented in docs/snapshots.md):

* ``0`` padding (sequence positions with no event),
* ``1`` missing token (the event has no category / brand),
* ``2 .. 1 + hash_buckets`` rare or unseen tokens, by a stable hash: a new item at scoring time shares
  a bucket with the long tail the model saw in training instead of crashing or silently taking id 0,
* ``2 + hash_buckets ..`` the frequent tokens, most frequent first.

A vocabulary is a versioned artifact (``vocab_version``) built from events before a cutoff; a model records
the version it was trained with and its content fingerprint (``fingerprint_text``), and scoring maps ids
with exactly that version, refusing it when its rows no longer hash to the fingerprint (``check_unchanged``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from shopformer.errors import ConfigError
from shopformer.schemas import GOLD_VOCABULARIES, names, require_columns

log = logging.getLogger(__name__)
PAD_ID, MISSING_ID, FIRST_HASHED_ID = 0, 1, 2
KIND_COLUMNS = {"item": "item_id", "category": "category", "brand": "brand"}


def first_frequent_id(hash_buckets: int) -> int:
    return FIRST_HASHED_ID + hash_buckets


def build_vocab(
    events: DataFrame,
    *,
    version: str,
    min_count: int,
    hash_buckets: int,
    max_size: Mapping[str, int],
) -> DataFrame:
    """Frequency-ranked vocabulary rows (schema ``GOLD_VOCABULARIES``) of every kind in ``KIND_COLUMNS``."""
    require_columns(events, list(KIND_COLUMNS.values()), "build_vocab")
    if hash_buckets < 1 or min_count < 1:
        raise ValueError("vocab.hash_buckets and vocab.min_count must be >= 1")
    tokens = events.select(
        F.explode(
            F.array(
                *[F.struct(F.lit(k).alias("kind"), F.col(c).alias("token")) for k, c in KIND_COLUMNS.items()]
            )
        ).alias("t")
    ).select("t.kind", "t.token")
    counts = (
        tokens.where(F.col("token").isNotNull())
        .groupBy("kind", "token")
        .agg(F.count(F.lit(1)).alias("count"))
    )
    # row_number is a ranking function: Spark fixes its frame (ROWS UNBOUNDED PRECEDING..CURRENT ROW).
    rank = F.row_number().over(Window.partitionBy("kind").orderBy(F.desc("count"), F.asc("token")))
    limit = F.element_at(
        F.create_map(*[x for k, n in max_size.items() for x in (F.lit(k), F.lit(n))]), F.col("kind")
    )
    return (
        counts.where(F.col("count") >= min_count)
        .withColumn("rank", rank)
        .where(F.col("rank") <= F.coalesce(limit, F.lit(0)))
        .select(
            F.lit(version).alias("vocab_version"),
            "kind",
            "token",
            (F.col("rank") - 1 + first_frequent_id(hash_buckets)).cast("int").alias("id"),
            F.col("count").cast("long"),
            F.lit(hash_buckets).cast("int").alias("hash_buckets"),
        )
        .select(*names(GOLD_VOCABULARIES))
    )


def fingerprint(vocab: DataFrame) -> tuple[int, int]:
    """(rows, order-independent content hash) of vocabulary rows: equal for equal contents, so a version
    name can be checked against what it already holds without comparing row by row."""
    row = F.xxhash64(*[F.col(c) for c in names(GOLD_VOCABULARIES)]).cast("decimal(38,0)")
    got = vocab.agg(F.count(F.lit(1)), F.coalesce(F.sum(row), F.lit(0))).first()
    return (0, 0) if got is None else (int(got[0]), int(got[1]))


def fingerprint_text(vocab: DataFrame) -> str:
    """``fingerprint`` as the text a model version records (tag ``vocab_fingerprint``): ``rows:hash``."""
    rows, digest = fingerprint(vocab)
    return f"{rows}:{digest}"


class VocabularyChangedError(ConfigError):
    """A vocabulary version's rows no longer hash to what the model recorded when it was trained: its ids
    would mean other tokens. Exit 2 like any configuration found wrong at run time (no rerun fixes it)."""


def check_unchanged(vocab: DataFrame, *, version: str, recorded: str | None, model: str) -> None:
    """Refuse ``vocab`` (the rows of ``version``) unless they hash to ``recorded``; a model registered
    before fingerprints were recorded (``recorded`` None) is let through with a warning."""
    if recorded is None:
        log.warning("%s records no vocabulary fingerprint: vocabulary %s is used unchecked", model, version)
        return
    held = fingerprint_text(vocab)
    if held != recorded:
        raise VocabularyChangedError(
            f"vocabulary {version} no longer holds the rows {model} was trained on (rows:hash {held}, "
            f"recorded {recorded}): its ids would mean other tokens. Restore the version (Delta RESTORE "
            "of gold.vocabularies to the commit before the change) or use a model of another vocabulary"
        )


def hashed_id(token: Column, hash_buckets: int) -> Column:
    """The bucket id of a rare or unseen token (stable across runs, Spark versions and machines)."""
    return (F.pmod(F.xxhash64(token), F.lit(hash_buckets)) + FIRST_HASHED_ID).cast("int")


def apply_vocab(
    df: DataFrame, vocab: DataFrame, *, kind: str, column: str, out: str, hash_buckets: int
) -> DataFrame:
    """``df`` plus int column ``out``: the id of ``column`` in ``vocab``'s ``kind`` (one version only).

    ``hash_buckets`` must be the version's own (its ``hash_buckets`` column; ``features.job`` reads it), or
    rare ids shift.
    """
    require_columns(df, [column], "apply_vocab")
    require_columns(vocab, names(GOLD_VOCABULARIES), "apply_vocab(vocab)")
    one_kind = vocab.where(F.col("kind") == kind).select(
        F.col("token").alias("_token"), F.col("id").alias("_id")
    )
    # Category and brand vocabularies are small: broadcast. Items can be millions: let Spark decide.
    side = one_kind if kind == "item" else F.broadcast(one_kind)
    joined = df.join(side, F.col(column) == F.col("_token"), "left")
    ident = (
        F.when(F.col(column).isNull(), F.lit(MISSING_ID))
        .when(F.col("_id").isNotNull(), F.col("_id"))
        .otherwise(hashed_id(F.col(column), hash_buckets))
    )
    return joined.select(*df.columns, ident.cast("int").alias(out))


def vocab_sizes(vocab: DataFrame) -> DataFrame:
    """(kind, size): the embedding-table size each kind needs (max id + 1, at least the reserved ids)."""
    require_columns(vocab, names(GOLD_VOCABULARIES), "vocab_sizes")
    return (
        vocab.groupBy("kind")
        .agg(F.greatest(F.max("id") + 1, F.max("hash_buckets") + FIRST_HASHED_ID).cast("int").alias("size"))
        .select("kind", "size")
    )
