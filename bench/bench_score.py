"""Benchmark (not a test): nightly scoring throughput, users per second, next to a plain PyTorch loop.

On a root that holds ``gold.user_snapshots`` for --run-date and a registered ``champion`` (what
``./dev demo`` leaves under ``data``):

1. The date's snapshot rows are replicated ``--replicate`` times (distinct user ids) into a Parquet file,
   so every path below reads the very same rows.
2. ``spark``: ``scoring.score_snapshots`` (the job's iterator pandas UDF: model loaded once per Python
   worker, ``scoring.torch_threads`` intra-op threads per worker, Arrow batches of
   ``scoring.arrow_batch_size``) over that file into Spark's ``noop`` sink; two passes, the first pays the
   workers' start and model load, the second is the steady state.
3. ``limit``: the same model in this one process over the same rows, tensors built beforehand
   (``model.predict`` only, no Spark, no Arrow, no pandas), with all cores as torch threads. Also
   ``limit_frame``: ``inference.predict_frame`` from the pandas rows (conversion + calibration included).
4. ``job``: ``jobs/score_users.py`` for the date as a user runs it (JVM start, checks, three Delta tables).

    .venv/bin/python bench/bench_score.py --root data --run-date 2024-04-30
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
import torch
from bench_ingest_sessionize import PYTHON, REPO, machine, run_step, tagged
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.features.vocab import first_frequent_id
from shopformer.model.inference import predict_frame
from shopformer.model.network import SEQ_FLOAT, SEQ_INT, batch_from_numpy
from shopformer.scoring import job as scoring_job
from shopformer.scoring import transforms as scoring
from shopformer.spark import build_spark

log = logging.getLogger("bench")
TOP_K = 10


def replicated_input(
    spark: SparkSession, cfg: Config, m: scoring_job.RegisteredModel, day: dt.date, times: int, out: Path
) -> int:
    """The date's model inputs, ``times`` copies with distinct user ids, as one Parquet folder."""
    names = m.config.aggregate_names
    snaps = tables.read(spark, cfg.table("gold_user_snapshots")).where(F.col("as_of_date") == F.lit(day))
    copies = spark.range(times).withColumnRenamed("id", "copy")
    rows = snaps.crossJoin(copies).withColumn(
        "user_id", F.concat_ws("#", "user_id", F.col("copy").cast("string"))
    )
    cols = [*scoring.KEYS, *SEQ_INT, *SEQ_FLOAT, "seq_len", *names]
    rows.select(*cols).repartition(spark.sparkContext.defaultParallelism).write.mode("overwrite").parquet(
        str(out)
    )
    return spark.read.parquet(str(out)).count()


def spark_passes(
    spark: SparkSession, cfg: Config, m: scoring_job.RegisteredModel, data: Path, n: int
) -> list[dict[str, float]]:
    """Two timed passes of the scoring UDF over the file into the ``noop`` sink."""
    s = cfg.settings.scoring
    shipped = scoring_job.ship(spark, m.path)
    spec = scoring.ScoringSpec(
        checkpoint_file=shipped,
        aggregate_names=tuple(m.config.aggregate_names),
        top_k=TOP_K,
        min_item_id=first_frequent_id(int(m.extra["vocab"]["hash_buckets"])),
        torch_threads=s.torch_threads,
    )
    spark.conf.set(scoring_job.ARROW_BATCH, str(s.arrow_batch_size))
    out = []
    for i in range(2):
        t0 = time.perf_counter()
        scoring.score_snapshots(spark.read.parquet(str(data)), spec=spec).write.format("noop").mode(
            "overwrite"
        ).save()
        wall = time.perf_counter() - t0
        out.append({"pass": i + 1, "wall_s": round(wall, 2), "users_per_s": round(n / wall, 1)})
        log.info("spark pass %d: %s", i + 1, out[-1])
    return out


def limit_figures(m: scoring_job.RegisteredModel, data: Path, threads: int, batch: int) -> dict[str, Any]:
    """The same model over the same rows in this process: tensors first, then ``model.predict`` only."""
    loaded = scoring.load_model(m.path, threads)
    model, extra = loaded.model, loaded.extra
    torch.set_num_threads(threads)
    pdf: pd.DataFrame = pq.read_table(str(data)).to_pandas()
    names, lo = model.config.aggregate_names, first_frequent_id(int(extra["vocab"]["hash_buckets"]))
    chunks = [pdf.iloc[i : i + batch] for i in range(0, len(pdf), batch)]
    tensors = [batch_from_numpy({c: ch[c].to_numpy() for c in ch.columns}, names) for ch in chunks]
    with torch.no_grad():
        model.predict(tensors[0], top_k=TOP_K, min_item_id=lo)  # warm-up
        t0 = time.perf_counter()
        for b in tensors:
            model.predict(b, top_k=TOP_K, min_item_id=lo)
        wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    predict_frame(
        model, pdf, calibrators=extra.get("calibrators"), batch_size=batch, top_k=TOP_K, min_item_id=lo
    )
    frame = time.perf_counter() - t1
    return {
        "threads": threads,
        "batch": batch,
        "rows": len(pdf),
        "model_wall_s": round(wall, 2),
        "users_per_s": round(len(pdf) / wall, 1),
        "frame_wall_s": round(frame, 2),
        "frame_users_per_s": round(len(pdf) / frame, 1),
    }


def job_figures(root: str, day: str, max_wait: float) -> dict[str, Any]:
    cmd = [PYTHON, "jobs/score_users.py", "--run-date", day, "--set", f"paths.root={root}"]
    log_dir = Path(root) / "logs" / "bench_score"
    log_dir.mkdir(parents=True, exist_ok=True)
    step, out = run_step("score_users_job", cmd, log_dir, max_wait)
    step.summary = tagged(out, "SCORES")
    n = int(step.summary.get("users_scored", 0))
    return {"step": asdict(step), "users_per_s": round(n / step.wall_s, 1) if step.rc == 0 else None}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="data", help="paths.root with snapshots and a champion model")
    p.add_argument("--run-date", default="2024-04-30")
    p.add_argument("--replicate", type=int, default=25, help="copies of the date's rows to score")
    p.add_argument("--skip-job", action="store_true")
    p.add_argument("--max-idle-wait", type=float, default=300.0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "score_throughput.json")
    ns = p.parse_args(argv)
    root = str(Path(ns.root).resolve())
    cfg = load_config("local", [f"paths.root={root}", "spark.master=local[2]"])
    day, cores = dt.date.fromisoformat(ns.run_date), os.cpu_count() or 1
    result: dict[str, Any] = {"run_date": ns.run_date, "machine": machine(), "spark_master": "local[2]"}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "inputs.parquet"
        m = scoring_job.load_registered(cfg, cfg.settings.scoring.model_version, tmp)
        spark = build_spark(cfg, "bench_score")
        n = replicated_input(spark, cfg, m, day, ns.replicate, data)
        result |= {"rows": n, "replicate": ns.replicate, "scoring_conf": cfg.section("scoring")}
        result |= {"model": f"{m.name} v{m.version}", "model_size": m.config.d_model}
        result["spark"] = spark_passes(spark, cfg, m, data, n)
        spark.stop()
        batch = cfg.settings.scoring.arrow_batch_size
        result["limit"] = limit_figures(m, data, cores, batch)
        result["limit_1_thread"] = limit_figures(m, data, 1, batch)
    result["ratio_spark_to_limit"] = round(
        result["spark"][-1]["users_per_s"] / result["limit"]["users_per_s"], 3
    )
    if not ns.skip_job:
        result["job"] = job_figures(root, ns.run_date, ns.max_idle_wait)
    result["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    ns.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    keys = ("rows", "spark", "limit", "limit_1_thread", "ratio_spark_to_limit")
    print(json.dumps({k: result[k] for k in keys}, default=str))  # noqa: T201
    return 0 if ns.skip_job or result["job"]["step"]["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
