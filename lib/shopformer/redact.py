"""Secrets out of logs, result lines and MLflow params (docs/operations.md "Who can change what").

Connection strings carry passwords (``postgresql://user:pw@host/db``, ``https://user:token@mlflow``),
signed URLs carry tokens in their query, and cloud keys are settings (``spark.hadoop.fs.s3a.secret.key``).
Jobs log their resolved settings, log MLflow params and print errors that quote paths and URIs: all of it
passes through here. The JVM's own log4j lines do not (Spark redacts those itself:
``spark.redaction.regex``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

MASK = "***"
# scheme://user:secret@ -> scheme://user:***@ (the user and the host stay: they say where, not how)
_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/@:'\"]*):[^\s/@'\"]+@")
# ?token=...&sig=... -> ?token=***&sig=***
_QUERY = re.compile(
    r"([?&;](?:password|passwd|pwd|token|access_token|secret|sig|signature|api_?key|key|credential)=)"
    r"[^&\s'\"]+",
    re.IGNORECASE,
)
# settings whose name says they are a secret: the whole value goes
SECRET_NAME = re.compile(r"password|passwd|secret|token|credential|api_?key|access\.key", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` and secret query values masked."""
    return _QUERY.sub(rf"\1{MASK}", _USERINFO.sub(rf"\1:{MASK}@", text))


def redact_value(name: str, value: Any) -> Any:
    """A setting's value fit to log: masked when its name says secret, URIs redacted inside strings,
    mappings and lists walked (``spark.conf`` holds Hadoop credentials by their own names)."""
    if value is None:
        return None
    if SECRET_NAME.search(name):
        return MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(f"{name}.{k}", v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(name, v) for v in value)
    return value


def redact_settings(flat: dict[str, Any]) -> dict[str, Any]:
    """``Settings.resolved()`` fit to log or to send to MLflow."""
    return {k: redact_value(k, v) for k, v in flat.items()}


class RedactedError(Exception):
    """Stands in for an exception whose message held a secret, in a log record's ``exc_info``: formatters
    that read the exception itself rather than ``exc_text`` (PySpark's JSON formatter) print it clean."""


def _clean_exc_info(exc_info: Any) -> Any:
    """``exc_info`` with the exception swapped for a :class:`RedactedError` carrying the redacted message
    and the same traceback when its message holds a secret; the exception type (first item) is kept."""
    kind, value, tb = exc_info
    message = "" if value is None else str(value)
    clean = redact(message)
    if clean == message:
        return exc_info
    return kind, RedactedError(clean).with_traceback(tb), tb


def redacting(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """A log record factory whose records carry their message (and traceback) already redacted, so every
    handler prints it clean: the root's, Airflow's task log, a test's capture. Records are made only for
    enabled levels, so the eager formatting costs what the handler would have spent anyway."""

    def make(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: left for the handler to report, as logging does
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = _clean_exc_info(record.exc_info)
        return record

    make.redacts = True  # type: ignore[attr-defined]
    return make
