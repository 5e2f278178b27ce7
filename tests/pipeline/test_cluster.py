"""Cluster mode on a real Spark standalone cluster on loopback (docs/cluster.md).

A master and two 1-core workers from the installed pyspark. The shop's tables up to its training snapshots
are set-up, not what is under test: a copy of the tables the Airflow harness's weekly training DAG built
(conftest.py ``airflow_pipeline``: the session's tiny shop, its as-of dates 01-03 .. 01-15 every 2 days and
their vocabulary), without its MLflow registry. Then train and score_users go through ``spark-submit`` with
the wheel of ``./dev wheel`` on ``--py-files`` and conf/cluster.yaml (paths and sizes shrunk). The executors
run a Python that has the project's dependencies but not its checkout, as on a real cluster, so the jobs
that run library code there (scoring's pandas UDF, TorchDistributor's training processes) can only pass by
importing the shipped wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import venv
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pyspark
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import load_config
from tests.pipeline import airflow_pipeline as ap
from tests.pipeline.test_end_to_end import summary

# Budget per test, enforced (pytest-timeout): the first test pays for the cluster, the wheel and the three
# spark-submits (~3 min in CI on 2 cores).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SPARK_HOME = Path(pyspark.__file__).resolve().parent
DELTA = f"io.delta:delta-spark_{'.'.join(pyspark.__version__.split('.')[:2])}_2.13:{version('delta-spark')}"
WORKERS = 2
SCORE_DATE = "2024-01-09"  # one of the training DAG's as-of dates
SIZES = [  # conf/cluster.yaml's executors shrunk to the 1-core, 2 GB workers
    "spark.conf.spark.executor.cores=1",
    "spark.conf.spark.executor.memory=768m",
    "spark.conf.spark.executor.memoryOverhead=384m",
    f"spark.conf.spark.cores.max={WORKERS}",
    f"train.num_processes={WORKERS}",
]
# Short-lived JVMs spend much of their CPU in the C2 JIT and parallel GC threads: C1 only, serial GC.
FAST_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

JOBS = ("train", "score")  # what is spark-submitted, in submit order


@dataclass(frozen=True)
class Cluster:
    url: str
    work_dirs: tuple[Path, ...]  # one per worker: an app-*/<executor>/ folder per application it served
    python: Path  # the executors' interpreter: the project's dependencies, not the checkout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as r:
            return sum(w["state"] == "ALIVE" for w in json.load(r)["workers"])
    except OSError:
        return 0


def _executor_python(where: Path) -> Path:
    """A venv whose .pth lists the project venv's site-packages: that folder's own .pth files (the editable
    install of lib/) are not read, so shopformer is importable only from what Spark ships. Its
    sitecustomize appends every command line it starts to ``started.log`` (who really used it)."""
    venv.EnvBuilder(with_pip=False).create(where)
    site = where / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "sitecustomize.py").write_text(
        f"with open({str(where / 'started.log')!r}, 'a') as log, open('/proc/self/cmdline', 'rb') as cmd:\n"
        "    log.write(cmd.read().replace(bytes(1), b' ').decode() + '\\n')\n"
    )
    python = where / "bin" / "python"
    probe = "import importlib.util as u; print(u.find_spec('shopformer'), u.find_spec('torch') is None)"
    seen = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert seen == ["None", "False"], "the executors' python must see torch but not the checkout"
    return python


def _spark_env(executor_python: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "SPARK_DAEMON_MEMORY": "384m",
        "SPARK_DAEMON_JAVA_OPTS": FAST_JVM,
        "PYSPARK_PYTHON": str(executor_python),
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Cluster:
    """Master + workers started by PID and stopped by PID (also when a start or a test fails)."""
    root = tmp_path_factory.mktemp("cluster")
    procs: list[subprocess.Popen[bytes]] = []

    def stop() -> None:  # workers first (they kill their executors), then the master
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    request.addfinalizer(stop)
    env = _spark_env(_executor_python(root / "executor-venv"))
    port, ui = _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"

    def start(name: str, cls: str, *args: str) -> None:  # spark-class execs java: the PID is the JVM's
        with (root / f"{name}.log").open("wb") as out:
            cmd = [str(SPARK_HOME / "bin" / "spark-class"), f"org.apache.spark.deploy.{cls}", *args]
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env))

    start("master", "master.Master", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui))
    work_dirs = tuple(root / f"worker{i}" for i in range(WORKERS))
    for i, work in enumerate(work_dirs):
        work.mkdir()
        start(
            f"worker{i}",
            "worker.Worker",
            "--host",
            "127.0.0.1",
            "--webui-port",
            "0",
            "--cores",
            "1",
            "--memory",
            "2g",
            "--work-dir",
            str(work),
            url,
        )
    deadline = time.monotonic() + 120
    while _alive_workers(ui) < WORKERS:
        assert all(p.poll() is None for p in procs), f"a daemon exited: see {root}/*.log"
        assert time.monotonic() < deadline, f"workers did not register in 120 s: see {root}/*.log"
        time.sleep(1)
    return Cluster(url, work_dirs, Path(env["PYSPARK_PYTHON"]))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([str(REPO / "dev"), "wheel", str(out)], capture_output=True, text=True, check=True)
    path = Path(done.stdout.strip())
    assert path.parent == out and path.name.startswith("shopformer-") and path.name.endswith("-none-any.whl")
    return path


def submit(
    cluster: Cluster, wheel: Path, root: Path, job: str, *args: str, conf: str = "cluster"
) -> subprocess.CompletedProcess[str]:
    """``spark-submit`` one job to the cluster as docs/cluster.md shows, every path under ``root``."""
    overrides = [  # the history's shop, model and small Spark, then cluster.yaml's paths and sizes
        *ap.overrides(root),
        f"paths.landing={root}/landing",
        f"train.petastorm_cache={root}/petastorm",
        f"paths.mlflow_tracking_uri=sqlite:///{root}/mlflow.db",
        *SIZES,
    ]
    cmd = [
        str(Path(sys.executable).parent / "spark-submit"),
        "--master",
        cluster.url,
        "--packages",
        DELTA,
        "--driver-memory",
        "1g",
        "--py-files",
        str(wheel),
        "--conf",
        f"spark.driver.extraJavaOptions={FAST_JVM}",
        "--conf",
        f"spark.executor.extraJavaOptions={FAST_JVM}",
        # PySpark puts only .zip/.egg/.jar py-files on the executors' sys.path, and TorchDistributor's
        # torchrun processes see PYTHONPATH only: the wheel's name, relative to the executor's folder.
        "--conf",
        f"spark.executorEnv.PYTHONPATH={wheel.name}",
        str(REPO / "jobs" / f"{job}.py"),
        "--conf",
        conf,
        *args,
    ]
    for o in overrides:
        cmd += ["--set", o]
    env = _spark_env(cluster.python)
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (
        f"{job} exited {done.returncode}:\n{done.stdout[-6000:]}{done.stderr[-2000:]}"
    )
    return done


@pytest.fixture(scope="module")
def shop(airflow_pipeline: ap.Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tables of the Airflow harness's root (its shop's silver tables, the weekly training DAG's
    snapshots and vocabulary) in a root of this module's own, without its registry: the cluster's training
    registers version 1 in a registry of its own."""
    root = tmp_path_factory.mktemp("shop")
    skip = shutil.ignore_patterns("petastorm_cache", "*.log", "mlflow.db", "mlruns", "airflow-*")
    return Path(shutil.copytree(airflow_pipeline.root, root, ignore=skip, dirs_exist_ok=True))


@pytest.fixture(scope="module")
def pipeline(shop: Path, cluster: Cluster, wheel: Path) -> dict:
    """train -> score_users, each one spark-submit to the cluster."""
    out: dict = {"root": shop}
    out["train"] = submit(cluster, wheel, shop, "train", "--run-date", ap.LAST_LANDING)
    # conf/local.yaml names a local[*] master: under spark-submit the cluster must still be used.
    out["score"] = submit(cluster, wheel, shop, "score_users", "--run-date", SCORE_DATE, conf="local")
    return out


def _apps(work_dir: Path) -> list[Path]:
    return sorted(p for p in work_dir.iterdir() if p.name.startswith("app-"))


def test_every_job_ran_on_the_cluster_executors(pipeline: dict, cluster: Cluster, wheel: Path) -> None:
    for job in JOBS:  # score_users ran with conf/local.yaml's local[*]: spark-submit's master won
        # (spark-submit merges the Python driver's stderr, where the jobs log, into its stdout)
        assert f"up (master={cluster.url})" in pipeline[job].stdout, job
    for work in cluster.work_dirs:
        apps = _apps(work)
        assert len(apps) == len(JOBS), work  # one executor of every application on every worker
        executors = [e for a in apps for e in a.iterdir() if e.is_dir()]
        assert len(executors) == len(JOBS) and all((e / wheel.name).is_file() for e in executors)
        ran = [e for e in executors if "Finished task" in (e / "stderr").read_text()]
        assert len(ran) >= len(JOBS) - 1, f"{work}: tasks ran in {len(ran)} applications only"
    started = (cluster.python.parents[1] / "started.log").read_text()
    assert "pyspark.daemon" in started  # the Python workers ran the interpreter without the checkout


def test_training_ran_one_process_per_executor(pipeline: dict, cluster: Cluster) -> None:
    train = pipeline["train"]
    report = summary(train, "TRAIN")
    assert (report["model_version"], report["promoted"]) == ("1", True)
    assert "Started distributed training with 2 executor processes" in train.stdout
    assert "'world_size': 2" in train.stdout
    for work in cluster.work_dirs:  # each worker's executor ran one task of the barrier stage
        (executor,) = [e for e in _apps(work)[JOBS.index("train")].iterdir() if e.is_dir()]
        assert "INFO BarrierTaskContext: Task" in (executor / "stderr").read_text(), work
    torchruns = [
        ln
        for ln in (cluster.python.parents[1] / "started.log").read_text().splitlines()
        if "torch_run_process_wrapper" in ln
    ]
    assert len(torchruns) == 2 and all("--nnodes=2" in ln for ln in torchruns)  # one rank per task
    client = MlflowClient(f"sqlite:///{pipeline['root']}/mlflow.db")
    assert str(client.get_model_version_by_alias("shopformer", "champion").version) == "1"
    assert "finetune_total" in client.get_run(report["mlflow_run_id"]).data.metrics  # logged by rank 0


def test_scores_cover_every_snapshot_user(spark: SparkSession, pipeline: dict) -> None:
    cfg = load_config("cluster", [f"paths.root={pipeline['root']}"])
    report = summary(pipeline["score"], "SCORES")
    snaps = tables.read(spark, cfg.table("gold_user_snapshots")).where(F.col("as_of_date") == SCORE_DATE)
    scores = tables.read(spark, cfg.table("scores_user_scores")).where(F.col("as_of_date") == SCORE_DATE)
    assert report["users_scored"] == scores.count() == snaps.count() > 100
    assertDataFrameEqual(scores.select("source", "user_id"), snaps.select("source", "user_id"))
    assert (
        scores.where(~F.col("propensity_7d").between(0, 1) | ~F.col("churn_30d").between(0, 1)).count() == 0
    )
