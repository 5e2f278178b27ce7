"""Orchestrates a training run: split -> init model -> TorchDistributor(Petastorm) -> evaluate next to the
baselines on the holdout -> MLflow run with report, registered model, champion gate."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import cli, registry, tables
from shopformer.config import Config
from shopformer.errors import ShopformerError
from shopformer.features.vocab import fingerprint_text, first_frequent_id
from shopformer.model import data as train_data
from shopformer.model import gate
from shopformer.model.baselines import run_baselines
from shopformer.model.evaluation import ndcg_at_k, recall_at_k, spearman
from shopformer.model.holdout import Data, evaluate_model, prepare
from shopformer.model.inference import TASKS, next_item_targets, predict_frame
from shopformer.model.network import (
    ModelConfig,
    ShopformerModel,
    load_checkpoint,
    save_checkpoint,
    vocab_fields,
)
from shopformer.model.report import write_report
from shopformer.model.training import TrainSpec, spec_dict, train_worker
from shopformer.redact import redact_settings
from shopformer.schemas import SNAPSHOT_KEYS, TASK_LABELS
from shopformer.spark import build_spark

log = logging.getLogger(__name__)
KEYS = SNAPSHOT_KEYS
LABEL = TASK_LABELS
ROWS_PER_FILE = 50_000  # training rows per Petastorm file (~100-250 MB at max_len 50)


@dataclass(frozen=True)
class TrainReport:
    mlflow_run_id: str
    model_version: str
    promoted: bool
    gate: str
    split: dict[str, list[str]]
    holdout: dict[str, float]
    table: str


def _shared_dir(cfg: Config) -> Path:
    """``train.petastorm_cache``: storage the driver and every executor see. It holds Petastorm's cache and
    the run's temporary folder (executors read the initial checkpoint, rank 0 writes the trained one)."""
    return Path(cfg.settings.train.petastorm_cache)


LOCK = ".training.lock"
RUN_MARKER = "mlflow_run_id"  # the MLflow run of the training that holds the folder; gone when it ends


@contextlib.contextmanager
def scratch(cfg: Config) -> Iterator[Path]:
    """The shared folder, held under an exclusive lock for the whole run: one training per folder, so
    whatever is in it at the start was left by a killed run (Petastorm's Parquet copies of the training
    rows, checkpoints) and is removed before this run writes its own. A second run at once stops (exit 1)."""
    shared = _shared_dir(cfg)
    shared.mkdir(parents=True, exist_ok=True)
    with open(shared / LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ShopformerError(
                f"another training run holds {shared} (train.petastorm_cache): wait for it to end"
            ) from None
        left = sorted(p for p in shared.iterdir() if p.name != LOCK)
        marker = shared / RUN_MARKER
        if marker.is_file():
            _end_killed_run(cfg, marker.read_text().strip())
        for p in left:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        if left:
            log.warning("removed %d leftovers of an interrupted training run from %s", len(left), shared)
        yield shared


def _end_killed_run(cfg: Config, run_id: str) -> None:
    """The MLflow run of a killed training stays RUNNING (nothing ran its end): mark it KILLED, so the
    tracking UI and searches for running trainings tell the truth. Only ever a warning if it cannot."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(str(cfg.get("paths.mlflow_tracking_uri")))
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "shopformer.ended_by", "the next training run: this one was killed")
            client.set_terminated(run_id, status="KILLED")
            log.warning("marked MLflow run %s of an interrupted training run KILLED", run_id)
    except MlflowException as e:
        log.warning("could not mark MLflow run %s of an interrupted training KILLED: %s", run_id, e)


@contextlib.contextmanager
def _holding(shared: Path, run_id: str) -> Iterator[None]:
    """Names ``run_id`` in ``shared`` while the run trains: if it is killed, the next run ends it."""
    marker = shared / RUN_MARKER
    marker.write_text(run_id)
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def init_model(cfg: Config, d: Data, path: str) -> None:
    """A fresh model with the scaler fitted on training rows, item text and frequencies set; saved for
    the workers together with what scoring needs (vocabulary, windows)."""
    import torch

    config = ModelConfig.preset(
        cfg.settings.train.model_size,
        **vocab_fields(d.sizes),
        max_len=cfg.settings.snapshots.max_len,
        aggregate_names=tuple(d.names),
        text_dim=0 if d.text is None else int(d.text[1].shape[1]),
        plr_frequencies=cfg.settings.train.plr_frequencies,
    )
    torch.manual_seed(cfg.settings.train.seed)  # the starting weights: the same in every run
    model = ShopformerModel(config)
    model.scaler.fit(d.pandas["train"][d.names].to_numpy(dtype=np.float64))
    if model.wide is not None:
        _warm_start_wide(model, d.pandas["train"], d.names)
    model.set_item_counts(d.counts)
    if d.text is not None:
        model.set_item_text(np.asarray(d.text[0]), d.text[1])
    if source := cfg.settings.train.init_from:
        _transfer(model, source, d.vocab["version"], str(Path(path).parent))
    extra = {"vocab": d.vocab, "windows_days": list(cfg.settings.snapshots.windows_days)}
    save_checkpoint(path, model, extra=extra)


def _warm_start_wide(model: ShopformerModel, train: pd.DataFrame, names: list[str]) -> None:
    """Start the heads as a logistic regression on the scaled aggregates (one per task) with the deep
    part's contribution at zero: fine-tuning begins where the logistic baseline ends, and early stopping
    (which also scores the starting weights) keeps it unless the sequence adds something on validation."""
    import torch
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        x = model.scaler(torch.as_tensor(train[names].to_numpy(dtype=np.float64))).numpy()
        for row, (task, head) in enumerate(
            (("propensity", model.propensity_head), ("churn", model.churn_head))
        ):
            y = train[LABEL[task]].to_numpy(dtype=np.float64)
            keep = ~np.isnan(y)
            if keep.sum() < 50 or np.unique(y[keep]).size < 2:
                log.warning("wide path of %s not warm-started: %d labelled rows", task, int(keep.sum()))
                continue
            fit = LogisticRegression(C=1.0, max_iter=2000).fit(x[keep], y[keep])
            model.wide.weight[row] = torch.as_tensor(fit.coef_[0], dtype=torch.float32)
            model.wide.bias[row] = float(fit.intercept_[0])
            head.weight.zero_()
            head.bias.zero_()


def _transfer(model: ShopformerModel, source: str, vocab_version: str, tmp: str) -> None:
    """Start from another model's weights: a checkpoint path, ``models:/<name>@<alias>`` or
    ``models:/<name>/<version>`` (e.g. another platform's registered model)."""
    if source.startswith("models:/"):
        name, sep, ref = source.removeprefix("models:/").partition("@")
        if not sep:
            name, _, ref = name.partition("/")
        _, source = registry.model_checkpoint(name, ref, tmp)
    old, _, extra = load_checkpoint(source)
    same = extra.get("vocab", {}).get("version") == vocab_version
    copied, skipped = model.transfer_from(old.state_dict(), same_vocab=same)
    log.info(
        "transfer from %s (same vocabulary: %s): %d tensors copied, %d kept fresh: %s",
        source,
        same,
        len(copied),
        len(skipped),
        skipped,
    )
    mlflow.log_params({"transfer_from": source, "transfer_copied": len(copied)})


def _converter(df: DataFrame, shards: int, seed: int, rows: int | None = None) -> Any:
    """Petastorm needs at least one Parquet row group per shard: write >= 2 files per training process.
    Every run of one command writes the same files with the same rows in the same (shuffled) order, so
    training is reproducible: the file count follows the row count (not the plan's partitions, which
    change once the rows are cached), rows go to files by a seeded hash of their keys, sorted by it."""
    from petastorm.spark import make_spark_converter

    order = F.xxhash64(*KEYS, F.lit(seed))
    n = df.count() if rows is None else rows  # ``rows``: the count, when the caller has it already
    files = max(2 * shards, -(-n // ROWS_PER_FILE))
    conv = make_spark_converter(df.repartition(files, order).sortWithinPartitions(order).drop(*KEYS))
    # Petastorm shards and shuffles row groups by their index in this list, which Spark's inputFiles()
    # gives in directory order: sorted, the part numbers fix it whatever the files' random suffixes.
    conv.file_urls = sorted(conv.file_urls)
    return conv


def _converters(cfg: Config, d: Data) -> tuple[Any, Any, Any]:
    """Pretraining, fine-tuning and validation converters over one sample of whole users, the same users
    in all three, when the rows up to the holdout exceed ``train.max_train_rows`` (every row otherwise):
    a weekly run over billions of snapshot rows trains on millions. Evaluation is not sampled here."""
    t = cfg.settings.train
    total = d.rows.count()  # cached by prepare(): cheap
    fraction = min(1.0, t.max_train_rows / max(total, 1))
    rows = train_data.sample_users(d.rows, fraction=fraction, seed=t.seed)
    pre = _converter(rows, t.num_processes, t.seed, rows=total if fraction >= 1 else None)
    if fraction < 1:
        log.info(
            "training on a sample of users: fraction %.6f, %d of %d rows (train.max_train_rows=%d)",
            fraction,
            len(pre),
            total,
            t.max_train_rows,
        )
    mlflow.log_param("train.sample_fraction", fraction)
    fine = _converter(train_data.rows_on(rows, d.split.train), t.num_processes, t.seed)
    valid = _converter(train_data.rows_on(rows, d.split.valid), t.num_processes, t.seed)
    return pre, fine, valid


def distributed_train(spark: SparkSession, cfg: Config, d: Data, *, init: str, out: str, run_id: str) -> dict:
    """Petastorm converters over Spark rows + TorchDistributor: same code locally, on executors, on GPUs."""
    import torch
    from petastorm.spark import SparkDatasetConverter
    from pyspark.ml.torch.distributor import TorchDistributor

    t = cfg.settings.train
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, f"file://{_shared_dir(cfg)}")
    pre, fine, valid = _converters(cfg, d)
    try:
        spec = TrainSpec(
            init_checkpoint=init,
            pretrain_converter=pre,
            finetune_converter=fine,
            pretrain_rows=len(pre),
            finetune_rows=len(fine),
            checkpoint_path=out,
            batch_size=t.batch_size,
            pretrain_epochs=t.pretrain_epochs if not t.init_from else 0,
            finetune_epochs=t.finetune_epochs,
            lr=t.lr,
            seed=t.seed,
            mlflow_uri=mlflow.get_tracking_uri(),
            mlflow_run_id=run_id,
            valid_converter=valid,
            valid_rows=len(valid),
            patience=t.patience,
            next_item_weight=t.finetune_next_item_weight,
        )
        mlflow.log_params({f"train.{k}": v for k, v in spec_dict(spec).items() if k != "mlflow_uri"})
        log.info("rows: pretrain %d, fine-tune %d, validation %d", len(pre), len(fine), len(valid))
        gpu = torch.cuda.is_available() if t.use_gpu == "auto" else bool(t.use_gpu)
        dist = TorchDistributor(
            num_processes=t.num_processes,
            local_mode=spark.sparkContext.master.startswith("local"),
            use_gpu=gpu,
        )
        # Local mode copies the workers' output (progress and log lines) to sys.stdout: sent to stderr,
        # where every job's logs go, so stdout keeps one line, the TRAIN result.
        with contextlib.redirect_stdout(sys.stderr):
            return dist.run(train_worker, spec) or {}
    finally:
        for conv in (pre, fine, valid):
            conv.delete()


def extra_metrics(spark: SparkSession, cfg: Config, model: Any, d: Data) -> dict[str, float]:
    """Next-item recall/NDCG@20 and, on the synthetic shop, elasticity vs the true one (Spearman)."""
    hold = d.pandas["holdout:propensity"]
    top, target = next_item_targets(
        model, hold, k=20, min_item_id=first_frequent_id(int(d.vocab["hash_buckets"]))
    )
    out = {"next_item_recall_at_20": recall_at_k(top, target), "next_item_ndcg_at_20": ndcg_at_k(top, target)}
    truth = Path(cfg.settings.synthetic.truth) / "users"
    if tables.exists(spark, str(truth)) and (hold["source"] == "synthetic").any():
        true = (
            tables.read(spark, str(truth))
            .select(F.col("user_id").cast("string"), "price_elasticity")
            .toPandas()
        )
        est = pd.DataFrame(
            {"user_id": hold["user_id"], "est": predict_frame(model, hold)["price_elasticity"]}
        )
        both = est.groupby("user_id", as_index=False)["est"].mean().merge(true, on="user_id")
        out["elasticity_spearman"] = spearman(both["est"], both["price_elasticity"])
        # Level, not rank: the model's mean elasticity of P(buy | view) next to the mean true beta
        # (expected about beta x (1 - P(buy at the end of a mission)) ~ 0.5 beta; docs/training.md).
        out["elasticity_mean"] = float(both["est"].mean())
        out["elasticity_true_mean"] = float(both["price_elasticity"].mean())
    return out


def _report(
    cfg: Config, d: Data, model_rows: pd.DataFrame, model_preds: pd.DataFrame, tmp: str
) -> tuple[pd.DataFrame, str]:
    runs = [
        run_baselines(
            d.pandas["train"], d.pandas[f"valid:{t}"], d.pandas[f"holdout:{t}"], tasks=(t,), threads=1
        )
        for t in TASKS
    ]
    held = [r.results[r.results["split"] == "holdout"] for r in runs]
    results = pd.concat([model_rows, *held], ignore_index=True)
    preds = pd.concat([model_preds, *[r.predictions for r in runs]], ignore_index=True)
    rep = write_report(results, preds, Path(tmp) / "report", model_name="shopformer")
    (Path(tmp) / "report" / "table.txt").write_text(rep.table + "\n")  # what the demo's summary shows
    mlflow.log_artifacts(str(Path(tmp) / "report"), artifact_path="report")
    for r in results.to_dict("records"):
        mlflow.log_metrics(
            {
                f"holdout_{r['model']}_{r['task']}_{k}": float(r[k])
                for k in ("roc_auc", "pr_auc", "log_loss", "ece", "lift_top_decile")
                if pd.notna(r.get(k))
            }
        )
    return results, rep.table


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date, run_id: str) -> TrainReport:
    """Train, evaluate next to the baselines, log, register and gate; returns what happened."""
    d = prepare(spark, cfg)
    vocab = tables.read(spark, cfg.table("gold_vocabularies"))
    vocab_fp = fingerprint_text(vocab.where(F.col("vocab_version") == d.vocab["version"]))  # before training
    mlflow.set_tracking_uri(str(cfg.get("paths.mlflow_tracking_uri")))
    registry.use_experiment(cfg.settings.train.experiment, cfg.settings.paths.mlflow_artifacts)
    with (
        scratch(cfg) as shared,
        tempfile.TemporaryDirectory(dir=shared) as tmp,
        mlflow.start_run(run_name=run_id) as active,
        _holding(shared, active.info.run_id),
    ):
        mlflow.log_params(
            {
                "run_date": run_date.isoformat(),
                "vocab_version": d.vocab["version"],
                "model_size": cfg.settings.train.model_size,
            }
        )
        settings = redact_settings(cfg.settings.resolved())  # no credentials in the tracking store
        mlflow.log_params({f"conf.{k}": v for k, v in settings.items() if v is not None})
        init, ckpt = f"{tmp}/init.pt", f"{tmp}/model.pt"
        init_model(cfg, d, init)
        result = distributed_train(spark, cfg, d, init=init, out=ckpt, run_id=active.info.run_id)
        if "best_finetune_epoch" in result:  # and the epoch whose weights serve each task (training.py)
            mlflow.log_metric("best_finetune_epoch", result["best_finetune_epoch"])
            mlflow.log_metrics({f"served_epoch_{t}": e for t, e in result["served_epoch"].items()})
        model, _, extra = load_checkpoint(ckpt)
        rows, preds, calibrators = evaluate_model(model, d, "shopformer")
        save_checkpoint(ckpt, model, extra={**extra, "calibrators": calibrators})
        others = extra_metrics(spark, cfg, model, d)
        mlflow.log_metrics(others)
        _, table = _report(cfg, d, rows, preds, tmp)
        new = gate.gate_metrics(rows)
        version, promoted, why = gate.gate_and_register(spark, cfg, d, ckpt, new, tmp, vocab_fp=vocab_fp)
        log.info("training result: %s", {k: v for k, v in result.items() if k != "pretrain"})
    split = {"train": [x.isoformat() for x in d.split.train_dates]}
    for part in ("train", "valid", "holdout"):
        split |= {f"{part}:{t}": [x.isoformat() for x in v] for t, v in getattr(d.split, part).items()}
    return TrainReport(active.info.run_id, version, promoted, why, split, {**new, **others}, table)


ABOUT = """\
Train the sequence model on gold.user_snapshots and register it; print the model-vs-baselines table.

Time-based split (train / valid / holdout by as-of date), next-item pretraining then fine-tuning of the
heads through TorchDistributor with Petastorm data, calibration on valid, evaluation on the holdout next to
the baselines, an MLflow run with the report, and the `champion` alias moved only if the gate passes.
"""


def _train(args: cli.JobArgs) -> None:
    spark = build_spark(args.cfg, "train")
    report = run(spark, args.cfg, run_date=args.run_date, run_id=args.run_id)
    sys.stderr.write(report.table + "\n")
    cli.emit("TRAIN", {k: v for k, v in asdict(report).items() if k != "table"})


def main(argv: list[str] | None = None) -> int:
    """``jobs/train.py``: train, evaluate next to the baselines, register, gate."""
    return cli.run_main("train", cli.parser(ABOUT), argv, _train)
