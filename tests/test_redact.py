"""Credentials never reach a log line, a result line or MLflow params (issue 16 item 7): passwords in
URIs and secret query values are masked, settings named like secrets are masked whole, and nothing else
changes (the user and host still say where a connection went)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pyspark.logger.logger import JSONFormatter
from pyspark.sql import SparkSession

from shopformer import cli
from shopformer.config import load_config
from shopformer.errors import ShopformerError
from shopformer.redact import redact, redact_settings
from shopformer.scoring import job as scoring_job
from shopformer.scoring.transforms import verify_shipped


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("", ""),
        ("postgresql://u@db/mlflow", "postgresql://u@db/mlflow"),  # no password: nothing to mask
        ("http://host:5000/path@x", "http://host:5000/path@x"),  # a port, not a password
        ("postgresql://ops:hunter2@db:5432/mlflow", "postgresql://ops:***@db:5432/mlflow"),
        ("to http://a:b@h/x and s3a://KEY:SECRET@bucket/p", "to http://a:***@h/x and s3a://KEY:***@bucket/p"),
        ('{"error": "https://u:tok@h/api"}', '{"error": "https://u:***@h/api"}'),
        ("https://h/f.parquet?se=2024&sig=AbC%2F&Token=x", "https://h/f.parquet?se=2024&sig=***&Token=***"),
    ],
)
def test_redact_masks_passwords_and_secret_query_values_only(text: str, clean: str) -> None:
    assert redact(text) == clean


def test_settings_named_secret_are_masked_and_the_defaults_are_untouched() -> None:
    flat = {
        "spark.conf": {
            "spark.hadoop.fs.s3a.secret.key": "S3CR3T",
            "spark.hadoop.fs.s3a.endpoint": "http://s3",
        },
        "paths.mlflow_tracking_uri": "http://ops:hunter2@mlflow:5000",
        "train.api_key": "k",
        "train.lr": 0.001,
        "train.empty": None,
        "quality.paths": ["s3a://k:s@b/x"],
    }
    assert redact_settings(flat) == {
        "spark.conf": {"spark.hadoop.fs.s3a.secret.key": "***", "spark.hadoop.fs.s3a.endpoint": "http://s3"},
        "paths.mlflow_tracking_uri": "http://ops:***@mlflow:5000",
        "train.api_key": "***",
        "train.lr": 0.001,
        "train.empty": None,
        "quality.paths": ["s3a://k:***@b/x"],
    }
    resolved = load_config("local").settings.resolved()
    assert redact_settings(resolved) == resolved  # no default looks like a secret


def test_log_records_and_their_tracebacks_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    cli.configure_logging()
    log = logging.getLogger("shopformer.test_redact")
    with caplog.at_level(logging.INFO):
        log.info("connecting to %s", "postgresql://ops:hunter2@db/mlflow")
        try:
            raise ValueError("API request to https://ops:hunter2@mlflow/api failed")
        except ValueError:
            log.exception("lookup failed")
    # the plain formatter prints the traceback (``exc_text``); PySpark's JSON formatter reads the exception
    # itself (and takes over any handler added to a PySparkLogger, as caplog's can be in a full run)
    text = "\n".join(logging.Formatter("%(message)s").format(r) for r in caplog.records)
    as_json = "\n".join(JSONFormatter().format(r) for r in caplog.records)
    assert "hunter2" not in text + as_json
    assert '"class": "ValueError", "msg": "API request to https://ops:***@mlflow/api failed"' in as_json
    assert "postgresql://ops:***@db/mlflow" in text
    assert "ValueError: API request to https://ops:***@mlflow/api failed" in text


def test_a_shipped_model_lives_in_a_private_folder_and_is_refused_once_changed(
    spark: SparkSession, tmp_path: Path
) -> None:
    """The scoring model cache is private to the process (mode 0700, a fresh name), written atomically,
    and an executor refuses a shipped file whose bytes no longer match the hash in its name."""
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not really a checkpoint")
    name = scoring_job.ship(spark, str(checkpoint))
    shipped = scoring_job._ship_dir() / name
    assert shipped.read_bytes() == checkpoint.read_bytes()
    assert shipped.parent.stat().st_mode & 0o777 == 0o700
    assert list(shipped.parent.glob("*.partial")) == []
    verify_shipped(str(shipped))  # unchanged: accepted
    # tamper with a copy under the same name: changing the shipped file itself would poison the shared
    # session (every later task re-fetches it, and Spark refuses a file whose contents changed)
    tampered = tmp_path / "executor" / name
    tampered.parent.mkdir()
    tampered.write_bytes(b"changed after shipping")
    with pytest.raises(ShopformerError, match="does not match the hash in its name"):
        verify_shipped(str(tampered))
