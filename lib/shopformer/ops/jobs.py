"""Every job by name, and the module whose ``main(argv) -> int`` runs it.

``jobs/<name>.py`` (what spark-submit and Airflow run) is a few lines that call the same ``main``; the demo
and the tests call it in-process with their own argv.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

JOB_MODULES = {
    "generate_shop": "shopformer.synthetic.job",
    "land_workbook": "shopformer.ingest.land_job",
    "land_journey": "shopformer.ingest.journey_job",
    "ingest_events": "shopformer.ingest.job",
    "sessionize": "shopformer.sessions.job",
    "build_snapshots": "shopformer.features.job",
    "embed_items": "shopformer.features.item_text_job",
    "train": "shopformer.model.job",
    "score_users": "shopformer.scoring.job",
    "evaluate_scores": "shopformer.scoring.quality_job",
    "summarize_tables": "shopformer.ops.summary",
    "promote_model": "shopformer.ops.promote",
    "forget_users": "shopformer.ops.forget",
    "maintain_tables": "shopformer.ops.maintain",
    "demo": "shopformer.ops.demo",
}


def job_main(name: str) -> Callable[[list[str] | None], int]:
    """The ``main`` of job ``name`` (imported on demand: a job's module may import torch)."""
    return importlib.import_module(JOB_MODULES[name]).main
