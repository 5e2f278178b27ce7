"""Drives the real Airflow of ``.venv-airflow`` for test_airflow.py, which runs in ``.venv`` (Airflow
must never be installed there). Run with ``.venv-airflow/bin/python``; AIRFLOW_HOME, the DAGs folder, the
Variable and the connection come from the environment. Each command writes one JSON file:

    OUT.json inspect                       DagBag load (errors, time, heavy modules) + each DAG's facts
    OUT.json run DAG_ID ISO-DATETIME [TASKS] db migrate, dag.test() of that logical date (UTC; only the
                                           tasks TASKS matches run when given, e.g. "a|b", the others are
                                           marked success): task states, rendered argv
    OUT.json exit-codes                    a fake spark-submit exits 0, 1, ..., 6: what the DAG file's
                                           exit_codes() reads from each failure the provider's
                                           SparkSubmitHook raises, and what the DAG's operator raises

SHOPFORMER_TEST_NO_RETRIES=1 sets every task's retries to 0 first: a broken run fails at once instead of
waiting out the DAG's retry delay.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HEAVY = ("pyspark", "torch", "shopformer", "mlflow", "delta")


def _dagbag() -> tuple[Any, float]:
    from airflow.dag_processing.dagbag import DagBag

    t0 = time.perf_counter()
    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    return bag, time.perf_counter() - t0


# What inspect renders every task's application and arguments with (after the DagBag loaded without it).
RENDER_DS = "2024-03-03"
RENDER_VARIABLE = {"repo": "/repo", "conf": "local", "set": ["paths.root=/data"], "train_lookback_days": 14}


def _rendered(task: Any) -> dict[str, Any]:
    """The task's spark-submit application and argv for ``RENDER_DS`` and ``RENDER_VARIABLE``, rendered as
    the task would (its Jinja templates, and the Variable read when the task runs)."""
    from airflow.sdk.execution_time import macros

    context = {"ds": RENDER_DS, "macros": macros, "var": {"json": {"shopformer_config": RENDER_VARIABLE}}}
    jinja_env = task.get_template_env()
    saved = os.environ.get("AIRFLOW_VAR_SHOPFORMER_CONFIG")
    os.environ["AIRFLOW_VAR_SHOPFORMER_CONFIG"] = json.dumps(RENDER_VARIABLE)
    try:
        return {
            "application": jinja_env.from_string(task.application).render(**context),
            "args": task.application_args(context, jinja_env),
        }
    finally:
        if saved is None:
            os.environ.pop("AIRFLOW_VAR_SHOPFORMER_CONFIG")
        else:
            os.environ["AIRFLOW_VAR_SHOPFORMER_CONFIG"] = saved


def _task_facts(task: Any) -> dict[str, Any]:
    return {
        "rendered": _rendered(task),
        "operator": [c.__name__ for c in type(task).__mro__],
        "upstream": sorted(task.upstream_task_ids),
        "downstream": sorted(task.downstream_task_ids),
        "retries": task.retries,
        "retry_delay_s": task.retry_delay.total_seconds(),
        "timeout_s": task.execution_timeout.total_seconds() if task.execution_timeout else None,
        "depends_on_past": task.depends_on_past,
        "application": task.application,
        "display_name": task.task_display_name,
    }


def _dag_facts(dag: Any, first: datetime, last: datetime) -> dict[str, Any]:
    """What the scheduler sees: the DAG after serialization, and the runs it creates for [first, last]."""
    from airflow.serialization.serialized_objects import DagSerialization

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    runs = [i.logical_date.isoformat() for i in scheduler_dag.iter_dagrun_infos_between(first, last)]
    return {
        "timetable": type(dag.timetable).__name__,
        "cron": dag.timetable.expression,
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "dagrun_timeout_s": dag.dagrun_timeout.total_seconds() if dag.dagrun_timeout else None,
        "start_date": dag.start_date.isoformat(),
        "runs_between": runs,
        "tasks": {t.task_id: _task_facts(t) for t in dag.tasks},
    }


def inspect(out: Path) -> None:
    import airflow  # noqa: F401  (Airflow itself is not what the load time measures)

    before = set(sys.modules)
    bag, seconds = _dagbag()
    loaded = set(sys.modules) - before
    first, last = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 19, tzinfo=UTC)
    out.write_text(
        json.dumps(
            {
                "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
                "load_seconds": seconds,
                "file_seconds": {Path(s.file).name: s.duration.total_seconds() for s in bag.dagbag_stats},
                "heavy_modules": sorted(m for m in loaded if m.split(".")[0] in HEAVY),
                "dags": {d.dag_id: _dag_facts(d, first, last) for d in bag.dags.values()},
            },
            default=str,
        )
    )


def run(dag_id: str, day: str, out: Path, only: str | None = None) -> None:
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils import db
    from airflow.utils.session import create_session

    db.upgradedb()
    bag, _ = _dagbag()
    dag = bag.get_dag(dag_id)
    if os.environ.get("SHOPFORMER_TEST_NO_RETRIES") == "1":
        for task in dag.tasks:
            task.retries = 0
    t0 = time.perf_counter()
    logical = datetime.fromisoformat(day).replace(tzinfo=UTC)  # naive: UTC
    # ``only``: a regex of task ids that run (e.g. "score_users|evaluate_scores"); Airflow marks the
    # others success without running them
    dr = dag.test(logical_date=logical, mark_success_pattern=f"(?!(?:{only})$).*" if only else None)
    tasks = {}
    with create_session() as session:
        for ti in dr.get_task_instances(session=session):
            rendered = RenderedTaskInstanceFields.get_templated_fields(ti, session=session) or {}
            tasks[ti.task_id] = {
                "state": str(ti.state),
                "try_number": ti.try_number,
                "application": rendered.get("application"),
                "application_args": rendered.get("application_args"),
            }
    result = {"state": str(dr.state), "seconds": time.perf_counter() - t0, "tasks": tasks}
    out.write_text(json.dumps(result, default=str))


def exit_codes(out: Path) -> None:
    """For each exit code of a fake spark-submit: the exit codes the DAG file reads from the provider's
    failure, and what the DAG's own operator raises ("retry": an ordinary error, "fail": Airflow's
    AirflowFailException, which ends the task without retries)."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
    from airflow.sdk.exceptions import AirflowFailException

    path = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / "shopformer_dags.py"
    spec = importlib.util.spec_from_file_location("shopformer_dags", path)
    assert spec is not None and spec.loader is not None
    dags = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dags)
    with tempfile.TemporaryDirectory() as folder:  # the provider runs spark-submit from PATH only
        fake = Path(folder) / "spark-submit"
        fake.write_text('#!/bin/sh\necho "fake spark-submit $*"\nexit "$FAKE_EXIT"\n')
        fake.chmod(0o755)
        os.environ["PATH"] = os.pathsep.join([folder, os.environ["PATH"]])
        got: dict[str, Any] = {}
        for code in range(7):
            env = {"FAKE_EXIT": str(code)}
            try:
                SparkSubmitHook(conn_id="spark_default", env_vars=env).submit("app.py")
                read: Any = "no error"
            except Exception as exc:
                read = {"error": type(exc).__name__, "exit_codes": sorted(dags.exit_codes(exc))}
            task = dags.ShopformerJobOperator(
                task_id=f"exit_{code}", application="app.py", conn_id="spark_default", env_vars=env
            )
            try:
                task.execute({"ds": "2024-03-03"})
                outcome, message = "success", ""
            except AirflowFailException as exc:
                outcome, message = "fail", str(exc)
            except Exception as exc:
                outcome, message = "retry", f"{type(exc).__name__}: {str(exc)[:200]}"
            got[str(code)] = {"read": read, "operator": outcome, "message": message}
    # Kubernetes: the provider's report carries spark-submit's code and the driver's (hooks/spark_submit.py).
    k8s = "Cannot execute: spark-submit app.py. Error code is: 1. Kubernetes spark exit code is: 4\nLast ..."
    codes = dags.exit_codes(RuntimeError(k8s))
    got["kubernetes"] = {"exit_codes": sorted(codes), "no_retry": dags.no_retry_reason(codes) is not None}
    out.write_text(json.dumps(got))


if __name__ == "__main__":
    out, cmd, *rest = sys.argv[1:]
    if cmd == "inspect":
        inspect(Path(out))
    elif cmd == "run":
        run(rest[0], rest[1], Path(out), *(rest[2:3]))
    elif cmd == "exit-codes":
        exit_codes(Path(out))
    else:
        sys.exit(f"unknown command {cmd!r}: inspect | run | exit-codes")
