"""The jobs' failures and their exit codes (one meaning each: docs/operations.md "Exit codes").

Each message names the key, file, column or setting at fault. ``cli.run_main`` maps an exception to its
code through ``classify``; a failure after this process committed a write (``note_commit``, called by
``tables`` and the registry) exits ``FAILED_AFTER_COMMIT``, never a code that promises nothing was written.
"""

from __future__ import annotations

from dataclasses import dataclass

DONE = 0
STOPPED = 1  # stopped before writing anything
USAGE = 2  # command line or configuration, also when found at run time; nothing written
QUALITY_BREACH = 3  # wrote everything, then a quality threshold was breached
BAD_INPUT = 4  # wrote everything (the rejects too), then a bad-input threshold was breached
RESOURCE = 5  # ran out of memory, disk or executors before writing; the message names the setting to raise
FAILED_AFTER_COMMIT = 6  # failed after committing part of its writes: rerun the same date(s)


class ShopformerError(Exception):
    """Base class: a job catches these, logs the message and exits with ``exit_code``."""

    exit_code = STOPPED


class ConfigError(ShopformerError):
    """A configuration key is missing, unknown or has a value of the wrong kind (also when found at run
    time, e.g. a ``snapshots.vocab_version`` the table does not hold)."""

    exit_code = USAGE


class SourceError(ShopformerError):
    """An input file is missing or unreadable, or lacks a column the source mapping needs."""


class ReconciliationError(ShopformerError):
    """Counts written do not add up to counts read: something would have been lost."""


class UsageError(ShopformerError):
    """The command line asks for something the job cannot do (exit 2, as argparse's own usage errors)."""

    exit_code = USAGE


class BadInputError(ShopformerError):
    """The job wrote its rows and rejects, but the day's input breached a bad-input threshold
    (``ingest.max_reject_share``, or nothing accepted): the day is suspect and must not pass silently."""

    exit_code = BAD_INPUT


class ResourceError(ShopformerError):
    """Memory, disk or executors ran out; the message names the setting to raise. Never a bad input."""

    exit_code = RESOURCE


# What the JVM (through py4j), torch or Python say when a resource runs out, and the setting to raise.
_DRIVER_MEMORY = (
    "raise spark.conf.spark.driver.memory (local mode: the executors live in the driver) or, on a cluster, "
    "spark.conf.spark.executor.memory / spark.executor.memoryOverhead (--set key=value)"
)
RESOURCE_MARKERS: dict[str, str] = {
    "OutOfMemoryError": _DRIVER_MEMORY,
    "Failed to allocate": _DRIVER_MEMORY,
    "ExecutorLostFailure": _DRIVER_MEMORY,
    "Executor lost": _DRIVER_MEMORY,
    "Answer from Java side is empty": "the Spark JVM died (often the OS out-of-memory killer): "
    + _DRIVER_MEMORY,
    "Out of space in CodeCache": (
        "raise the JIT code cache: add -XX:ReservedCodeCacheSize=512m to "
        "spark.conf.spark.driver.extraJavaOptions"
    ),
    "No space left on device": "free disk, or move spark.conf.spark.local.dir and paths.root to a larger one",
    "CUDA out of memory": "lower train.batch_size (or train.model_size)",
    "Cannot allocate memory": "the host ran out of memory: " + _DRIVER_MEMORY,
}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in seen:
        seen.append(node)
        node = node.__cause__ or node.__context__
    return seen


def resource_failure(exc: BaseException) -> ResourceError | None:
    """A ResourceError (message: what ran out, and the setting to raise) when ``exc`` or its causes say a
    resource ran out; None otherwise. Reads the text py4j carries over from the JVM."""
    for node in _chain(exc):
        if isinstance(node, MemoryError):
            return ResourceError(f"the Python process ran out of memory: {_DRIVER_MEMORY}")
        text = str(node)
        for marker, hint in RESOURCE_MARKERS.items():
            if marker.lower() in text.lower():
                line = next((ln.strip() for ln in text.splitlines() if marker.lower() in ln.lower()), marker)
                return ResourceError(f"resource exhausted ({line[:300]}): {hint}")
    return None


@dataclass(frozen=True)
class Failure:
    """How a failed run ends: its exit code, a kind and a one-line message (``cli.run_main`` prints them)."""

    exit_code: int
    kind: str
    message: str
    expected: bool  # a ShopformerError or a recognised resource failure (no traceback needed)


def classify(exc: BaseException, *, committed: int) -> Failure:
    """The exit code for ``exc`` given how many commits this run made before it. Codes 3 and 4 are
    verdicts given after complete writes; any other failure after a commit is ``FAILED_AFTER_COMMIT``."""
    claimed = int(getattr(exc, "exit_code", STOPPED))
    found = (resource_failure(exc) if claimed == STOPPED else None) or exc  # e.g. a read that hit an OOM
    if isinstance(found, ShopformerError):
        code, expected = int(found.exit_code), True
    else:
        code, expected = STOPPED, False
    message = f"{type(found).__name__}: {found}"
    if committed and code not in (QUALITY_BREACH, BAD_INPUT):
        message += f" (after {committed} commit(s): rerun the same date(s))"
        code = FAILED_AFTER_COMMIT
    return Failure(code, type(found).__name__, message, expected)


_commits = [0]


def note_commit() -> None:
    """Record that this process committed a write (a Delta commit, a registry change, landing files)."""
    _commits[0] += 1


def commits() -> int:
    """Writes committed by this process so far (``cli.run_main`` compares it before and after a job)."""
    return _commits[0]
