"""The training function TorchDistributor runs in every process: pretrain (next item), then fine-tune heads.

``train_worker(spec)`` is a plain module-level function of plain-data arguments, so it pickles to local
processes, cluster executors or GPUs alike. Data arrive through Petastorm converters, one shard per rank,
with a fixed number of steps per epoch on every rank (DDP needs them in lock step). Only rank 0 logs to
MLflow and writes the checkpoint; every rank returns the same summary (TorchDistributor's return value is
not reliably rank 0's in local mode). Rank 0 also logs progress lines (``shopformer.progress``) to its stderr,
which TorchDistributor relays to the job's output, so an hour-long epoch never goes quiet.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from shopformer.progress import EpochProgress
from shopformer.schemas import TASKS  # early stopping also per task: each is served by its best epoch

log = logging.getLogger(__name__)


def _job_run_id() -> str:
    """The run id this (driver) process logs with, for the workers' lines (they are other processes)."""
    from shopformer import cli

    return cli._run_id[0]


@dataclass(frozen=True)
class TrainSpec:
    """Everything a worker needs, as plain data (pickled once per process)."""

    init_checkpoint: str  # the starting model: fresh (scaler fitted, text vectors set) or a registered one
    pretrain_converter: Any  # petastorm SparkDatasetConverter over all sequences (features only)
    finetune_converter: Any  # ... over the labelled training rows
    pretrain_rows: int
    finetune_rows: int
    checkpoint_path: str  # where rank 0 writes the trained model
    batch_size: int = 256
    pretrain_epochs: int = 2  # 0 skips pretraining (e.g. fine-tuning a transferred model)
    finetune_epochs: int = 3  # at most; fewer when the validation loss stops improving
    lr: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 7
    mlflow_uri: str | None = None
    mlflow_run_id: str | None = None
    valid_converter: Any = None  # labelled validation rows: early stopping and the best epoch's weights
    valid_rows: int = 0
    patience: int = 3  # fine-tune epochs without a better validation loss before stopping
    next_item_weight: float = 0.2  # next-item loss kept in fine-tuning: the conversion head shares the item
    # table with next-item scoring, and without it fine-tuning erodes the pretrained item embeddings
    log_run_id: str = field(default_factory=_job_run_id)  # taken where the spec is made: the driver


def _worker_logging(spec: TrainSpec) -> None:
    """INFO lines with the job's format and run id: a worker is a fresh interpreter (torchrun) whose root
    logger has no handler, so without this its progress lines would be dropped."""
    from shopformer import cli

    cli._run_id[0] = spec.log_run_id
    cli.configure_logging()


def _setup(spec: TrainSpec) -> tuple[Any, int, int, Any]:
    """(device, rank, world size, dist module) with the process group up when world > 1."""
    import torch
    import torch.distributed as dist

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    use_gpu = torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "") != ""
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_gpu else "gloo")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if use_gpu else "cpu")
    _seed(spec.seed + rank)  # dropout and sampled negatives: reproducible, independent between ranks
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(world, 1)))
    return device, rank, world, dist


def _seed(seed: int) -> None:
    """Every random generator a worker touches (torch, numpy, random) starts from ``seed``."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _build(spec: TrainSpec, device: Any) -> tuple[Any, dict[str, Any]]:
    from shopformer.model.network import load_checkpoint

    model, _, extra = load_checkpoint(spec.init_checkpoint)
    model.set_routes({})  # a transferred model's routes are its run's; this run chooses its own
    return model.to(device), extra


def _loader(converter: Any, batch_size: int, ctx: tuple[int, int, int]) -> Any:
    """Petastorm's torch loader over this rank's shard, cycling. ``ctx``: (rank, world, seed); the seed
    fixes the row-group order (unseeded, two runs of one command differed by 0.035 ROC-AUC), and one
    reader thread keeps that order."""
    rank, world, seed = ctx
    return converter.make_torch_dataloader(
        batch_size=batch_size, cur_shard=rank, shard_count=world, num_epochs=None, workers_count=1, seed=seed
    )


def _batches(
    converter: Any, spec: TrainSpec, names: tuple[str, ...], ctx: tuple[int, int, int], steps: int
) -> Iterator[dict]:
    """``steps`` batches of this rank's shard (``_loader``), as the model's batch dicts."""
    from shopformer.model.network import batch_from_numpy

    with _loader(converter, spec.batch_size, ctx) as loader:
        it = iter(loader)
        for _ in range(steps):
            raw = next(it)
            yield batch_from_numpy({k: v.numpy() for k, v in raw.items()}, names)


def _epoch(
    model: Any,
    opt: Any,
    batches: Iterator[dict],
    device: Any,
    stage: str,
    weights: Mapping[str, float],
    on_step: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """One pass of ``batches``; returns the mean of every loss part. ``on_step(k)`` after step k."""
    sums: dict[str, float] = {}
    n = 0
    core = getattr(model, "module", model)
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        if stage == "pretrain":
            out = model(b)
            parts = {"next_item": core.pretrain_loss(b, out)}
            parts["total"] = parts["next_item"]
        else:
            parts = core.losses(b, model(b), weights)
        opt.zero_grad()
        parts["total"].backward()
        opt.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n += 1
        if on_step is not None:
            on_step(n)
    return {k: v / max(n, 1) for k, v in sums.items()}


def _validate(model: Any, spec: TrainSpec, ctx: tuple[Any, int, int], dist: Any) -> dict[str, float]:
    """Mean fine-tuning losses on the validation rows (each rank its shard, averaged over ranks), so
    every rank takes the same early-stopping decision."""
    import torch

    device, rank, world = ctx
    core = getattr(model, "module", model)
    steps = max(1, spec.valid_rows // (spec.batch_size * world))
    names = tuple(core.config.aggregate_names)
    core.eval()
    sums: dict[str, float] = {}
    with torch.no_grad():
        for b in _batches(spec.valid_converter, spec, names, (rank, world, spec.seed), steps):
            b = {k: v.to(device) for k, v in b.items()}
            for k, v in core.losses(b, core(b), {"next_item": spec.next_item_weight}).items():
                sums[k] = sums.get(k, 0.0) + float(v) / steps
    keys = sorted(sums)
    vec = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(vec)
        vec /= world
    return {f"valid_{k}": float(x) for k, x in zip(keys, vec.tolist(), strict=True)}


def _log(spec: TrainSpec, rank: int, metrics: Mapping[str, float], step: int) -> None:
    if rank != 0 or not spec.mlflow_run_id:
        return
    import mlflow

    mlflow.set_tracking_uri(spec.mlflow_uri)
    with mlflow.start_run(run_id=spec.mlflow_run_id):
        mlflow.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=step)


class _Best:
    """Early stopping per criterion: the validation total (the model's own epoch) and each task's
    validation loss (that task's epoch, served by a route: ``ShopformerModel.set_routes``). Keeps the
    lowest value of each, its epoch, and the weights of every epoch still some criterion's best. A task
    whose validation rows hold no label (loss exactly 0) is never routed."""

    def __init__(self, tasks: tuple[str, ...] = ()) -> None:
        self.loss = dict.fromkeys(("total", *tasks), math.inf)
        self.epochs = dict.fromkeys(self.loss, 0)
        self.states: dict[int, dict[str, Any]] = {}
        self.waited = 0

    @property
    def epoch(self) -> int:
        return self.epochs["total"]

    def offer(self, valid: Mapping[str, float], epoch: int, core: Any) -> None:
        better = [k for k, v in self.loss.items() if valid.get(f"valid_{k}", math.inf) < v]
        for k in better:
            self.loss[k], self.epochs[k] = valid[f"valid_{k}"], epoch
        self.waited = 0 if better else self.waited + 1  # stop when no criterion improves any more
        if better:
            self.states[epoch] = {k: v.detach().clone() for k, v in core.state_dict().items()}
        self.states = {e: st for e, st in self.states.items() if e in self.epochs.values()}

    def restore(self, core: Any) -> dict[str, int]:
        """Load the best total's weights into ``core`` and route each task whose best epoch differs;
        returns the epoch that serves each task."""
        if not self.states:
            return {}
        core.load_state_dict(self.states[self.epoch])
        tasks = [k for k in self.loss if k != "total" and 0 < self.loss[k] < math.inf]
        routed = {t: self.states[self.epochs[t]] for t in tasks if self.epochs[t] != self.epoch}
        core.set_routes(routed)
        return {t: self.epochs[t] if t in routed else self.epoch for t in self.loss if t != "total"}


def _stage_data(spec: TrainSpec, stage: str, world: int) -> tuple[Any, int, int]:
    """(converter, epochs, steps per epoch) of ``stage``; the steps are the same on every rank (DDP steps
    in lock step)."""
    conv, rows, epochs = (
        (spec.pretrain_converter, spec.pretrain_rows, spec.pretrain_epochs)
        if stage == "pretrain"
        else (spec.finetune_converter, spec.finetune_rows, spec.finetune_epochs)
    )
    return conv, epochs, max(1, rows // (spec.batch_size * world))


def _first_best(spec: TrainSpec, model: Any, ctx: tuple[Any, int, int], dist: Any) -> _Best:
    """Early stopping's start: the starting weights are a candidate too (epoch 0), training must beat them."""
    core = getattr(model, "module", model)
    best, valid = _Best(TASKS), _validate(model, spec, ctx, dist)
    best.offer(valid, 0, core)
    _log(spec, ctx[1], {f"finetune_{k}": v for k, v in valid.items()}, step=0)
    return best


def _stage(
    spec: TrainSpec, model: Any, ctx: tuple[Any, int, int], stage: str, dist: Any = None
) -> list[dict[str, float]]:
    """Epochs of one stage. Fine-tuning with validation rows keeps the best epoch's weights and stops
    after ``patience`` epochs without a lower validation loss (``valid_total``)."""
    import torch

    device, rank, world = ctx
    core = getattr(model, "module", model)
    conv, epochs, steps = _stage_data(spec, stage, world)
    prog = EpochProgress(stage, epochs, steps, rows_per_step=spec.batch_size * world) if rank == 0 else None
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    validate = stage == "finetune" and spec.valid_converter is not None
    history: list[dict[str, float]] = []
    best = _first_best(spec, model, ctx, dist) if validate else _Best()
    names, weights = tuple(core.config.aggregate_names), {"next_item": spec.next_item_weight}
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        seed = spec.seed + 1000 * (stage == "finetune") + epoch  # a new, reproducible order per epoch
        batches = _batches(conv, spec, names, (rank, world, seed), steps)
        m = _epoch(model, opt, batches, device, stage, weights, prog.step if prog else None)
        m["sequences_per_s"] = steps * spec.batch_size * world / (time.perf_counter() - t0)
        if validate:
            m |= _validate(model, spec, ctx, dist)
            best.offer(m, epoch, core)
            m["best_epoch"] = best.epoch
            m |= {f"best_epoch_{t}": best.epochs[t] for t in TASKS}
        history.append(m)
        _log(spec, rank, {f"{stage}_{k}": v for k, v in m.items()}, step=epoch - int(not validate))
        stopping = validate and best.waited >= spec.patience
        if prog is not None:
            prog.epoch_done(m, stopping=stopping)
        if stopping:
            break
    served = best.restore(core)
    if history:
        history[-1] |= {f"served_epoch_{t}": e for t, e in served.items()}
    return history


def train_worker(spec: TrainSpec) -> dict[str, Any]:
    """Pretrain + fine-tune on this rank's shards; rank 0 writes the checkpoint. Same return on all ranks."""
    from torch.nn.parallel import DistributedDataParallel

    from shopformer.model.network import save_checkpoint

    _worker_logging(spec)
    device, rank, world, dist = _setup(spec)
    core, extra = _build(spec, device)
    model = DistributedDataParallel(core, find_unused_parameters=True) if world > 1 else core
    result: dict[str, Any] = {"world_size": world, "device": str(device)}
    if spec.pretrain_epochs:
        result["pretrain"] = _stage(spec, model, (device, rank, world), "pretrain")
    result["finetune"] = _stage(spec, model, (device, rank, world), "finetune", dist)
    if spec.valid_converter is not None:  # 0: the starting weights were never beaten
        last = result["finetune"][-1] if result["finetune"] else {}
        result["best_finetune_epoch"] = last.get("best_epoch", 0)
        result["served_epoch"] = {
            t: last.get(f"served_epoch_{t}", result["best_finetune_epoch"]) for t in TASKS
        }
    if rank == 0:
        save_checkpoint(spec.checkpoint_path, core.cpu(), extra=extra)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def spec_dict(spec: TrainSpec) -> dict[str, Any]:
    """The loggable part of a spec (no converters)."""
    skip = ("pretrain_converter", "finetune_converter", "valid_converter", "log_run_id")
    return {f.name: getattr(spec, f.name) for f in fields(spec) if f.name not in skip}
