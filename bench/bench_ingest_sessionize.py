"""Benchmark (not a test): ingest + sessionize throughput on synthetic logs, next to DuckDB.

Each step runs as a subprocess exactly as a user runs it (``jobs/*.py`` with ``--set`` overrides), under
``<workdir>/<size>`` (wiped first, so the tables start empty):

1. ``jobs/generate_shop.py``: raw Parquet landing files (set-up; timed, reported apart)
2. ``jobs/ingest_events.py``: landing -> bronze.events / bronze.events_rejected (``INGEST {json}`` line)
3. ``jobs/sessionize.py``: bronze -> silver.events / silver.sessions (``SESSIONIZE {json}`` line)
4. ``bench/duckdb_sessionize.py``: the same sessionization as one DuckDB query on the same files

Per step: wall time, events/s (events = bronze accepted count from the INGEST line), peak RSS summed over
the process and its descendants (Spark's JVM, PySpark daemon), sampled every 0.2 s, CPU seconds of that
tree, the load average at start and end, and the share of the cores other processes used meanwhile (the
machine is shared; each step first waits up to --max-idle-wait for it to go quiet). Counts come from the
jobs' stdout lines only; no event data is loaded here. See bench/README.md.

    .venv/bin/python bench/bench_ingest_sessionize.py --size 1m
    .venv/bin/python bench/bench_ingest_sessionize.py --size 10m --job-set spark.conf.spark.driver.memory=8g
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

from shopformer.config import load_config

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# users -> events: the shop makes ~0.47 events per generated user per day (docs/synthetic_shop.md).
PRESETS: dict[str, tuple[int, int]] = {"1m": (36_000, 1), "10m": (360_000, 2)}  # users, files_per_day
SPARK_UP = re.compile(r"spark \S+ up \(master=")
# the jobs' own progress lines (the logger name may be followed by the run id in brackets)
JOB_LOG = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ INFO (shopformer\S*(?: \[[^\]]*\])?: .*)")
SAMPLE_S = 0.2


@dataclass
class Step:
    """One measured subprocess."""

    name: str
    cmd: list[str]
    rc: int = 0
    wall_s: float = 0.0
    spark_up_s: float | None = None  # process start -> the job's "spark ... up" log line (JVM + session)
    peak_rss_gb: float = 0.0  # root + descendants that are not un-exec'd clones (see RssSampler)
    peak_rss_naive_gb: float = 0.0  # every descendant, also those caught between spawn and exec
    peak_rss_parts_gb: dict[str, float] = field(default_factory=dict)  # per process at the peak
    peak_procs: int = 0
    loadavg_start: tuple[float, ...] = ()
    loadavg_end: tuple[float, ...] = ()
    idle_wait_s: float = 0.0  # waited for other users' processes to go quiet before starting
    own_cpu_s: float = 0.0  # CPU seconds of the step's process tree (sampled)
    foreign_cpu_share: float = 0.0  # share of all cores used by other processes during the step
    summary: dict[str, Any] = field(default_factory=dict)
    # (s since start, job log line): where time goes
    phases: list[tuple[float, str]] = field(default_factory=list)
    events: int | None = None
    events_per_s: float | None = None
    log_file: str = ""


def _unexeced(proc: psutil.Process, mem: int, parent: psutil.Process | None, parent_mem: int) -> bool:
    """A child that has not exec'd: same RSS as its parent (they share pages), or same program and args.

    The RSS test comes first: the child may exec between reading its memory and its command line.
    """
    if parent is None or parent_mem <= 0:
        return False
    if abs(mem - parent_mem) <= 0.02 * parent_mem:
        return True
    try:
        return proc.exe() == parent.exe() and proc.cmdline() == parent.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


class RssSampler(threading.Thread):
    """Peak of the summed RSS of a process and all its descendants, and their CPU seconds (last value seen
    per process).

    Children that have not exec'd are left out of the sum: the JVM spawns helper processes from task
    threads (posix_spawn; Hadoop's local file system shells out without its native library), and such a
    child caught before its ``exec`` shares the JVM's address space, so its RSS is the JVM's whole RSS a
    second time (seen: 8.75 GB twice, as a process named after the thread, "Executor task launch worker").
    PySpark's forked workers fall under the same rule (they share the daemon's pages; these jobs run no
    Python UDFs). ``peak_naive_bytes`` keeps the unfiltered sum for comparison.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak_bytes = self.peak_naive_bytes = self.peak_procs = 0
        self.peak_parts: dict[str, int] = {}
        self.cpu_s: dict[int, float] = {}
        self.done = threading.Event()

    def sample(self) -> None:
        try:
            procs = {p.pid: p for p in [self.root, *self.root.children(recursive=True)]}
        except psutil.NoSuchProcess:
            return
        info: dict[int, tuple[int, int, str]] = {}  # pid -> (rss, ppid, name)
        for proc in procs.values():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    self.cpu_s[proc.pid] = times.user + times.system
                    info[proc.pid] = (proc.memory_info().rss, proc.ppid(), proc.name())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        rss = {
            f"{pid} {name}": mem
            for pid, (mem, ppid, name) in info.items()
            if pid == self.root.pid
            or not _unexeced(procs[pid], mem, procs.get(ppid), info.get(ppid, (0, 0, ""))[0])
        }
        if sum(rss.values()) > self.peak_bytes:
            self.peak_bytes, self.peak_parts = sum(rss.values()), rss
        self.peak_naive_bytes = max(self.peak_naive_bytes, sum(m for m, _, _ in info.values()))
        self.peak_procs = max(self.peak_procs, len(rss))

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(SAMPLE_S)


def busy_cpu_s() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def wait_until_idle(max_wait_s: float, *, busy_below: float = 0.25, window_s: float = 5.0) -> float:
    """Wait (up to ``max_wait_s``) until the machine is quiet: other people run Spark tests here too."""
    t0, checks = time.perf_counter(), 0
    while time.perf_counter() - t0 < max_wait_s:
        busy = psutil.cpu_percent(interval=window_s) / 100
        if busy < busy_below:
            break
        if checks % 12 == 0:
            log.info("machine busy (%.0f%% of all cores); waiting up to %.0f s", busy * 100, max_wait_s)
        checks += 1
    return round(time.perf_counter() - t0, 1)


def _pump(
    stream: IO[str], sink: IO[str], lines: list[str], t0: float, phases: list[tuple[float, str]]
) -> None:
    """Copy a child's output to the log file, keep the lines, note when the job logs its progress."""
    for line in stream:
        sink.write(line)
        lines.append(line.rstrip("\n"))
        progress = JOB_LOG.match(line)
        if progress:
            phases.append((round(time.perf_counter() - t0, 1), progress.group(1)[:160]))


def _reaped_cpu_s() -> float:
    """CPU seconds of this process's reaped children (and the descendants they reaped)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _record(step: Step, sampler: RssSampler, busy0: float, reaped_s: float) -> None:
    """Fill the step's measurements once its process tree has exited."""
    step.loadavg_end = tuple(round(x, 2) for x in os.getloadavg())
    # Sampling misses each process's last 0.2 s; rusage misses descendants nobody waited for: take the larger.
    step.own_cpu_s = round(max(sum(sampler.cpu_s.values()), reaped_s), 1)
    foreign = busy_cpu_s() - busy0 - step.own_cpu_s
    step.foreign_cpu_share = round(max(0.0, foreign) / (step.wall_s * (os.cpu_count() or 1)), 3)
    step.peak_rss_gb, step.peak_procs = round(sampler.peak_bytes / 2**30, 3), sampler.peak_procs
    step.peak_rss_naive_gb = round(sampler.peak_naive_bytes / 2**30, 3)
    step.peak_rss_parts_gb = {k: round(v / 2**30, 3) for k, v in sampler.peak_parts.items()}
    step.spark_up_s = next((t for t, msg in step.phases if SPARK_UP.search(msg)), None)
    log.info(
        "%s: rc=%d wall=%.1f s peak RSS=%.2f GB, others used %.0f%% of the cores",
        step.name,
        step.rc,
        step.wall_s,
        step.peak_rss_gb,
        100 * step.foreign_cpu_share,
    )


def run_step(name: str, cmd: list[str], log_dir: Path, max_wait_s: float) -> tuple[Step, list[str]]:
    """Run ``cmd`` from the repo root, measuring it; returns the step and the child's stdout lines."""
    waited = wait_until_idle(max_wait_s)
    step = Step(name, cmd, loadavg_start=tuple(round(x, 2) for x in os.getloadavg()), idle_wait_s=waited)
    step.log_file = str(log_dir / f"{name}.log")
    log.info("%s: %s (load %s)", name, " ".join(cmd), step.loadavg_start)
    out_lines: list[str] = []
    env = {**os.environ, "PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON}
    with open(step.log_file, "w") as err_sink, open(log_dir / f"{name}.stdout", "w") as out_sink:
        t0, busy0, reaped0 = time.perf_counter(), busy_cpu_s(), _reaped_cpu_s()
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        sampler = RssSampler(proc.pid)
        sampler.start()
        pumps = [
            threading.Thread(target=_pump, args=(stream, sink, lines, t0, step.phases), daemon=True)
            for stream, sink, lines in ((proc.stdout, out_sink, out_lines), (proc.stderr, err_sink, []))
        ]
        for t in pumps:
            t.start()
        step.rc = proc.wait()
        step.wall_s = round(time.perf_counter() - t0, 2)
        sampler.done.set()
        for t in [*pumps, sampler]:
            t.join()
    _record(step, sampler, busy0, _reaped_cpu_s() - reaped0)
    return step, out_lines


def tagged(lines: list[str], tag: str) -> dict[str, Any]:
    """The job's one ``TAG {json}`` summary line."""
    found = [ln.removeprefix(f"{tag} ") for ln in lines if ln.startswith(f"{tag} {{")]
    return json.loads(found[-1]) if found else {}


@dataclass(frozen=True)
class Plan:
    """What one benchmark run does."""

    size: str
    users: int
    days: int
    files_per_day: int
    root: Path
    start: dt.date
    gap_minutes: int
    future_hours: int
    job_sets: tuple[str, ...]  # extra --set for every Spark job (e.g. driver memory), recorded
    reuse_landing: bool
    ingest_only: bool  # stop after ingest (no sessionize, no DuckDB)
    max_idle_wait_s: float  # before each step, wait up to this long for other processes to go quiet

    @property
    def end(self) -> dt.date:
        """The last landing folder: start + days holds only the late rows of the period's last day."""
        return self.start + dt.timedelta(days=self.days)

    @property
    def landing(self) -> Path:
        return self.root / "landing" / "synthetic"


def job_cmd(plan: Plan, job: str, *args: str, extra: tuple[str, ...] = ()) -> list[str]:
    sets = [
        f"paths.root={plan.root}",
        "synthetic.format=parquet",
        f"synthetic.users={plan.users}",
        f"synthetic.days={plan.days}",
        f"synthetic.files_per_day={plan.files_per_day}",
        "sources.synthetic.format=parquet",  # the source mapping's format is separate from the shop's
        *extra,
    ]
    return [PYTHON, f"jobs/{job}.py", *args, *[a for s in sets for a in ("--set", s)]]


def spark_steps(plan: Plan, log_dir: Path) -> dict[str, Step]:
    """generate (unless reused) -> ingest -> sessionize; stops at the first failing step."""
    span = ("--run-date", str(plan.start), "--end-date", str(plan.end))
    todo = [
        (
            "ingest",
            job_cmd(plan, "ingest_events", *span, "--set", "ingest.source=synthetic", extra=plan.job_sets),
        ),
        ("sessionize", job_cmd(plan, "sessionize", *span, extra=plan.job_sets)),
    ]
    if plan.ingest_only:
        todo.pop()
    if not plan.reuse_landing:
        generate = job_cmd(plan, "generate_shop", "--run-date", str(plan.start), extra=plan.job_sets)
        todo.insert(0, ("generate", generate))
    tags = {"generate": "GENERATE_SHOP", "ingest": "INGEST", "sessionize": "SESSIONIZE"}
    steps: dict[str, Step] = {}
    for name, cmd in todo:
        step, out = run_step(name, cmd, log_dir, plan.max_idle_wait_s)
        step.summary = tagged(out, tags[name])
        steps[name] = step
        if step.rc != 0 or not step.summary:
            log.error("%s failed (rc=%d); see %s", name, step.rc, step.log_file)
            break
    return steps


def duckdb_step(plan: Plan, log_dir: Path) -> Step:
    out = plan.root / "duckdb" / "sessions.parquet"
    cmd = [
        PYTHON,
        "bench/duckdb_sessionize.py",
        "--landing",
        str(plan.landing),
        "--out",
        str(out),
        "--threads",
        "2",
        "--gap-minutes",
        str(plan.gap_minutes),
        "--max-future-hours",
        str(plan.future_hours),
    ]
    step, lines = run_step("duckdb", cmd, log_dir, plan.max_idle_wait_s)
    step.summary = tagged(lines, "DUCKDB")
    return step


def add_rates(steps: dict[str, Step]) -> None:
    """events/s per step; events = bronze accepted (generate: raw rows written)."""
    accepted = steps["ingest"].summary.get("accepted") if "ingest" in steps else None
    for name, step in steps.items():
        events = step.summary.get("rows") if name == "generate" else accepted
        if step.rc == 0 and isinstance(events, int) and step.wall_s > 0:
            step.events, step.events_per_s = events, round(events / step.wall_s)


def checks(steps: dict[str, Step]) -> dict[str, Any]:
    """Spark vs DuckDB: accepted events and session counts (from the summary lines)."""
    spark_s, duck, ingest = (
        steps[n].summary if n in steps else {} for n in ("sessionize", "duckdb", "ingest")
    )
    return {
        "bronze_accepted": ingest.get("accepted"),
        "silver_events": spark_s.get("events"),
        "duckdb_events": duck.get("events"),
        "spark_sessions": spark_s.get("sessions"),
        "duckdb_sessions": duck.get("sessions"),
        "events_equal": spark_s.get("events") is not None and spark_s.get("events") == duck.get("events"),
        "sessions_equal": spark_s.get("sessions") is not None
        and spark_s.get("sessions") == duck.get("sessions"),
    }


def _java_version() -> str:
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return (done.stderr or done.stdout).splitlines()[0] if (done.stderr or done.stdout) else "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "absent"

    return {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": _java_version(),
        **{dist: version(dist) for dist in ("pyspark", "delta-spark", "duckdb", "pyarrow")},
    }


def make_plan(ns: argparse.Namespace) -> Plan:
    users, files = PRESETS[ns.size]
    users = ns.users or users
    files = ns.files_per_day or files
    cfg = load_config("local")
    return Plan(
        size=ns.size if not ns.users else f"{users}u",
        users=users,
        days=ns.days,
        files_per_day=files,
        root=Path(ns.workdir) / (ns.size if not ns.users else f"{users}u"),
        start=dt.date.fromisoformat(str(cfg.get("synthetic.start_date"))),
        gap_minutes=int(cfg.get("sessionize.gap_minutes")),
        future_hours=int(cfg.get("ingest.max_future_hours")),
        job_sets=tuple(ns.job_set),
        reuse_landing=ns.reuse_landing,
        ingest_only=ns.ingest_only,
        max_idle_wait_s=ns.max_idle_wait,
    )


def prepare(plan: Plan) -> Path:
    """Wipe the run's folder (all of it, or all but the landing files when reused); returns the log dir."""
    if plan.reuse_landing:
        if not plan.landing.is_dir():
            raise SystemExit(f"--reuse-landing: no landing files at {plan.landing}")
        for sub in ("warehouse", "duckdb", "logs"):
            shutil.rmtree(plan.root / sub, ignore_errors=True)
    else:
        shutil.rmtree(plan.root, ignore_errors=True)
    log_dir = plan.root / "logs"
    log_dir.mkdir(parents=True)
    return log_dir


def table(result: dict[str, Any]) -> str:
    rows = [
        "| step | wall s | events | events/s | peak RSS GB | spark up s | load 1m at start |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in result["steps"].items():
        rows.append(
            f"| {name} | {s['wall_s']:.1f} | {s['events'] or '-'} | {s['events_per_s'] or '-'} "
            f"| {s['peak_rss_gb']:.2f} | {s['spark_up_s'] if s['spark_up_s'] is not None else '-'} "
            f"| {s['loadavg_start'][0] if s['loadavg_start'] else '-'} |"
        )
    return "\n".join(rows)


def bench(plan: Plan) -> dict[str, Any]:
    log_dir = prepare(plan)
    steps = spark_steps(plan, log_dir)
    if all(s.rc == 0 for s in steps.values()) and "sessionize" in steps:
        steps["duckdb"] = duckdb_step(plan, log_dir)
    add_rates(steps)
    return {
        "size": plan.size,
        "plan": {k: str(v) if isinstance(v, Path | dt.date) else v for k, v in asdict(plan).items()},
        "end": str(plan.end),
        "spark_settings": "jobs' defaults from conf/base.yaml + conf/local.yaml"
        + (f", plus --set {', '.join(plan.job_sets)} for every Spark job" if plan.job_sets else ""),
        "machine": machine(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "steps": {name: asdict(s) for name, s in steps.items()},
        "checks": checks(steps),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(PRESETS), default="1m", help="preset: 1m or 10m events")
    p.add_argument("--users", type=int, help="synthetic users (overrides the preset; ~0.47 events/user/day)")
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--files-per-day", type=int, help="raw files per landing folder (preset: 1m 1, 10m 2)")
    p.add_argument("--workdir", default="/tmp/shopformer-bench")
    p.add_argument(
        "--out", type=Path, help="results JSON (default bench/results/ingest_sessionize_<size>.json)"
    )
    p.add_argument(
        "--job-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra --set for every Spark job, e.g. spark.conf.spark.driver.memory=8g",
    )
    p.add_argument("--reuse-landing", action="store_true", help="skip generate; reuse the landing files")
    p.add_argument("--ingest-only", action="store_true", help="stop after ingest: no sessionize, no DuckDB")
    p.add_argument(
        "--max-idle-wait",
        type=float,
        default=900.0,
        help="seconds to wait before each step for other processes to go quiet (<25%% CPU); 0: never",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ns = parse_args(argv)
    plan = make_plan(ns)
    result = bench(plan)
    out = ns.out or REPO / "bench" / "results" / f"ingest_sessionize_{plan.size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    log.info("results written to %s", out)
    print(table(result))  # noqa: T201 - the final results table is the one thing printed
    print(json.dumps(result["checks"], sort_keys=True))  # noqa: T201
    return 0 if all(s["rc"] == 0 for s in result["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
