"""What the Journey diagnosis scripts share: their command line, the model they study, the run's split."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from shopformer.config import load_config
from shopformer.model import holdout
from shopformer.model.network import load_checkpoint
from shopformer.spark import build_spark

log = logging.getLogger("bench")


def model_and_split(
    argv: list[str] | None, doc: str | None, out: str, app: str
) -> tuple[argparse.Namespace, Path, Any, holdout.Data] | None:
    """(arguments, checkpoint, model, the run's purged samples) of a ``./dev journey`` root; None (logged)
    when the root holds no model yet. ``--checkpoint`` picks a model.pt, else the newest under the root."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="data/complete_journey")
    p.add_argument("--out", default=out)
    p.add_argument("--checkpoint", help="a model.pt to use (default: the newest under <root>/mlruns)")
    args = p.parse_args(argv)
    newest = sorted(Path(args.root, "mlruns").rglob("model.pt"), key=lambda f: f.stat().st_mtime)
    checkpoints = [Path(args.checkpoint)] if args.checkpoint else newest[-1:]
    if not checkpoints:
        log.error("no model.pt under %s/mlruns: run ./dev journey first", args.root)
        return None
    model, _, _ = load_checkpoint(checkpoints[0])
    log.info("model: %s", checkpoints[0])
    cfg = load_config("local", [f"paths.root={args.root}", "ingest.source=complete_journey"])
    return args, checkpoints[0], model, holdout.prepare(build_spark(cfg, app), cfg)
