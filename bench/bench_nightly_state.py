"""Benchmark (not a test): the nightly snapshot through gold.user_state vs the full recompute, on shops with
30, 60 and 120 days of history at the same daily volume (issue 15: the nightly path's time must stay flat).

Per history length H, a synthetic silver.events of H days (``--users`` users, ``--per-day`` events a day,
the real sessionize transform) and a vocabulary are written under ``<root>/h<H>``; then, in one Spark
session (one JVM for every step, warmed up first, so JVM start-up is not in the numbers):

1. ``bootstrap``: ``build_snapshots --run-date T-1``: the state of T-1 from the whole history (set-up; the
   first night of a shop costs this once);
2. ``nightly``: ``build_snapshots --run-date T``: state(T-1) + the events of T-1 -> state(T) -> snapshot;
3. ``full``: the same date with ``snapshots.state_retention_days=0``: the range build over all history.

Each step is ``features.job.run`` as the job's main calls it; wall s and CPU s (this process + its JVM) are
measured, and the two snapshots of T are compared (row count and an order-independent hash of every row).

    .venv/bin/python bench/bench_nightly_state.py --users 1000 --per-day 2000 --days 30 60 120 \\
        --out bench/results/nightly_state.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.features import job
from shopformer.features.vocab import build_vocab
from shopformer.schemas import BRONZE_EVENTS, GOLD_VOCABULARIES, SILVER_EVENTS
from shopformer.sessions.transforms import assign_sessions
from shopformer.spark import build_spark

log = logging.getLogger("bench")
LAST = dt.date(2024, 6, 1)  # T: the night measured; history ends the day before


def events(spark: SparkSession, *, users: int, per_day: int, days: int, items: int = 2000) -> DataFrame:
    """``days`` days before ``LAST`` of ``per_day`` events each as bronze.events rows (skewed items,
    80 % views, promotions on a fifth of the events), deterministic."""
    first = LAST - dt.timedelta(days=days)
    ids = spark.range(days * per_day, numPartitions=8)
    day = F.date_add(F.lit(first), (F.col("id") / per_day).cast("int"))
    item = (F.pow(F.rand(3), F.lit(3)) * items).cast("int")
    kind = F.rand(4)
    etype = (
        F.when(kind < 0.8, "view")
        .when(kind < 0.9, "cart")
        .when(kind < 0.93, "remove_from_cart")
        .otherwise("purchase")
    )
    price = ((item % 50) + 5).cast("double") * F.when(F.rand(5) < 0.2, 0.8).otherwise(1.0)
    cols = {
        "event_id": F.concat(F.lit("e"), F.col("id").cast("string")),
        "source": F.lit("bench"),
        "user_id": F.concat(F.lit("u"), (F.rand(2) * users).cast("int").cast("string")),
        "event_time": F.timestamp_seconds(
            F.unix_seconds(day.cast("timestamp")) + (F.rand(1) * 86399).cast("long")
        ),
        "event_date": day,
        "event_type": etype,
        "item_id": F.concat(F.lit("i"), item.cast("string")),
        "category": F.concat(F.lit("c"), (item % 20).cast("string")),
        "brand": F.concat(F.lit("b"), (item % 30).cast("string")),
        "price": price,
        "regular_price": F.lit(None).cast("double"),
        "quantity": F.lit(1),
        "source_session_id": F.lit(None).cast("string"),
        "item_title": F.lit(None).cast("string"),
        "ingest_date": day,
        "ingest_run_id": F.lit("bench"),
    }
    return ids.select(*[cols[f.name].cast(f.dataType).alias(f.name) for f in BRONZE_EVENTS.fields])


def prepare(spark: SparkSession, cfg: Config, ns: argparse.Namespace, days: int) -> int:
    """silver.events of ``days`` days and vocabulary v1 (from the events before T-1); returns the events."""
    carry = spark.createDataFrame(
        [], "source string, user_id string, event_time timestamp, event_id string, session_start timestamp"
    )
    bronze = events(spark, users=ns.users, per_day=ns.per_day, days=days)
    silver = bronze.transform(assign_sessions, carry_in=carry, gap_minutes=30, run_id="bench")
    first = LAST - dt.timedelta(days=days)
    tables.replace_where(
        silver,
        cfg.table("silver_events"),
        predicate=f"event_date >= DATE'{first}'",
        schema=SILVER_EVENTS,
        partition_by=["event_date"],
        run_id="bench",
    )
    held = tables.read(spark, cfg.table("silver_events"))
    v = cfg.settings.vocab
    vocab = build_vocab(
        held.where(F.col("event_date") < LAST - dt.timedelta(days=1)),
        version="v1",
        min_count=v.min_count,
        hash_buckets=v.hash_buckets,
        max_size=v.max_size,
    )
    tables.overwrite(vocab, cfg.table("gold_vocabularies"), schema=GOLD_VOCABULARIES, run_id="bench")
    return held.count()


class Clock:
    """Wall and CPU seconds of this process and its JVM."""

    def __init__(self, spark: SparkSession) -> None:
        self.jvm = spark.sparkContext._gateway.jvm.java.lang.ProcessHandle.current().pid()  # type: ignore[union-attr]

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.jvm}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + time.process_time()

    def measure(self, fn: Any) -> tuple[Any, float, float]:
        t0, c0 = time.perf_counter(), self.cpu()
        out = fn()
        return out, round(time.perf_counter() - t0, 2), round(self.cpu() - c0, 1)


def snapshot_of_t(spark: SparkSession, cfg: Config) -> DataFrame:
    rows = tables.read(spark, cfg.table("gold_user_snapshots")).where(F.col("as_of_date") == LAST)
    return rows.drop("snapshot_run_id")


def digest(rows: DataFrame) -> tuple[int, int]:
    """(rows, order-independent hash of every value): equal only for bit-identical rows."""
    got = rows.agg(F.count(F.lit(1)), F.sum(F.xxhash64(*rows.columns).cast("decimal(38,0)"))).first()
    return int(got[0]), int(got[1] or 0)


def compare(spark: SparkSession, root: Path, cfg: Config) -> dict[str, Any]:
    """The nightly rows (saved before the full run replaced them) against the full run's: bit-identical,
    or equal within a relative 1e-9 (sums of doubles added in another order differ in the last bits)."""
    nightly, full = spark.read.parquet(str(root / "nightly_rows")), snapshot_of_t(spark, cfg)
    try:
        assertDataFrameEqual(nightly, full, rtol=1e-9, atol=1e-12)
        close = True
    except AssertionError:
        close = False
    return {"rows": digest(full)[0], "identical": digest(nightly) == digest(full), "equal_rtol_1e-9": close}


def one_history(spark: SparkSession, clock: Clock, ns: argparse.Namespace, days: int) -> dict[str, Any]:
    root = Path(ns.root) / f"h{days}"
    shutil.rmtree(root, ignore_errors=True)
    sets = [f"paths.root={root}", *ns.set]
    cfg, full_cfg = (
        load_config("local", sets),
        load_config("local", [*sets, "snapshots.state_retention_days=0"]),
    )
    n_events, prep_s, _ = clock.measure(lambda: prepare(spark, cfg, ns, days))
    out: dict[str, Any] = {"days": days, "events": n_events, "prepare_wall_s": prep_s, "steps": {}}
    plan = [
        ("bootstrap", cfg, LAST - dt.timedelta(days=1)),
        ("nightly", cfg, LAST),
        ("full", full_cfg, LAST),
    ]
    for name, c, day in plan:
        report, wall, cpu = clock.measure(
            lambda c=c, day=day, name=name: job.run(spark, c, start=day, end=day, run_id=name)
        )
        out["steps"][name] = {"wall_s": wall, "cpu_s": cpu, "report": asdict(report)}
        if name == "nightly":  # kept aside: the full run replaces the partition
            snapshot_of_t(spark, c).write.mode("overwrite").parquet(str(root / "nightly_rows"))
        log.info("h%d %s: %.1f s wall, %.1f CPU s, %s", days, name, wall, cpu, report)
    out["comparison"] = compare(spark, root, cfg)
    return out


def same(c: dict[str, Any]) -> str:
    if c["identical"]:
        return "bit-identical"
    return "within 1e-9 (last bits of double sums)" if c["equal_rtol_1e-9"] else "DIFFERENT"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| history | events | bootstrap wall s (CPU s) | nightly wall s (CPU s) | nightly events read | "
        "full wall s (CPU s) | snapshot rows | nightly == full |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        s = r["steps"]
        cell = {k: f"{v['wall_s']:.1f} ({v['cpu_s']:.0f})" for k, v in s.items()}
        read = s["nightly"]["report"]["night_events_read"]
        lines.append(
            f"| {r['days']} d | {r['events']:,} | {cell['bootstrap']} | {cell['nightly']} | {read:,} | "
            f"{cell['full']} | {r['comparison']['rows']:,} | {same(r['comparison'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/shopformer-bench/nightly_state")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--per-day", type=int, default=2000)
    p.add_argument("--days", type=int, nargs="+", default=[30, 60, 120])
    p.add_argument("--set", action="append", default=[], help="extra config key=value for every step")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    ns = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    spark = build_spark(load_config("local", ns.set), app_name="bench_nightly_state")
    clock = Clock(spark)
    warmup = {**vars(ns), "root": f"{ns.root}/warmup", "users": 200, "per_day": 300}
    one_history(spark, clock, argparse.Namespace(**warmup), 7)  # JIT and code generation: not measured
    results = [one_history(spark, clock, ns, d) for d in ns.days]
    result = {
        "users": ns.users,
        "per_day": ns.per_day,
        "loadavg_end": os.getloadavg(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "histories": results,
    }
    if ns.out:
        Path(ns.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(table(results))  # noqa: T201 - the bench's report
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
