"""The champion gate: the registry's champion re-scored on this run's holdout users and dates, encoded
with its own vocabulary; the new model registered, and promoted only on a strict improvement. Fails
closed: a registry error or a champion that cannot be scored registers and promotes nothing."""

from __future__ import annotations

import logging
from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shopformer import registry
from shopformer.config import Config
from shopformer.features import job as snapshots_job
from shopformer.model import data as train_data
from shopformer.model import pyfunc
from shopformer.model.holdout import Data, evaluate_model
from shopformer.model.network import load_checkpoint
from shopformer.schemas import PRICE_LABEL_COLUMNS, SEQ_COLUMNS, SNAPSHOT_KEYS

log = logging.getLogger(__name__)
KEYS = SNAPSHOT_KEYS
GATED = ("roc_auc", "pr_auc", "ece")


def own_ids(spark: SparkSession, cfg: Config, d: Data, vocab_version: str) -> Data:
    """``d`` with the sequence and price columns of its valid and holdout samples rebuilt from silver with
    the vocabulary ``vocab_version``: ids are frequency ranks rebuilt with every vocabulary, so an older
    model is scored on the same users, dates, aggregates and labels, encoded with the ids it learned."""
    parts = [k for k in d.pandas if k != "train"]
    keys = pd.concat([d.pandas[k][list(KEYS)] for k in parts]).drop_duplicates()
    snaps = snapshots_job.encoded_snapshots(
        spark, cfg, dates=sorted(set(keys["as_of_date"])), vocab_version=vocab_version, run_id="gate"
    )
    cols = [*SEQ_COLUMNS, "seq_len", *PRICE_LABEL_COLUMNS]
    own = (
        train_data.model_columns(
            snaps, aggregate_names=d.names, price_len=cfg.settings.snapshots.price_max_views, keep=KEYS
        )
        .join(F.broadcast(spark.createDataFrame(keys)), list(KEYS))  # at most the evaluation samples
        .select(*KEYS, *cols)
        .toPandas()
    )
    pandas = dict(d.pandas)
    for k in parts:
        pandas[k] = d.pandas[k].drop(columns=cols).merge(own, on=list(KEYS), how="left", validate="1:1")
        if pandas[k]["seq_len"].isna().any():
            raise registry.GateError(f"{k}: rows missing when encoded with vocabulary {vocab_version}")
    return replace(d, pandas=pandas)


def champion_metrics(
    spark: SparkSession, cfg: Config, d: Data, tmp: str
) -> tuple[str | None, dict[str, float] | None]:
    """The current champion re-scored on this run's holdout users and dates, encoded with its own
    vocabulary (None when the registry has no champion). A registry error or a champion that cannot be
    scored raises: the gate fails closed (nothing is registered or promoted) instead of taking the
    failure for "no champion"."""
    name = cfg.settings.train.registered_model
    found = registry.champion_checkpoint(name, tmp)  # RegistryError unless truly absent
    if found is None:
        return None, None
    version, path = found
    try:
        old, _, extra = load_checkpoint(path)
        if list(old.config.aggregate_names) != d.names:
            log.warning("champion v%s uses other features than this run", version)
        own = str(extra["vocab"]["version"])
        if own != d.vocab["version"]:
            log.info("champion v%s is scored on its own vocabulary %s", version, own)
            d = own_ids(spark, cfg, d, own)
        rows, _, _ = evaluate_model(old, d, "champion")
    except Exception as exc:
        raise registry.GateError(
            f"model {name!r} champion v{version} could not be scored on this run's holdout "
            f"({type(exc).__name__}: {exc}): nothing registered or promoted"
        ) from exc
    return version, gate_metrics(rows)


def gate_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """``{task}_{metric}`` of evaluate_model's rows: what the gate compares (ranking and calibration)."""
    return {f"{r['task']}_{k}": float(r[k]) for r in rows.to_dict("records") for k in GATED}


def gate_and_register(
    spark: SparkSession, cfg: Config, d: Data, ckpt: str, new: dict[str, float], tmp: str, *, vocab_fp: str
) -> tuple[str, bool, str]:
    """Register the new version with its vocabulary tags (name and content hash ``vocab_fp``), then promote
    it if the gate passes: a champion never lacks the tags scoring checks."""
    t = cfg.settings.train
    name = t.registered_model
    _, old = champion_metrics(spark, cfg, d, tmp)
    if old is not None:  # what the gate compared against, next to the run's own holdout metrics
        mlflow.log_metrics({f"gate_champion_{k}": v for k, v in old.items() if np.isfinite(v)})
    ok, why = registry.gate(
        new,
        old,
        metrics=list(t.gate_metrics),
        min_delta=t.gate_min_delta,
        max_ece_increase=t.gate_max_ece_increase,
    )
    version = pyfunc.log_model(ckpt, name)
    # The vocabulary tag last: promote_model refuses a version without it, so a run killed between these
    # writes leaves a version that can never become champion (tests/model/test_kill_training.py).
    registry.tag_fingerprint(name, version, vocab_fp)
    registry.tag_vocabulary(name, version, str(d.vocab["version"]))
    if ok:
        registry.promote(name, version)
    mlflow.set_tags({"gate": why, "promoted": str(ok)})
    log.info("model %s v%s: %s", name, version, why)
    return version, ok, why
