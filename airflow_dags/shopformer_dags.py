"""shopformer's Airflow DAGs: ``shopformer_nightly`` (daily scores), ``shopformer_training`` (weekly model),
``shopformer_maintenance`` (weekly Delta OPTIMIZE + VACUUM).

Every task is a ``ShopformerJobOperator`` (a ``SparkSubmitOperator`` that knows the jobs' exit codes, below)
that submits one ``<repo>/jobs/<job>.py`` with ``--run-date``
``{{ ds }}``, ``--conf <env>`` and the ``--set`` overrides below; graphs, schedules, dates: docs/airflow.md.
This module imports Airflow only (no pyspark, torch or shopformer): the DAG processor parses it often.

Settings live in Airflow, not here. They are read when a task runs, so a change needs no redeploy:

Variable ``shopformer_config`` (JSON; only ``repo`` is required)::

    {"repo": "/opt/shopformer",                       # checkout holding jobs/ and conf/
     "python": "/opt/shopformer/.venv/bin/python",    # PYSPARK_PYTHON, PYSPARK_DRIVER_PYTHON
     "spark_submit": "/opt/shopformer/.venv/bin/spark-submit",  # its folder goes first on PATH
     "conf": "local",                                 # --conf: an env name in conf/ or a YAML path
     "set": ["paths.root=/data/shopformer"],          # --set overrides, in order, for every job
     "packages": "io.delta:delta-spark_4.0_2.13:4.4.0",  # --packages (default: Delta's; null: none)
     "spark_conf": {"spark.driver.memory": "4g"},     # --conf key=value Spark properties
     "py_files": "/opt/shopformer/dist/shopformer-0.1.0-py3-none-any.whl",  # cluster mode: the library
     "env": {"JAVA_HOME": "/usr/lib/jvm/java-17"},    # more environment for spark-submit (client mode)
     "train_lookback_days": 182}                      # training as-of dates: [ds - this, ds], weekly

Connection ``spark_default`` (conn_type ``spark``): the master (``host``: ``local[4]``, ``yarn``,
``spark://host:7077``, ``k8s://...``) and extras such as ``deploy-mode``. The jobs get
``--set spark.master=null`` first, so the connection's master wins over the conf file's (a later
``set`` entry may still override it). The provider runs ``spark-submit`` from PATH only, hence
``spark_submit`` names a file whose folder is put first on PATH (client mode; in cluster modes keep
``spark-submit`` on the worker's PATH and leave ``python``/``spark_submit``/``env`` out).

Retries follow the jobs' exit codes (lib/shopformer/errors.py, docs/operations.md "Exit codes"): 2 (usage
or configuration), 3 (score quality breached, everything written) and 4 (bad input, the night and its
rejects written) fail the task at once, because a rerun of the same command cannot change the answer; 1,
5, 6 and anything else (a timeout, a killed process) are retried: a late file or a busy cluster may be
fine ten minutes later, and rerunning the date is the documented remedy for 6 (docs/airflow.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, CronDataIntervalTimetable, Variable, chain
from airflow.sdk.exceptions import AirflowFailException

VARIABLE = "shopformer_config"
DELTA_PACKAGES = "io.delta:delta-spark_4.0_2.13:4.4.0"  # ../shared/stack/README.md item 2

# Exit codes of jobs/*.py (lib/shopformer/errors.py) that no retry can change: the task fails at once with
# this reason (Airflow's AirflowFailException skips the remaining retries). Every other failure is retried:
# 1 stopped before writing (a late landing file may have arrived), 5 out of memory/disk/executors (a busy
# cluster may have room again; if the job simply needs more, the retries fail alike: raise the setting the
# message names), 6 failed after a commit (rerunning the date is the documented remedy).
NO_RETRY_EXITS: dict[int, str] = {
    2: "usage or configuration error (exit 2), nothing written: fix the Variable, conf or command, then "
    "clear the task",
    3: "score quality threshold breached (exit 3): scores and scores.score_quality are written; the job's "
    "last log line names the metric",
    4: "bad input (exit 4): the night and its rejects are written but the reject share passed "
    "ingest.max_reject_share (or nothing was accepted); read bronze.events_rejected, fix the source or the "
    "delivery, then clear the task",
}

# The first night the nightly DAG covers (the bundled synthetic shop's first day): catchup=True creates
# every night since, oldest first. Set it to a deployment's first landing date.
START = pendulum.datetime(2024, 1, 1, tz="UTC")

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "shopformer",
    "retries": 2,
    "retry_delay": timedelta(minutes=10),
    "depends_on_past": False,
}


def settings() -> dict[str, Any]:
    """The Variable, read at run time (never at parse time: no metadata-DB hit on every parse)."""
    cfg = Variable.get(VARIABLE, deserialize_json=True)
    if not isinstance(cfg, dict) or not cfg.get("repo"):
        raise ValueError(f"Variable {VARIABLE} must be a JSON object with at least 'repo' (module docstring)")
    return cfg


class FromSettings:
    """A templated field computed when the task runs: Airflow calls it with the context and Jinja env.

    Used where a template string cannot express the value: a variable number of ``--set`` arguments,
    environment dicts, optional flags.
    """

    def __init__(self, build: Callable[[dict[str, Any], dict[str, Any], Any], Any], label: str) -> None:
        self.build, self.label = build, label

    def __call__(self, context: dict[str, Any], jinja_env: Any) -> Any:
        return self.build(settings(), context, jinja_env)

    def __repr__(self) -> str:  # what the UI shows as the field's template
        return f"<{self.label} from Variable {VARIABLE}>"


def job_args(*templates: str) -> FromSettings:
    """``templates`` (Jinja, e.g. ``--run-date {{ ds }}``) + ``--conf <conf>`` + ``--set`` overrides."""

    def build(cfg: dict[str, Any], context: dict[str, Any], jinja_env: Any) -> list[str]:
        args = [jinja_env.from_string(t).render(**context) for t in templates]
        args += ["--conf", str(cfg.get("conf", "local"))]
        for item in ["spark.master=null", *cfg.get("set", [])]:
            args += ["--set", str(item)]
        return args

    return FromSettings(build, " ".join(templates) + " --conf <conf> --set <set...>")


def _env(cfg: dict[str, Any], _context: dict[str, Any], _jinja: Any) -> dict[str, str]:
    env = {"HF_HUB_OFFLINE": "1", **{k: str(v) for k, v in cfg.get("env", {}).items()}}
    if cfg.get("python"):
        env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = str(cfg["python"])
    if cfg.get("spark_submit"):
        folder = os.path.dirname(os.path.abspath(str(cfg["spark_submit"])))
        env["PATH"] = os.pathsep.join([folder, env.get("PATH", os.environ.get("PATH", ""))])
    return env


def _spark_conf(cfg: dict[str, Any], _context: dict[str, Any], _jinja: Any) -> dict[str, str]:
    conf = {k: str(v) for k, v in cfg.get("spark_conf", {}).items()}
    if cfg.get("python"):  # executors too (cluster mode, where env vars do not reach them)
        conf.setdefault("spark.pyspark.python", str(cfg["python"]))
    return conf


def _option(key: str, default: str | None = None) -> FromSettings:
    """An optional string setting; null or "" in the Variable leaves the spark-submit option out."""
    return FromSettings(lambda cfg, _c, _j: cfg.get(key, default) or None, key)


# The provider's public failure report: SparkSubmitHook.submit raises AirflowException("Cannot execute:
# <command>. Error code is: <spark-submit's exit code>." [+ "Kubernetes spark exit code is: <driver's>"]
# + the output's tail). The exit code is not exposed otherwise (only in the hook's private Popen).
_EXIT_CODES = re.compile(
    r"Cannot execute: .*?\. Error code is: (-?\d+)\.(?: Kubernetes spark exit code is: (-?\d+))?", re.S
)


def exit_codes(error: BaseException) -> set[int]:
    """The exit codes (spark-submit's, and on Kubernetes the driver's) a failed spark-submit reports; empty
    when ``error`` is not that report."""
    found = _EXIT_CODES.search(str(error))
    return {int(code) for code in found.groups() if code is not None} if found else set()


def no_retry_reason(codes: Iterable[int]) -> str | None:
    """Why a failure with these exit codes must not be retried (``NO_RETRY_EXITS``), or None: retry it."""
    return next((NO_RETRY_EXITS[c] for c in sorted(codes) if c in NO_RETRY_EXITS), None)


class ShopformerJobOperator(SparkSubmitOperator):
    """SparkSubmitOperator that fails at once, without retries, on an exit code a rerun cannot change
    (``NO_RETRY_EXITS``): retrying would only delay the alert by the retry delays. Any other failure
    (including a report this module cannot read, e.g. a cluster mode's) is retried as usual."""

    def execute(self, context: Any) -> None:
        try:
            super().execute(context)
        except Exception as exc:
            reason = no_retry_reason(exit_codes(exc))
            if reason is not None:
                raise AirflowFailException(f"{self.task_id} {context.get('ds')}: {reason}") from exc
            raise


def spark_job(
    task_id: str,
    job: str,
    *templates: str,
    timeout: timedelta,
    **kwargs: Any,
) -> ShopformerJobOperator:
    """One ``jobs/<job>.py`` through spark-submit, configured from the Variable and ``spark_default``."""
    return ShopformerJobOperator(
        task_id=task_id,
        application=f"{{{{ var.json.{VARIABLE}.repo }}}}/jobs/{job}.py",
        application_args=job_args(*templates),
        conn_id="spark_default",
        name=f"shopformer-{job}-{{{{ ds }}}}",
        env_vars=FromSettings(_env, "environment"),
        conf=FromSettings(_spark_conf, "spark_conf"),
        packages=_option("packages", DELTA_PACKAGES),
        py_files=_option("py_files"),
        execution_timeout=timeout,
        **kwargs,
    )


RUN_DATE: Sequence[str] = ("--run-date", "{{ ds }}")
CHAMPION_VOCAB: Sequence[str] = ("--set", "snapshots.vocab_version=champion")

with DAG(
    dag_id="shopformer_nightly",
    description="Nightly scores of the as-of date ds: ingest -> silver -> snapshots -> scores -> quality",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=START,
    catchup=True,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=8),
    tags=["shopformer"],
    doc_md=__doc__,
) as nightly:
    chain(
        spark_job("ingest_events", "ingest_events", *RUN_DATE, timeout=timedelta(hours=1)),
        # Seeded with the sessions of the days before: a day needs the previous day's run.
        spark_job("sessionize", "sessionize", *RUN_DATE, timeout=timedelta(hours=1), depends_on_past=True),
        # The champion's vocabulary, not the newest: a training run that lost the gate may have built a
        # newer one that the scoring model does not understand.
        spark_job(
            "build_snapshots", "build_snapshots", *RUN_DATE, *CHAMPION_VOCAB, timeout=timedelta(hours=2)
        ),
        spark_job("embed_items", "embed_items", *RUN_DATE, timeout=timedelta(hours=1)),
        spark_job("score_users", "score_users", *RUN_DATE, timeout=timedelta(hours=2)),
        spark_job("evaluate_scores", "evaluate_scores", *RUN_DATE, timeout=timedelta(minutes=30)),
    )

with DAG(
    dag_id="shopformer_training",
    description="Weekly model: training snapshots with a new vocabulary -> train, register, champion gate",
    schedule=CronDataIntervalTimetable("0 4 * * 1", timezone="UTC"),
    start_date=START,
    catchup=False,  # only the newest week's model matters: a missed week is not retrained later
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=12),
    tags=["shopformer"],
    doc_md=__doc__,
) as training:
    lookback = f"{{{{ macros.ds_add(ds, -var.json.{VARIABLE}.get('train_lookback_days', 182)) }}}}"
    chain(
        spark_job(
            "build_snapshots",
            "build_snapshots",
            "--run-date",
            lookback,
            "--end-date",
            "{{ ds }}",
            "--build-vocab",
            timeout=timedelta(hours=3),
        ),
        spark_job(
            "train",
            "train",
            *RUN_DATE,
            timeout=timedelta(hours=6),
            task_display_name="train, register, gate + promote champion",
            doc_md="jobs/train.py registers every model and moves the `champion` alias only when it "
            "beats the current champion on this run's holdout (lib/shopformer/model/gate.py, registry.py).",
        ),
    )

with DAG(
    dag_id="shopformer_maintenance",
    description="Weekly table maintenance: Delta OPTIMIZE (compact small files) + VACUUM (keep 168 h)",
    # Sundays: a day away from the training (Mondays 04:00, up to 12 h) that reads half a year of snapshots;
    # a clash with a slow nightly write is a Delta write conflict that the retries absorb.
    schedule=CronDataIntervalTimetable("0 6 * * 0", timezone="UTC"),
    start_date=START,
    catchup=False,  # OPTIMIZE and VACUUM cover everything up to now: a missed week is done by the next one
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    dagrun_timeout=timedelta(hours=6),
    tags=["shopformer"],
    doc_md=__doc__,
) as maintenance:
    spark_job(
        "maintain_tables",
        "maintain_tables",
        *RUN_DATE,  # lineage only (the run id in each commit's userMetadata): it maintains whole tables
        timeout=timedelta(hours=4),
        doc_md="jobs/maintain_tables.py (lib/shopformer/ops/maintain.py): OPTIMIZE then VACUUM of every "
        "existing table, keeping maintenance.retain_hours (168 h) of time travel.",
    )
