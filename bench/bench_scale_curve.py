"""Benchmark (not a test): issue 15's scale curve, every step run as a user runs it, with the defaults.

One synthetic shop per size (``synthetic.days`` 120, the default CSV landing files; only the shop's size and
the work folder are set), then the jobs in the demo's order, each a subprocess measured like
``bench_ingest_sessionize.py`` (wall s, CPU s of the process tree, peak RSS, others' share of the cores):

1. ``generate_shop`` (set-up)
2. ``ingest_events`` over every landing folder, ``sessionize`` over the period
3. ``build_snapshots --build-vocab`` over the weekly as-of dates (the training build)
4. ``build_snapshots`` of the day before the last (the first night: bootstraps gold.user_state from the whole
   history), then of the last day (a normal night: that state + one day of events)
5. ``train`` (set-up, with the overrides in TRAIN_SETUP: scoring needs a champion, not a good one)
6. ``score_users`` of the last day (the nightly scoring)
7. ``duckdb_sessionize.py`` on the same landing files (the reference for step 2)

Per step it also records the files and bytes of every table folder afterwards (what the step wrote) and
counts resource warnings in its log (out of memory, page allocation failures, a full JIT code cache).

    .venv/bin/python bench/bench_scale_curve.py --size 1m     # -> bench/results/scale_curve_1m.json
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

START = dt.date(2024, 1, 1)  # synthetic.start_date
DAYS = 120  # synthetic.days
# size -> (users, files per landing day): the 120-day shop makes ~0.34 events per generated user per day
# (17,700 users: 720,928 accepted events; users sign up and churn during the period, docs/synthetic_shop.md).
PRESETS: dict[str, tuple[int, int]] = {
    "1m": (24_500, 1),
    "10m": (245_000, 2),
    "20m": (490_000, 4),
    "40m": (980_000, 8),
}
TRAIN_SETUP = (  # a champion for the scoring step, trained on a small sample (set-up, not measured)
    "train.max_train_rows=20000",
    "train.max_eval_rows=20000",
    "train.pretrain_epochs=1",
    "train.finetune_epochs=1",
)
WARNINGS = {
    "out_of_memory": "OutOfMemoryError",
    "page_allocation_failed": "Failed to allocate a page",
    "code_cache_full": "CodeCache is full",
    "cache_evicted": "Not enough space to cache",
}


def steps(
    root: Path, users: int, files: int, job_sets: list[str], days: int = DAYS
) -> list[tuple[str, list[str], str]]:
    """(name, command, result tag) in run order; the shop and root are the only settings given."""
    end = START + dt.timedelta(days=days)  # the last landing folder: the period's late rows
    first = START + dt.timedelta(days=7)
    shop = [f"synthetic.users={users}", f"synthetic.files_per_day={files}", f"synthetic.days={days}"]
    base = [f"paths.root={root}", *shop, *job_sets]

    def job(name: str, *args: str, extra: tuple[str, ...] = ()) -> list[str]:
        return [PYTHON, f"jobs/{name}.py", *args, *[a for s in [*base, *extra] for a in ("--set", s)]]

    def on(day: dt.date, last: dt.date | None = None) -> tuple[str, ...]:
        return ("--run-date", str(day), *(("--end-date", str(last)) if last else ()))

    duck = [PYTHON, "bench/duckdb_sessionize.py", "--landing", str(root / "landing" / "synthetic")]
    return [
        ("generate", job("generate_shop", *on(START)), "GENERATE_SHOP"),
        ("ingest", job("ingest_events", *on(START, end)), "INGEST"),
        ("sessionize", job("sessionize", *on(START, end)), "SESSIONIZE"),
        ("snapshots_weekly", job("build_snapshots", *on(first, end), "--build-vocab"), "SNAPSHOTS"),
        ("night_bootstrap", job("build_snapshots", *on(end - dt.timedelta(days=1))), "SNAPSHOTS"),
        ("night", job("build_snapshots", *on(end)), "SNAPSHOTS"),
        ("train_setup", job("train", *on(end), extra=TRAIN_SETUP), "TRAIN"),
        ("score", job("score_users", *on(end)), "SCORES"),
        ("duckdb", [*duck, "--out", str(root / "duckdb" / "sessions.parquet"), "--format", "csv"], "DUCKDB"),
    ]


def table_files(root: Path) -> dict[str, dict[str, float]]:
    """Data files (not the Delta log) and GB on disk of every table folder: layer/table."""
    out: dict[str, dict[str, float]] = {}
    for table in sorted(p for p in (root / "warehouse").glob("*/*") if p.is_dir()):
        files = [f for f in table.rglob("*.parquet") if "_delta_log" not in f.parts]
        size = sum(f.stat().st_size for f in files)
        out[f"{table.parent.name}.{table.name}"] = {"files": len(files), "gb": round(size / 2**30, 3)}
    return out


def warnings_in(log_file: str) -> dict[str, int]:
    text = Path(log_file).read_text(errors="replace")
    return {name: text.count(needle) for name, needle in WARNINGS.items()}


def run_curve(ns: argparse.Namespace, result_file: Path) -> dict[str, Any]:
    """Runs the steps in order; the result file is rewritten after each step, so a curve that outlives a
    session keeps what it measured and ``--resume`` goes on from the first step without a result."""
    users, files = PRESETS[ns.size]
    users, files = ns.users or users, ns.files_per_day or files
    root = Path(ns.workdir) / (ns.name or f"curve_{ns.size}")
    done: dict[str, Any] = {}
    if ns.resume:  # the tables the finished steps left are kept as they are
        done = {n: s for n, s in json.loads(result_file.read_text())["steps"].items() if s["rc"] == 0}
        log.info("resuming after %s", ", ".join(done) or "nothing")
    elif ns.reuse_landing:  # everything but the landing files and the shop's truth
        for sub in ("warehouse", "duckdb", "logs", "mlruns", "petastorm_cache"):
            shutil.rmtree(root / sub, ignore_errors=True)
        (root / "mlflow.db").unlink(missing_ok=True)
    else:
        shutil.rmtree(root, ignore_errors=True)
    log_dir = root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "size": ns.size,
        "users": users,
        "days": ns.days,
        "sets": ns.job_set,
        "steps": dict(done),
    }
    for name, cmd, tag in steps(root, users, files, ns.job_set, ns.days):
        if name in done or (name == "generate" and (ns.reuse_landing or ns.resume)):  # resume: same shop
            continue
        step, out = run_step(name, cmd, log_dir, ns.max_idle_wait)
        step.summary = tagged(out, tag)
        result["steps"][name] = {
            **asdict(step),
            "warnings": warnings_in(step.log_file),
            "tables_after": table_files(root),
        }
        result_file.write_text(json.dumps(result, indent=2) + "\n")
        if step.rc != 0 or not step.summary:
            log.error("%s failed (rc=%d); see %s", name, step.rc, step.log_file)
            break
        if name == ns.until:
            break
    add_costs(result)
    return result | {
        "machine": machine(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def add_costs(result: dict[str, Any]) -> None:
    """events/s and CPU microseconds per event, events = bronze accepted (generate: raw rows written)."""
    s = result["steps"]
    events = s.get("ingest", {}).get("summary", {}).get("accepted")
    result["events"] = events
    for name, step in s.items():
        n = step["summary"].get("rows") if name == "generate" else events
        if step["rc"] == 0 and isinstance(n, int) and n and step["wall_s"] > 0:
            step["events_per_s"] = round(n / step["wall_s"])
            step["cpu_us_per_event"] = round(1e6 * step["own_cpu_s"] / n, 2)


def table(result: dict[str, Any]) -> str:
    rows = [
        "| step | wall s | CPU s | peak RSS GB | events/s | CPU us/event | others' share | warnings |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in result["steps"].items():
        warn = ", ".join(f"{k} {v}" for k, v in s["warnings"].items() if v) or "-"
        rows.append(
            f"| {name} | {s['wall_s']:.1f} | {s['own_cpu_s']:.0f} | {s['peak_rss_gb']:.2f} "
            f"| {s.get('events_per_s', '-')} | {s.get('cpu_us_per_event', '-')} "
            f"| {100 * s['foreign_cpu_share']:.0f} % | {warn} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(PRESETS), default="1m")
    p.add_argument("--users", type=int, help="synthetic users (overrides the preset)")
    p.add_argument("--files-per-day", type=int, help="raw files per landing folder (overrides the preset)")
    p.add_argument("--workdir", default="/tmp/shopformer-bench")
    p.add_argument("--reuse-landing", action="store_true", help="skip generate; reuse the landing files")
    p.add_argument(
        "--job-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra --set for every job: the shop's shape (synthetic.*); none for the curve",
    )
    p.add_argument("--max-idle-wait", type=float, default=900.0)
    p.add_argument("--days", type=int, default=DAYS, help="synthetic.days (default: the product default)")
    p.add_argument("--until", help="stop after this step (e.g. snapshots_weekly)")
    p.add_argument("--name", help="work folder and results name (default curve_<size>)")
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--resume", action="store_true", help="keep the shop and --out's finished steps; run the rest"
    )
    ns = p.parse_args(argv)
    out = ns.out or REPO / "bench" / "results" / f"scale_{ns.name or 'curve_' + ns.size}.json"
    result = run_curve(ns, out)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("results written to %s", out)
    print(table(result))  # noqa: T201 - the results table is the one thing printed
    return 0 if all(s["rc"] == 0 for s in result["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
