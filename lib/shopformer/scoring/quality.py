"""Score quality as lazy DataFrame transforms: matured labels -> metrics, previous date -> PSI drift.

The numbers come from ``shopformer.model.evaluation`` (``binary_metrics``, ``psi``), the same code training
and the report use, run on the executors by ``groupBy(...).applyInPandas`` once per (source, as_of_date,
score): nothing but the small metric rows ever reaches the driver. Each group is held in one Python
worker's memory (two doubles per scored user), which is what a per-date AUC needs anyway.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, DoubleType, LongType, StringType, StructField, StructType

from shopformer.model.evaluation import binary_metrics, psi
from shopformer.schemas import (
    DRIFT_SCORES,
    SCORE_LABELS,
    SCORES_SCORE_QUALITY,
    SNAPSHOT_KEYS,
    names,
    require_columns,
)

KEYS = SNAPSHOT_KEYS
GROUP = ("source", "as_of_date", "score")
LABEL_METRICS = ("roc_auc", "pr_auc", "log_loss", "ece", "lift_top_decile")
# What each applyInPandas group returns: the table's columns before thresholds and lineage are added.
METRIC_ROWS = StructType(
    [
        StructField("source", StringType()),
        StructField("as_of_date", DateType()),
        StructField("score", StringType()),
        StructField("metric", StringType()),
        StructField("value", DoubleType()),
        StructField("n", LongType()),
        StructField("base_rate", DoubleType()),
        StructField("reference_date", DateType()),
        StructField("note", StringType()),
        StructField("model_version", StringType()),
    ]
)


@dataclass(frozen=True)
class Rule:
    """A threshold: ``bound`` 'min' breaches when value < limit, 'max' when value > limit."""

    score: str
    metric: str
    bound: str
    limit: float


def labelled_pairs(scores: DataFrame, snapshots: DataFrame) -> DataFrame:
    """One row per (user, date, score) with a matured label: (score, p = the score, y = its label).

    Inner join on the snapshot keys, then only non-null labels: dates whose outcome window has not
    passed have no label rows, so they form no group and get no AUC rows.
    """
    require_columns(scores, [*KEYS, *SCORE_LABELS, "model_version"], "labelled_pairs(scores)")
    require_columns(snapshots, [*KEYS, *SCORE_LABELS.values()], "labelled_pairs(snapshots)")
    pairs = F.array(
        *[
            F.struct(
                F.lit(s).alias("score"),
                F.col(s).cast("double").alias("p"),
                F.col(y).cast("double").alias("y"),
            )
            for s, y in SCORE_LABELS.items()
        ]
    )
    return (
        scores.select(*KEYS, *SCORE_LABELS, "model_version")
        .join(snapshots.select(*KEYS, *SCORE_LABELS.values()), list(KEYS), "inner")
        .select("source", "as_of_date", "model_version", F.explode(pairs).alias("pair"))
        .where(F.col("pair.y").isNotNull())
        .select("source", "as_of_date", "pair.score", "model_version", "pair.p", "pair.y")
    )


def label_metrics(pairs: DataFrame, *, ece_bins: int) -> DataFrame:
    """``binary_metrics`` per (source, as_of_date, score) on the executors: one row per metric."""
    require_columns(pairs, [*GROUP, "model_version", "p", "y"], "label_metrics")
    fn = partial(_label_group, ece_bins=ece_bins)
    return pairs.groupBy(*GROUP).applyInPandas(fn, METRIC_ROWS).select(*names(METRIC_ROWS))


def _label_group(pdf: pd.DataFrame, *, ece_bins: int) -> pd.DataFrame:
    # Sorted, so every float sum runs in the same order and a rerun writes bit-identical values.
    pdf = pdf.sort_values(["p", "y"], kind="mergesort")
    m = binary_metrics(pdf["y"].to_numpy(), pdf["p"].to_numpy(), ece_bins=ece_bins)
    head = pdf.iloc[0]
    return pd.DataFrame(
        {
            "source": head["source"],
            "as_of_date": head["as_of_date"],
            "score": head["score"],
            "metric": list(LABEL_METRICS),
            "value": [_finite(m[k]) for k in LABEL_METRICS],
            "n": int(m["n"]),
            "base_rate": _finite(m["base_rate"]),
            "reference_date": None,
            "note": m["note"] or None,
            "model_version": _versions(pdf["model_version"]),
        }
    )


def previous_dates(scores: DataFrame) -> DataFrame:
    """(source, as_of_date, reference_date): each scored date with the source's previous scored date."""
    require_columns(scores, ["source", "as_of_date"], "previous_dates")
    before = (
        Window.partitionBy("source").orderBy("as_of_date").rowsBetween(Window.unboundedPreceding, -1)
    )  # every earlier date of the source; their max is the previous one
    return (
        scores.select("source", "as_of_date")
        .distinct()
        .withColumn("reference_date", F.max("as_of_date").over(before))
        .select("source", "as_of_date", "reference_date")
    )


def drift_inputs(scores: DataFrame, dates: DataFrame) -> DataFrame:
    """Values of each drift score on a date ('actual') and on its reference date ('expected').

    The reference date's rows are relabelled with the later date, so one group holds both samples.
    Only dates in ``dates`` with a reference date are kept.
    """
    require_columns(scores, ["source", "as_of_date", "model_version", *DRIFT_SCORES], "drift_inputs")
    require_columns(dates, ["source", "as_of_date", "reference_date"], "drift_inputs(dates)")
    values = F.array(
        *[F.struct(F.lit(s).alias("score"), F.col(s).cast("double").alias("value")) for s in DRIFT_SCORES]
    )
    long = scores.select(
        "source", F.col("as_of_date").alias("_date"), "model_version", F.explode(values).alias("v")
    )
    dated = dates.where(F.col("reference_date").isNotNull())

    def side(role: str, on: str) -> DataFrame:
        return long.join(dated, (long["source"] == dated["source"]) & (long["_date"] == dated[on])).select(
            dated["source"],
            "as_of_date",
            "reference_date",
            "v.score",
            F.lit(role).alias("role"),
            "v.value",
            "model_version",
        )

    return side("actual", "as_of_date").unionByName(side("expected", "reference_date"))


def drift_metrics(inputs: DataFrame, *, bins: int) -> DataFrame:
    """``psi(expected, actual)`` per (source, as_of_date, score) on the executors: one 'psi' row each."""
    require_columns(inputs, [*GROUP, "reference_date", "role", "value", "model_version"], "drift_metrics")
    fn = partial(_drift_group, bins=bins)
    return inputs.groupBy(*GROUP).applyInPandas(fn, METRIC_ROWS).select(*names(METRIC_ROWS))


def _drift_group(pdf: pd.DataFrame, *, bins: int) -> pd.DataFrame:
    actual, expected = pdf[pdf["role"] == "actual"], pdf[pdf["role"] == "expected"]
    a = np.sort(actual["value"].to_numpy(dtype=float))
    e = np.sort(expected["value"].to_numpy(dtype=float))
    value = _finite(psi(e, a, bins=bins))
    notes = [] if value is not None else ["no non-null values on one of the dates"]
    now, before = _versions(actual["model_version"]), _versions(expected["model_version"])
    if now != before:
        notes.append(f"model changed {before} -> {now}: drift may be the model's")
    head = pdf.iloc[0]
    return pd.DataFrame(
        {
            "source": [head["source"]],
            "as_of_date": [head["as_of_date"]],
            "score": [head["score"]],
            "metric": ["psi"],
            "value": [value],
            "n": [int(np.count_nonzero(~np.isnan(a)))],
            "base_rate": [None],
            "reference_date": [head["reference_date"]],
            "note": ["; ".join(notes) or None],
            "model_version": [now or before],
        }
    )


def _finite(x: Any) -> float | None:
    """NaN (undefined metric) becomes null: SQL users filter nulls; NaN compares as the largest double."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _versions(s: pd.Series) -> str:
    return ",".join(sorted({str(v) for v in s.dropna()}))


def judge(
    metrics: DataFrame, *, rules: Sequence[Rule], min_rows: int, evaluated_on: dt.date, run_id: str
) -> DataFrame:
    """Add threshold, breached (never for rows with n < min_rows: a note instead), evaluated_on, run_id."""
    require_columns(metrics, names(METRIC_ROWS), "judge")
    limit, low = F.lit(None).cast("double"), F.lit(None).cast("boolean")
    for r in rules:
        hit = (F.col("score") == r.score) & (F.col("metric") == r.metric)
        limit = F.when(hit, F.lit(float(r.limit))).otherwise(limit)
        low = F.when(hit, F.lit(r.bound == "min")).otherwise(low)
    few = F.col("n") < min_rows
    crossed = F.when(low, F.col("value") < F.col("threshold")).otherwise(F.col("value") > F.col("threshold"))
    few_note = F.when(few, F.format_string(f"n=%d < quality.min_rows={min_rows}: recorded, not judged", "n"))
    return (
        metrics.withColumn("threshold", limit)
        .withColumn("breached", F.coalesce(~few & crossed, F.lit(False)))
        .withColumn("note", _join_notes(F.col("note"), few_note))
        .withColumn("evaluated_on", F.lit(evaluated_on))
        .withColumn("run_id", F.lit(run_id))
        .select(*names(SCORES_SCORE_QUALITY))
    )


def _join_notes(a: Column, b: Column) -> Column:
    joined = F.concat_ws("; ", a, b)
    return F.when(joined == "", F.lit(None).cast("string")).otherwise(joined)
