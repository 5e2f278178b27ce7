"""The run's data, prepared once: the purged split, the model-column rows, and bounded pandas samples of
the train / valid / holdout dates that evaluation, the baselines and the champion gate score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer.config import Config
from shopformer.features.aggregates import feature_names
from shopformer.model import data as train_data
from shopformer.model.evaluation import Calibrator, metrics_row
from shopformer.model.inference import TASKS, predict_frame
from shopformer.schemas import SNAPSHOT_KEYS, TASK_LABELS

KEYS = SNAPSHOT_KEYS
LABEL = TASK_LABELS


def sample(df: DataFrame, max_rows: int, seed: int = 7) -> pd.DataFrame:
    """About ``max_rows`` rows on the driver (evaluation and the scaler need numbers, not all rows), drawn
    evenly from every as-of date: a row stays when a seeded hash of its keys falls below max_rows / n.
    Not sample-then-limit: a limit keeps the rows Spark reads first, and Spark reads the biggest files
    first, so the newest dates filled the sample and the small early ones (the only churn training dates
    of a purged split) were cut whole (a 17,700-user shop: 0 churn training rows, the run crashed)."""
    n = df.count()
    if n <= max_rows:
        return df.toPandas()
    return df.where(train_data.seeded_unit(KEYS, seed) < F.lit(max_rows / n)).toPandas()


@dataclass
class Data:
    """Everything the run reads, prepared once."""

    split: train_data.Split
    names: list[str]
    rows: DataFrame  # model columns + keys of every as-of date up to the holdout
    pandas: dict[str, pd.DataFrame]  # train / valid / holdout samples
    sizes: dict[str, int]
    counts: np.ndarray
    vocab: dict[str, Any]
    text: tuple[list[int], np.ndarray] | None


def prepare(spark: SparkSession, cfg: Config) -> Data:
    t = cfg.settings.train
    snaps = train_data.read_snapshots(spark, cfg)
    by_task = {task: train_data.labelled_dates(snaps, label) for task, label in LABEL.items()}
    split = train_data.split_dates(
        by_task, horizons=train_data.label_horizons(cfg, snaps), holdout=t.holdout_dates, valid=t.valid_dates
    )
    names = feature_names(cfg.settings.snapshots.windows_days)
    evaluated = [x for part in (split.valid, split.holdout) for dates in part.values() for x in dates]
    version = train_data.vocab_version_of(snaps, [*split.train_dates, *evaluated])
    sizes, counts, vocab = train_data.vocabulary(spark, cfg, version)
    rows = train_data.model_columns(
        snaps.where(F.col("as_of_date") <= max(evaluated)),
        aggregate_names=names,
        price_len=cfg.settings.snapshots.price_max_views,
        keep=KEYS,
    ).cache()
    cap = t.max_eval_rows
    pandas = {"train": sample(train_data.rows_on(rows, split.train), cap)}
    for part in ("valid", "holdout"):
        for task, dates in getattr(split, part).items():
            pandas[f"{part}:{task}"] = sample(rows.where(F.col("as_of_date").isin(dates)), cap)
    for pdf in pandas.values():  # back to null labels for pandas consumers (baselines, metrics)
        for c in LABEL.values():
            pdf[c] = pdf[c].where(pdf[c] >= 0)
    text = train_data.item_text(spark, cfg, vocab["tokens"].get("item", {}))
    return Data(split, names, rows, pandas, sizes, counts, vocab, text)


def evaluate_model(model: Any, d: Data, name: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, dict]]:
    """(metric rows, holdout predictions, calibrators): per task, calibrated on its valid dates and measured
    on its holdout dates."""
    rows, preds, calibrators = [], [], {}
    for task in TASKS:
        valid, hold = d.pandas[f"valid:{task}"], d.pandas[f"holdout:{task}"]
        pv, ph = predict_frame(model, valid)[task], predict_frame(model, hold)[task]
        yv, yh = valid[LABEL[task]].to_numpy(), hold[LABEL[task]].to_numpy()
        cal = Calibrator.fit(yv[yv >= 0], pv[yv >= 0])
        calibrators[task] = cal.to_dict()
        p = cal.apply(ph)
        rows.append(metrics_row(name, task, "holdout", yh[yh >= 0], p[yh >= 0]))
        preds.append(pd.DataFrame({"model": name, "task": task, "y_true": yh[yh >= 0], "p": p[yh >= 0]}))
    return pd.DataFrame(rows), pd.concat(preds, ignore_index=True), calibrators
