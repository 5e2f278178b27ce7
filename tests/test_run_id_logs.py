"""Every log line of a job carries its run id, so a line grepped out of a task log still names its run,
and no line (nor the result line) carries a credential; the job is run as Airflow runs it,
``python jobs/<job>.py`` in its own process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # a job in its own process

REPO = Path(__file__).resolve().parents[1]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def test_every_log_line_of_a_job_names_its_run_and_none_carries_a_password(tmp_path: Path) -> None:
    """The tracking server's URI has a password and refuses connections: the lookup fails with an error
    that quotes the URI, in the logs and the result line, with the password masked."""
    uri = "paths.mlflow_tracking_uri=http://ops:hunter2@127.0.0.1:9/"  # port 9 (discard): refused
    argv = ["--run-date", "2024-03-01", "--rollback", "--run-id", "nightly__2024-03-01", "--set", uri]
    done = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "promote_model.py"), *argv, "--set", f"paths.root={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
    )
    assert done.returncode == 1, done.stderr  # the registry lookup failed: nothing to roll back to
    lines = [ln for ln in done.stderr.splitlines() if LOG_LINE.match(ln)]
    assert len(lines) >= 2, done.stderr  # the settings line and the error at least
    assert all("[nightly__2024-03-01]" in ln for ln in lines), lines
    assert any("RegistryError" in ln and "http://ops:***@127.0.0.1:9/api" in ln for ln in lines), lines
    assert "http://ops:***@127.0.0.1:9/api" in done.stdout
    assert "hunter2" not in done.stdout + done.stderr
