"""Training end to end on real engines: snapshots in Delta -> Petastorm -> TorchDistributor (2 local
processes) -> MLflow (SQLite) registered model -> champion gate."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shopformer import registry, tables
from shopformer.config import Config, load_config
from shopformer.features import job as snapshots_job
from shopformer.model import job as train_job
from shopformer.schemas import SILVER_EVENTS
from tests.features.test_snapshots import random_rows, silver

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
VERSIONS = ("v2024-04-22", "v2024-04-29")  # the shop's vocabulary, then the one of the grown catalogue
TINY = [
    "train.model_size=tiny",
    "train.pretrain_epochs=1",
    "train.finetune_epochs=1",
    "train.batch_size=64",
    "train.num_processes=2",
    "snapshots.max_len=8",
    "snapshots.every_days=7",
    "snapshots.windows_days=[7,30]",
    "snapshots.price_max_views=4",
    "train.max_eval_rows=5000",
    "snapshots.churn_horizon_days=14",  # purged splits: 30 days would leave 120 days no churn training date
]


def test_gate_promotes_only_a_better_model() -> None:
    metrics = ["propensity_roc_auc", "churn_roc_auc"]
    new = {"propensity_roc_auc": 0.71, "churn_roc_auc": 0.69}
    assert registry.gate(new, None, metrics=metrics, min_delta=0.0)[0]
    assert not registry.gate(  # a tie on churn keeps the champion (tests/test_registry.py)
        new, {"propensity_roc_auc": 0.70, "churn_roc_auc": 0.69}, metrics=metrics, min_delta=0.0
    )[0]
    assert registry.gate(
        new, {"propensity_roc_auc": 0.70, "churn_roc_auc": 0.68}, metrics=metrics, min_delta=0.0
    )[0]
    ok, why = registry.gate(
        new, {"propensity_roc_auc": 0.70, "churn_roc_auc": 0.70}, metrics=metrics, min_delta=0.0
    )
    assert not ok and "churn_roc_auc" in why and "propensity" not in why
    assert not registry.gate(
        new, {"propensity_roc_auc": 0.70, "churn_roc_auc": 0.60}, metrics=metrics, min_delta=0.05
    )[0]


@pytest.fixture(scope="module")
def shop(spark: SparkSession, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A small random shop over 120 days, sessionized into silver and snapshotted weekly."""
    root: Path = tmp_path_factory.mktemp("train")
    cfg = load_config("local", [f"paths.root={root}", *TINY])
    events = silver(spark, random_rows(seed=21, users=120, n=6000, days=120))
    tables.overwrite(events, cfg.table("silver_events"), schema=SILVER_EVENTS, run_id="t")
    snapshots_job.run(
        spark, cfg, start=dt.date(2024, 1, 15), end=dt.date(2024, 4, 22), run_id="s", build_vocab=True
    )
    return cfg


def test_training_registers_a_champion_and_the_gate_keeps_it_against_a_worse_model(
    spark: SparkSession, shop: Config
) -> None:
    first = train_job.run(spark, shop, run_date=dt.date(2024, 4, 30), run_id="train:1")
    assert (first.model_version, first.promoted) == ("1", True)
    parts = ("train", "valid", "holdout")
    assert set(first.split) == {"train", *(f"{p}:{t}" for p in parts for t in ("propensity", "churn"))}
    # Purged: every training / validation label window [T, T+h) ends by the next split's first date.
    for task, h in (("propensity", 7), ("churn", 14)):
        dates = {p: [dt.date.fromisoformat(x) for x in first.split[f"{p}:{task}"]] for p in parts}
        assert max(dates["train"]) + dt.timedelta(days=h) <= min(dates["valid"])
        assert max(dates["valid"]) + dt.timedelta(days=h) <= min(dates["holdout"])
    assert first.split["train:churn"][-1] < first.split["train:propensity"][-1] <= first.split["train"][-1]
    assert 0.0 <= first.holdout["propensity_roc_auc"] <= 1.0
    # A second run that must beat the champion by more than any AUC can: registered, not promoted.
    strict = load_config("local", [f"paths.root={shop.get('paths.root')}", *TINY, "train.gate_min_delta=1.0"])
    second = train_job.run(spark, strict, run_date=dt.date(2024, 4, 30), run_id="train:2")
    assert (second.model_version, second.promoted) == ("2", False)
    # Reproducible: the same command (the gate's threshold does not touch training) gives the same task
    # metrics within issue 17's 0.005 (measured: 0.002 apart on this tiny shop; the data order itself is
    # exact, tests/model/test_training_seed.py). Next-item NDCG@20 is not held to it: measured 0.0052 apart.
    aucs = sorted(k for k in first.holdout if k.endswith(("_roc_auc", "_pr_auc")))
    assert len(aucs) == 4
    assert {k: second.holdout[k] for k in aucs} == pytest.approx(
        {k: first.holdout[k] for k in aucs}, abs=0.005, nan_ok=True
    )
    assert "kept the champion" in second.gate
    mlflow.set_tracking_uri(str(shop.get("paths.mlflow_tracking_uri")))
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("shopformer", "champion").version) == "1"
    run = client.get_run(first.mlflow_run_id)
    assert "finetune_total" in run.data.metrics  # logged by rank 0 from inside TorchDistributor
    assert "finetune_valid_total" in run.data.metrics  # early stopping watches the validation dates
    assert run.data.metrics["best_finetune_epoch"] in (0, 1)  # 0: the warm start was never beaten
    served = {t: run.data.metrics[f"served_epoch_{t}"] for t in ("propensity", "churn")}  # per-task stopping
    assert set(served.values()) <= {0.0, 1.0}, served
    assert any(a.path == "report" for a in client.list_artifacts(first.mlflow_run_id))
    # The registered pyfunc scores snapshot rows with calibrated probabilities.
    model = mlflow.pyfunc.load_model("models:/shopformer@champion")
    rows = tables.read(spark, shop.table("gold_user_snapshots")).limit(20).toPandas()
    scores = model.predict(rows)
    assert list(scores.columns) == ["propensity", "churn", "price_elasticity"]
    assert scores["propensity"].between(0, 1).all() and (scores["price_elasticity"] < 0).all()
    # The catalogue grows and the vocabulary is rebuilt: the champion is scored on its own ids.
    grown = _grow_catalogue(spark, shop)
    third = train_job.run(spark, grown, run_date=dt.date(2024, 4, 30), run_id="train:3")
    assert third.model_version == "3"
    gate = {
        k[len("gate_champion_") :]: v for k, v in client.get_run(third.mlflow_run_id).data.metrics.items()
    }
    # Same holdout users, dates and labels on the ids it learned: v1 reproduces its own logged metrics
    # (scored on the new ids it would read other items' embeddings, or past its table: IndexError).
    held = {k: gate.get(k, float("nan")) for k in aucs}  # an undefined metric (one class) is not logged
    assert held == pytest.approx({k: first.holdout[k] for k in aucs}, abs=1e-6, nan_ok=True)
    assert all(k in gate for k in aucs if k.startswith("propensity"))


def _grow_catalogue(spark: SparkSession, shop: Config) -> Config:
    """Five new users make five new items the best-sellers in the week after the last training date (no
    existing user's rows or labels change); vocabulary v2024-04-29 is built, in which every old item's id
    moved (ids are frequency ranks), and every snapshot is re-encoded with it. Returns its config."""
    t0 = dt.datetime(2024, 4, 23, 8)
    new = [
        (f"n{u}", str(t0 + dt.timedelta(minutes=10 * k)), "view", f"new{k % 5}", 5.0, "c9")
        for u in range(5)
        for k in range(500)
    ]
    events = silver(spark, random_rows(seed=21, users=120, n=6000, days=120) + new)
    tables.overwrite(events, shop.table("silver_events"), schema=SILVER_EVENTS, run_id="t2")
    root = shop.get("paths.root")
    cfg = load_config("local", [f"paths.root={root}", *TINY])
    snapshots_job.run(
        spark, cfg, start=dt.date(2024, 4, 29), end=dt.date(2024, 4, 29), run_id="s2", build_vocab=True
    )
    grown = load_config("local", [f"paths.root={root}", *TINY, "snapshots.vocab_version=v2024-04-29"])
    snapshots_job.run(spark, grown, start=dt.date(2024, 1, 15), end=dt.date(2024, 4, 22), run_id="s3")
    sizes = (
        tables.read(spark, shop.table("gold_vocabularies"))
        .where("kind = 'item'")
        .groupBy("vocab_version")
        .count()
        .collect()
    )
    assert {r["vocab_version"]: r["count"] for r in sizes} == {"v2024-04-22": 15, "v2024-04-29": 20}
    ids = tables.read(spark, shop.table("gold_vocabularies")).where("kind = 'item'")
    old, grown_ids = (
        ids.where(F.col("vocab_version") == v).select("token", F.col("id").alias(v)) for v in VERSIONS
    )
    moved = old.join(grown_ids, "token").where(F.col(VERSIONS[0]) != F.col(VERSIONS[1])).count()
    assert moved == 15  # every item the champion knows has another id in the new vocabulary
    return grown


def _torch_workers(pid: int) -> list[psutil.Process]:
    """TorchDistributor's torchrun agent under ``pid`` and the ranks it started (empty before it starts)."""
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    agents = [p for p in kids if "torch.distributed.run" in " ".join(_cmdline(p))]
    try:
        return [*agents, *(r for a in agents for r in a.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def _runs(client: MlflowClient) -> dict[str, mlflow.entities.Run]:
    """Every MLflow run of every experiment, by run id."""
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {r.info.run_id: r for r in runs}


def _registry_state(client: MlflowClient) -> list[tuple[str, dict[str, str], list[str]]]:
    versions = client.search_model_versions("name='shopformer'")
    return sorted((v.version, dict(v.tags), sorted(v.aliases)) for v in versions)


def test_a_run_killed_inside_torchdistributor_leaves_no_version_and_no_worker_and_its_scratch_goes(
    shop: Config, tmp_path: Path
) -> None:
    """``python jobs/train.py`` SIGKILLed (the job's process only, as the OOM killer does) while its
    TorchDistributor ranks train: the registry is as before (no new version, the champion alias where it
    was), no rank of the killed run trains on as an orphan (they would log to its MLflow run and write into
    the scratch folder the next run cleans), and what the run left there goes at the next run's start, which
    also marks the killed run's MLflow run KILLED (it stays RUNNING until then)."""
    mlflow.set_tracking_uri(str(shop.get("paths.mlflow_tracking_uri")))
    client = MlflowClient()
    before = _registry_state(client)
    runs_before = _runs(client)
    root = Path(shop.get("paths.root"))
    sets = [f"paths.root={root}", *TINY, "spark.master=local[2]", "spark.conf.spark.driver.memory=1g"]
    cmd = [sys.executable, str(REPO / "jobs" / "train.py"), "--run-date", "2024-04-30"]
    log = tmp_path / "train.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, *[a for s in sets for a in ("--set", s)]], cwd=root, stdout=out, stderr=out
        )
    try:
        deadline, workers = time.monotonic() + 300, []
        while proc.poll() is None and time.monotonic() < deadline and len(workers) < 3:
            time.sleep(0.2)
            workers = _torch_workers(proc.pid)  # torchrun's agent, then its 2 ranks
    finally:
        proc.kill()
        proc.wait()
    assert len(workers) >= 3, log.read_text()[-4000:]
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert alive == [], [(p.pid, _cmdline(p)) for p in alive]
    assert _registry_state(client) == before
    # The killed run's MLflow run stays RUNNING with nothing a rank logs after its epochs (an orphan that
    # trained on would have logged finetune_total and a finished checkpoint).
    killed = [r for k, r in _runs(client).items() if k not in runs_before]
    assert [(r.info.status, "finetune_total" in r.data.metrics) for r in killed] == [("RUNNING", False)]
    shared = Path(shop.get("train.petastorm_cache"))
    assert (shared / train_job.RUN_MARKER).read_text() == killed[0].info.run_id  # it names its MLflow run
    assert [p.name for p in shared.iterdir() if p.name != train_job.LOCK], "the kill left no scratch"
    with train_job.scratch(shop) as held:  # what every run does first
        assert [p.name for p in held.iterdir()] == [train_job.LOCK]
    # ... and the next run ends the killed run's MLflow run as KILLED, saying who did.
    ended = client.get_run(killed[0].info.run_id)
    assert (ended.info.status, ended.data.tags["shopformer.ended_by"]) == (
        "KILLED",
        "the next training run: this one was killed",
    )
    assert ended.info.end_time is not None and "finetune_total" not in ended.data.metrics
