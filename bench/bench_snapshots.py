"""Benchmark (not a test): gold.user_snapshots for 1 vs 10 as-of dates over the same silver events.

Reuses the warehouse an ingest + sessionize bench left (``bench_ingest_sessionize.py --size 10m``), so the
events are the synthetic shop's ~10 M. Steps, each a subprocess exactly as a user runs it:

1. ``vocab``: ``build_snapshots --build-vocab`` for the last as-of date (vocabulary + 1 date; set-up)
2. ``1_date``: ``build_snapshots`` for the last as-of date alone (the nightly shape)
3. ``10_dates``: ``build_snapshots`` for 10 as-of dates ``every_days`` apart ending on that date

The claim under test: 10 dates must not cost 10 full passes over the events. Measurements as in the
ingest bench (wall, peak RSS of the process tree, CPU s, others' share of the cores); row counts come from
the jobs' ``SNAPSHOTS {json}`` lines only.

    .venv/bin/python bench/bench_snapshots.py --root /tmp/shopformer-bench/10m \\
        --job-set spark.conf.spark.driver.memory=8g
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench_ingest_sessionize import PYTHON, REPO, machine, run_step, tagged

log = logging.getLogger("bench")


def job_cmd(root: Path, first: dt.date, last: dt.date, every: int, sets: list[str], *flags: str) -> list[str]:
    args = ["--run-date", str(first), "--end-date", str(last), *flags]
    for s in [f"paths.root={root}", f"snapshots.every_days={every}", *sets]:
        args += ["--set", s]
    return [PYTHON, "jobs/build_snapshots.py", *args]


def bench(ns: argparse.Namespace) -> dict[str, Any]:
    root, last, every = Path(ns.root), dt.date.fromisoformat(ns.last_date), ns.every_days
    if not (root / "warehouse" / "silver" / "events").is_dir():
        raise SystemExit(f"no silver.events under {root}: run bench_ingest_sessionize.py first")
    shutil.rmtree(root / "warehouse" / "gold", ignore_errors=True)
    log_dir = root / "logs" / "snapshots"
    log_dir.mkdir(parents=True, exist_ok=True)
    first10 = last - dt.timedelta(days=every * (ns.dates - 1))
    plan = [
        ("vocab", job_cmd(root, last, last, every, ns.job_set, "--build-vocab")),
        ("1_date", job_cmd(root, last, last, every, ns.job_set)),
        (f"{ns.dates}_dates", job_cmd(root, first10, last, every, ns.job_set)),
    ]
    steps: dict[str, Any] = {}
    for name, cmd in plan:
        step, out = run_step(name, cmd, log_dir, ns.max_idle_wait)
        step.summary = tagged(out, "SNAPSHOTS")
        steps[name] = asdict(step)
        if step.rc != 0 or not step.summary:
            log.error("%s failed (rc=%d); see %s", name, step.rc, step.log_file)
            break
    return {
        "root": str(root),
        "as_of_dates": {"last": str(last), "every_days": every, "dates": ns.dates},
        "spark_settings": "jobs' defaults" + (f", plus --set {', '.join(ns.job_set)}" if ns.job_set else ""),
        "machine": machine(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "steps": steps,
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        "| step | wall s | CPU s | snapshot rows | peak RSS GB | others' CPU share |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["steps"].items():
        rows.append(
            f"| {name} | {s['wall_s']:.1f} | {s['own_cpu_s']} | {s['summary'].get('rows', '-')} "
            f"| {s['peak_rss_gb']:.2f} | {s['foreign_cpu_share']} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="/tmp/shopformer-bench/10m", help="paths.root of an ingested bench run")
    p.add_argument("--last-date", default="2024-02-24", help="the newest as-of date (both runs)")
    p.add_argument("--every-days", type=int, default=5)
    p.add_argument("--dates", type=int, default=10)
    p.add_argument("--job-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--max-idle-wait", type=float, default=900.0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "snapshots_10m.json")
    ns = p.parse_args(argv)
    result = bench(ns)
    ns.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("results written to %s", ns.out)
    print(table(result))  # noqa: T201 - the final results table is the one thing printed
    return 0 if all(s["rc"] == 0 for s in result["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
