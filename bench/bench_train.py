"""Benchmark (not a test): training throughput of the sequence model, sequences per second.

Two figures, both for ``train.model_size`` (default small):

1. ``job``: ``jobs/train.py`` as a user runs it on a root that already holds snapshots (default ``data``,
   what ``./dev demo`` leaves), measured like the other benches (wall, peak RSS, CPU s). The job's
   TorchDistributor workers log ``pretrain_sequences_per_s`` / ``finetune_sequences_per_s`` per epoch to
   MLflow (Petastorm reading, DDP all-reduce and the optimizer included); they are read back from the run.
2. ``model``: the model alone in this process (forward + backward + AdamW on random batches shaped like
   the snapshots: ``snapshots.max_len`` events, 32 price candidates), no data loading, no DDP: the ceiling
   that the job's figure can be compared with.

    .venv/bin/python bench/bench_train.py --root data
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import mlflow
import torch
from bench_ingest_sessionize import PYTHON, REPO, machine, run_step, tagged

from shopformer.config import load_config
from shopformer.features.aggregates import feature_names
from shopformer.model.network import (
    LABELS,
    N_DOWS,
    N_EVENT_TYPES,
    N_HOURS,
    SEQ_FLOAT,
    SEQ_INT,
    ModelConfig,
    ShopformerModel,
)

log = logging.getLogger("bench")


def job_figures(root: str, date: str, sets: list[str], max_wait: float) -> dict[str, Any]:
    cmd = [PYTHON, "jobs/train.py", "--run-date", date, "--set", f"paths.root={root}"]
    cmd += [a for s in sets for a in ("--set", s)]
    log_dir = Path(root) / "logs" / "bench_train"
    log_dir.mkdir(parents=True, exist_ok=True)
    step, out = run_step("train_job", cmd, log_dir, max_wait)
    step.summary = tagged(out, "TRAIN")
    result: dict[str, Any] = {"step": asdict(step)}
    if step.rc == 0:
        cfg = load_config("local", [f"paths.root={root}", *sets])
        client = mlflow.MlflowClient(str(cfg.get("paths.mlflow_tracking_uri")))
        for stage in ("pretrain", "finetune"):
            hist = client.get_metric_history(step.summary["mlflow_run_id"], f"{stage}_sequences_per_s")
            ordered = sorted(hist, key=lambda m: m.step)
            result[f"{stage}_sequences_per_s"] = [round(m.value, 1) for m in ordered]
    return result


def random_batch(c: ModelConfig, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A batch shaped like the snapshots' (every sequence full, every price candidate real)."""
    L, M = c.max_len, 32  # noqa: N806
    high = {
        "seq_item": c.item_vocab_size,
        "seq_category": c.category_vocab_size,
        "seq_brand": c.brand_vocab_size,
        "seq_event_type": N_EVENT_TYPES,
        "seq_hour": N_HOURS,
        "seq_dow": N_DOWS,
    }
    b = {k: torch.randint(1, high[k], (n, L), generator=gen) for k in SEQ_INT}
    b |= {k: torch.rand((n, L), generator=gen) for k in SEQ_FLOAT}
    b["seq_len"] = torch.full((n,), L)
    b["aggregates"] = torch.rand((n, c.n_aggregates), generator=gen)
    b |= {k: torch.randint(0, 2, (n,), generator=gen) for k in LABELS}
    b["price_item"] = torch.randint(2, c.item_vocab_size, (n, M), generator=gen)
    b["price_rel_price"] = 0.7 + 0.6 * torch.rand((n, M), generator=gen)
    b["price_bought"] = torch.randint(0, 2, (n, M), generator=gen)
    return b


def model_figures(size: str, batch: int, steps: int, threads: int) -> dict[str, float]:
    cfg = load_config("local")
    names = feature_names([int(w) for w in cfg.get("snapshots.windows_days")])
    c = ModelConfig.preset(
        size,
        item_vocab_size=5000,
        category_vocab_size=200,
        brand_vocab_size=500,
        max_len=int(cfg.get("snapshots.max_len")),
        aggregate_names=tuple(names),
    )
    torch.set_num_threads(threads)
    model, gen = ShopformerModel(c), torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = [random_batch(c, batch, gen) for _ in range(steps + 2)]
    out: dict[str, float] = {}
    for stage in ("pretrain", "finetune"):
        for i, b in enumerate(batches):
            if i == 2:  # two warm-up steps
                t0 = time.perf_counter()
            res = model(b)
            loss = model.pretrain_loss(b, res) if stage == "pretrain" else model.losses(b, res)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[f"{stage}_sequences_per_s"] = round(steps * batch / (time.perf_counter() - t0), 1)
    return out | {"parameters": sum(p.numel() for p in model.parameters()), "threads": threads}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="data", help="paths.root holding gold.user_snapshots")
    p.add_argument("--run-date", default="2024-04-30")
    p.add_argument("--size", default="small")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--job-set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--skip-job", action="store_true", help="only the in-process model figure")
    p.add_argument("--max-idle-wait", type=float, default=300.0)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_throughput.json")
    ns = p.parse_args(argv)
    sets = [f"train.model_size={ns.size}", f"train.batch_size={ns.batch}", *ns.job_set]
    result: dict[str, Any] = {"size": ns.size, "batch": ns.batch, "machine": machine()}
    result["model"] = model_figures(ns.size, ns.batch, ns.steps, threads=torch.get_num_threads())
    log.info("model alone: %s", result["model"])
    if not ns.skip_job:
        result["job"] = job_figures(str(Path(ns.root).resolve()), ns.run_date, sets, ns.max_idle_wait)
    result["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    ns.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k in ("model", "job")}, default=str)[:2000])  # noqa: T201
    return 0 if ns.skip_job or result["job"]["step"]["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
