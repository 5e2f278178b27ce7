"""The nightly snapshot through gold.user_state (docs/snapshots.md "Nightly: the user state").

``build_snapshots --run-date T`` (one date, no ``--build-vocab``, no label window of T complete) rolls the
state of T-1 forward by the events dated T-1 and builds the snapshot of T from the state of T. When silver
changed under a stored state (late events: sessionize rewrote older dates, a rerun, a forget), the run
replays forward from the stored state of the earliest changed date; without such a state (first run,
older than ``snapshots.state_retention_days``, or a change that cannot be dated) it builds the state of T
from the whole history once (the bootstrap). Changes are dated from Delta metadata only: the data files
of each ``event_date`` partition of silver at the version a state was built from, against now.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import tables
from shopformer.config import Config
from shopformer.features.prices import with_relative_price
from shopformer.features.snapshots import SnapshotSettings
from shopformer.features.state import (
    advance_state,
    bootstrap_state,
    snapshot_from_state,
    state_events,
)
from shopformer.schemas import GOLD_USER_STATE

log = logging.getLogger(__name__)
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Night:
    """How a snapshot run got its rows (fields of the job's result line)."""

    path: str  # incremental | bootstrap (nightly, through the state) | full (the range build)
    state_from: str | None = None  # the stored state the run rolled forward from
    days_replayed: int = 0  # days of silver rolled into the state (1 on a normal night)
    night_events_read: int | None = None  # silver events rolled in (bootstrap: all history before T)


def applies(
    cfg: Config, dates: list[dt.date], *, build_vocab: bool, label_cutoff: dt.date, s: SnapshotSettings
) -> bool:
    """True for a nightly run the state can serve: one date, no new vocabulary, state kept, and no label
    of that date due yet (labels need the future; the range build fills them)."""
    a = s.aggregates
    soonest = min(a.propensity_horizon_days, a.churn_horizon_days, s.price_label_days)
    return (
        len(dates) == 1
        and not build_vocab
        and cfg.settings.snapshots.state_retention_days > 0
        and dates[0] + dt.timedelta(days=soonest) > label_cutoff
    )


def _partitions(
    spark: SparkSession, path: str, column: str, version: int | None = None
) -> dict[dt.date, frozenset[str]] | None:
    """Data files per ``column`` partition of the Delta table at ``version`` (metadata only, no data read);
    None when a file path names no such partition (the change cannot be dated)."""
    if not tables.exists(spark, path):
        return {}
    files = tables.read(spark, path, as_of=version).inputFiles()
    found: dict[dt.date, set[str]] = {}
    for f in files:
        m = re.search(rf"/{column}=(\d{{4}}-\d{{2}}-\d{{2}})/", f)
        if m is None:
            return None
        found.setdefault(dt.date.fromisoformat(m.group(1)), set()).add(f)
    return {d: frozenset(v) for d, v in found.items()}


class _UndatableError(Exception):
    """Silver changed in a way the file listings cannot date: the state is rebuilt."""


def _changed_before(
    spark: SparkSession, silver: str, *, built_from: int, now: dict[dt.date, frozenset[str]], before: dt.date
) -> dt.date | None:
    """The earliest ``event_date`` < ``before`` whose silver files differ between version ``built_from``
    and now (None when none does)."""
    try:
        then = _partitions(spark, silver, "event_date", built_from)
    except Exception as exc:  # a version whose log is gone: rebuild rather than guess
        raise _UndatableError(f"silver version {built_from} is not readable ({exc})") from exc
    if then is None:
        raise _UndatableError("a silver file lies outside an event_date partition")
    changed = [d for d in set(then) | set(now) if d < before and then.get(d) != now.get(d)]
    return min(changed) if changed else None


def _replay_start(
    spark: SparkSession, cfg: Config, day: dt.date, silver_version: int, stored: set[dt.date]
) -> dt.date | None:
    """The date of the stored state (``stored``: the dates held) to roll forward from to reach ``day``:
    T-1 on a normal night, earlier after changes in silver; None: bootstrap."""
    silver = cfg.table("silver_events")
    now = _partitions(spark, silver, "event_date", silver_version)
    start = day - DAY
    while start in stored and now is not None:
        row = _stored(spark, cfg, start).select("silver_version").first()
        if row is None:  # an empty state (no user yet): nothing to roll forward
            return None
        try:
            changed = _changed_before(spark, silver, built_from=int(row[0]), now=now, before=start)
        except _UndatableError as exc:
            log.warning("%s: the state is rebuilt from the whole history", exc)
            return None
        if changed is None:
            return start
        log.info("silver changed on %s under the state of %s: replaying from there", changed, start)
        start = changed
    return None


def _night_events(silver: DataFrame, day: dt.date, reference_days: int) -> DataFrame:
    """The events dated ``day`` with their relative price: only the night's items' last
    ``reference_days`` days are read besides the day (an item's reference uses its own prices only)."""
    window = silver.where(F.col("event_date").between(day - dt.timedelta(days=reference_days), day))
    items = window.where(F.col("event_date") == day).select("source", "item_id").distinct()
    return (
        window.join(items, ["source", "item_id"], "left_semi")
        .transform(with_relative_price, reference_days=reference_days)
        .where(F.col("event_date") == day)
    )


def _write_state(df: DataFrame, cfg: Config, day: dt.date, run_id: str) -> None:
    tables.replace_where(
        df,
        cfg.table("gold_user_state"),
        predicate=f"as_of_date = DATE'{day.isoformat()}'",
        schema=GOLD_USER_STATE,
        partition_by=["as_of_date"],
        run_id=run_id,
    )


def _stored(spark: SparkSession, cfg: Config, day: dt.date) -> DataFrame:
    return tables.read(spark, cfg.table("gold_user_state")).where(F.col("as_of_date") == day)


def _roll_forward(
    spark: SparkSession, cfg: Config, silver: DataFrame, *, start: dt.date, day: dt.date, **kw: Any
) -> None:
    """States of start+1 .. ``day`` from the stored state of ``start``, one day and one commit at a time:
    each day reads the previous day's partition back, so no lineage grows. ``kw``: ``advance_state``'s
    max_len, s, silver_version and run_id."""
    for d in (start + DAY * i for i in range((day - start).days)):
        night = _night_events(silver, d, cfg.settings.snapshots.reference_price_days)
        _write_state(advance_state(_stored(spark, cfg, d), night, day=d, **kw), cfg, d + DAY, kw["run_id"])


def _bootstrap(cfg: Config, silver: DataFrame, *, day: dt.date, **kw: Any) -> None:
    """The state of ``day`` from the whole history: the one run that reads it all."""
    history = silver.where(F.col("event_date") < day).transform(
        with_relative_price, reference_days=cfg.settings.snapshots.reference_price_days
    )
    _write_state(bootstrap_state(history, as_of_date=day, **kw), cfg, day, kw["run_id"])


def _prune(spark: SparkSession, cfg: Config, stored: set[dt.date], run_id: str) -> None:
    """Drop the state partitions older than the newest ``state_retention_days`` (one MERGE delete)."""
    edge = max(stored) - DAY * (cfg.settings.snapshots.state_retention_days - 1)
    if min(stored) < edge:
        one = spark.createDataFrame([(1,)], "k int")
        on = f"t.as_of_date < DATE'{edge.isoformat()}'"
        tables.delete_matching(spark, cfg.table("gold_user_state"), one, on, run_id=run_id)


def _roll(spark: SparkSession, cfg: Config, *, day: dt.date, s: SnapshotSettings, run_id: str) -> Night:
    """Bring gold.user_state up to ``day`` (replaying or bootstrapping as needed), drop old partitions."""
    silver_path = cfg.table("silver_events")
    version = tables.version(spark, silver_path)
    silver = tables.read(spark, silver_path, as_of=version)
    stored = set(_partitions(spark, cfg.table("gold_user_state"), "as_of_date") or {})
    start = _replay_start(spark, cfg, day, version, stored)
    kw = {"max_len": s.max_len, "s": s.aggregates, "silver_version": version, "run_id": run_id}
    if start is None:
        log.info("no stored state to roll forward to %s from: built from the whole history", day)
        _bootstrap(cfg, silver, day=day, **kw)
    else:
        _roll_forward(spark, cfg, silver, start=start, day=day, **kw)
    _prune(spark, cfg, stored | {day}, run_id)
    rolled = silver.where(F.col("event_date") < day)
    read = (rolled if start is None else rolled.where(F.col("event_date") >= start)).count()
    if start is None:
        return Night("bootstrap", None, 0, read)
    return Night("incremental", start.isoformat(), (day - start).days, read)


def nightly(
    spark: SparkSession,
    cfg: Config,
    *,
    day: dt.date,
    s: SnapshotSettings,
    vocab: DataFrame,
    encode: Callable[[DataFrame, DataFrame], DataFrame],
    label_cutoff: dt.date,
    vocab_version: str,
    run_id: str,
) -> tuple[DataFrame, Night]:
    """The snapshot rows of ``day`` from gold.user_state (brought up to ``day`` first); ``encode`` gives
    the state's events their ids from ``vocab``."""
    night = _roll(spark, cfg, day=day, s=s, run_id=run_id)
    state = _stored(spark, cfg, day)
    events = state_events(state, as_of_date=day, population_days=s.aggregates.population_days)
    rows = snapshot_from_state(
        state,
        encode(events, vocab),
        as_of_date=day,
        s=s,
        label_cutoff=label_cutoff,
        vocab_version=vocab_version,
        run_id=run_id,
    )
    return rows, night
