"""Training data from gold.user_snapshots: time-based split, model-ready columns, Petastorm converters.

Split by as-of date, never by user: the holdout is the newest labelled as-of dates, validation the ones
before, training the ones before those, each purged so that no label window reaches the next split, so every
evaluation is "train on the past, predict the future". Only
small, bounded things reach the driver: the date list, the vocabulary, item vectors and row samples for
the feature scaler and for evaluation (``train.max_eval_rows``). Training reads about
``train.max_train_rows`` rows at most: a seeded sample of whole users (``sample_users``).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import tables
from shopformer.config import Config
from shopformer.errors import ShopformerError
from shopformer.schemas import SEQ_FLOAT_COLUMNS, SEQ_INT_COLUMNS, TASK_LABELS, USER_KEYS, require_columns

log = logging.getLogger(__name__)
HASH_BUCKETS = 1 << 32  # resolution of a seeded sample's fraction (~2e-10)


class TrainingDataError(ShopformerError):
    """The snapshots cannot support a time-based train / valid / holdout split."""


@dataclass(frozen=True)
class Split:
    """Per task, the newest labelled dates are its holdout, the ones before its validation dates and the
    ones before those its training dates, **purged**: a date T is used for a task only if its label window
    [T, T + horizon) ends by the first date it is evaluated against (train by the task's first validation
    date, validation by its first holdout date). No evaluated label was trained on, and no training label
    saw the weeks an evaluated label is about."""

    train: dict[str, list[dt.date]]
    valid: dict[str, list[dt.date]]
    holdout: dict[str, list[dt.date]]
    horizons: dict[str, int]

    @property
    def train_dates(self) -> list[dt.date]:
        """Every date some task trains on (a row's labels of the other tasks are masked)."""
        return sorted({x for dates in self.train.values() for x in dates})


def labelled_dates(snaps: DataFrame, label: str) -> list[dt.date]:
    """As-of dates where ``label`` is complete (one tiny aggregate)."""
    rows = snaps.where(F.col(label).isNotNull()).select("as_of_date").distinct().collect()
    return sorted(r[0] for r in rows)


def label_horizons(cfg: Config, snaps: DataFrame) -> dict[str, int]:
    """Label window per task: ``snapshots.<task>_horizon_days``, or the longer window stored in the
    snapshot rows (logged), so the purge covers the labels actually stored whatever built them."""
    stored = snaps.agg(*[F.max(f"{task}_horizon_days").alias(task) for task in TASK_LABELS]).first()
    out = {}
    for task in TASK_LABELS:
        conf = int(getattr(cfg.settings.snapshots, f"{task}_horizon_days"))
        built = stored[task] if stored is not None and stored[task] is not None else 0
        if built > conf:
            log.warning(
                "%s labels were built with a %d-day window (conf %d): purging by it", task, built, conf
            )
        out[task] = max(conf, int(built))
    return out


def _before(dates: Sequence[dt.date], horizon: int, first: dt.date) -> list[dt.date]:
    """The dates whose label window [T, T + horizon) has ended by ``first``."""
    return [x for x in dates if x + dt.timedelta(days=horizon) <= first]


def split_dates(
    by_task: dict[str, Sequence[dt.date]], *, horizons: dict[str, int], holdout: int, valid: int
) -> Split:
    """Purged time split per task (see ``Split``); raises ``TrainingDataError`` naming what to change."""
    hold, val, train = {}, {}, {}
    for task, dates in by_task.items():
        d, h = sorted(dates), horizons[task]
        fix = (
            f"snapshot a longer period, or lower train.holdout_dates={holdout} / train.valid_dates={valid} "
            f"/ snapshots.{task}_horizon_days={h}"
        )
        if len(d) < holdout + 1:
            raise TrainingDataError(f"{task}: {len(d)} labelled as-of dates, need more than {holdout}: {fix}")
        hold[task] = d[-holdout:]
        before = _before(d, h, hold[task][0])
        if len(before) < valid:
            raise TrainingDataError(
                f"{task}: {len(before)} labelled as-of dates end their {h}-day label window by the first "
                f"holdout date {hold[task][0]}, need {valid} for validation: {fix}"
            )
        val[task] = before[-valid:]
        train[task] = _before(d, h, val[task][0])
        if not train[task]:
            raise TrainingDataError(
                f"{task}: no labelled as-of date ends its {h}-day label window by the first validation "
                f"date {val[task][0]}: {fix}"
            )
    return Split(train=train, valid=val, holdout=hold, horizons=dict(horizons))


def rows_on(rows: DataFrame, dates: dict[str, Sequence[dt.date]]) -> DataFrame:
    """The model-column rows of the union of ``dates``, each task's label kept only on that task's dates
    (-1, "no label", elsewhere): a training or validation row carries just the labels its split may use."""
    every = sorted({x for part in dates.values() for x in part})
    out = rows.where(F.col("as_of_date").isin(every))
    for task, label in TASK_LABELS.items():
        keep = F.col("as_of_date").isin(list(dates.get(task, [])))
        out = out.withColumn(label, F.when(keep, F.col(label)).otherwise(F.lit(-1)))
    return out


def seeded_unit(columns: Sequence[str], seed: int) -> Column:
    """A seeded hash of ``columns`` mapped to [0, 1): rows below a fraction form a sample that is the same
    in every run of one seed (the training sample of users, the evaluation sample of rows)."""
    return F.pmod(F.xxhash64(*columns, F.lit(seed)), F.lit(HASH_BUCKETS)) / F.lit(float(HASH_BUCKETS))


def sample_users(df: DataFrame, *, fraction: float, seed: int) -> DataFrame:
    """About ``fraction`` of the rows, by whole users: a row stays when a seeded hash of its user's keys,
    mapped to [0, 1), is below ``fraction``. A user is in or out on every as-of date (pretraining and
    fine-tuning see one user's whole history or none of it, and the three datasets the same users), and the
    same users for one seed in every run: training stays reproducible. ``fraction >= 1``: every row."""
    require_columns(df, USER_KEYS, "sample_users")
    if fraction <= 0:
        raise ValueError(f"sample_users: fraction must be > 0, got {fraction}")
    if fraction >= 1:
        return df.select(*df.columns)
    return df.where(seeded_unit(USER_KEYS, seed) < F.lit(float(fraction))).select(*df.columns)


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
