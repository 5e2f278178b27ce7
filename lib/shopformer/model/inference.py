"""Batched prediction with a loaded model over pandas rows: shared by evaluation and nightly scoring.

Runs wherever it is called (the driver during evaluation, a pandas UDF on executors when scoring), in
bounded batches, and applies the per-task calibrators stored with the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from shopformer.model.evaluation import Calibrator
from shopformer.model.network import batch_from_numpy
from shopformer.schemas import SEQ_FLOAT_COLUMNS, SEQ_INT_COLUMNS, TASKS


def _shifted(pdf: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The sequences without their newest event (left-padded again) and that event's item as target."""
    out = pdf.copy()
    target = np.stack(pdf["seq_item"].to_numpy())[:, -1]
    for c in (*SEQ_INT_COLUMNS, *SEQ_FLOAT_COLUMNS):
        arr = np.stack(pdf[c].to_numpy())
        out[c] = list(np.concatenate([np.zeros_like(arr[:, :1]), arr[:, :-1]], axis=1))
    out["seq_len"] = pdf["seq_len"] - 1
    return out, target


def predict_frame(
    model: Any,
    pdf: pd.DataFrame,
    *,
    calibrators: Mapping[str, Mapping[str, Any]] | None = None,
    batch_size: int = 1024,
    top_k: int = 0,
    min_item_id: int = 1,
    reasons: int = 0,
) -> dict[str, Any]:
    """Scores of every row: propensity, churn (calibrated when calibrators are given), price_elasticity,
    user_vector and, with ``top_k``, next_items; with ``reasons``, ``<task>_reasons``: per row, the top
    drivers of the calibrated score (model/reasons.py). ``pdf`` holds snapshot columns."""
    import torch

    from shopformer.model.reasons import driver_effects, drivers, top_reasons

    names: Sequence[str] = model.config.aggregate_names
    groups = drivers(names) if reasons and names else []
    parts: dict[str, list[np.ndarray]] = {}
    said: dict[str, list[Any]] = {f"{t}_reasons": [] for t in TASKS} if groups else {}
    model.eval()
    with torch.no_grad():
        for start in range(0, len(pdf), batch_size):
            chunk = pdf.iloc[start : start + batch_size]
            b = batch_from_numpy({c: chunk[c].to_numpy() for c in chunk.columns}, names)
            got = model.predict(b, top_k=top_k, min_item_id=min_item_id)
            summaries = {t: got.pop(f"{t}_summary") for t in TASKS}  # per task: its model's (routes)
            del got["summary"]
            for k, v in got.items():
                parts.setdefault(k, []).append(v.cpu().numpy())
            if groups:
                effects = driver_effects(model, summaries, b["aggregates"], groups, calibrators)
                for t in TASKS:
                    said[f"{t}_reasons"] += top_reasons(chunk[list(names)], effects[t], groups, reasons)
    out: dict[str, Any] = {k: np.concatenate(v) for k, v in parts.items()} if parts else {}
    for task in TASKS:
        if calibrators and task in calibrators and task in out:
            out[task] = Calibrator.from_dict(dict(calibrators[task])).apply(out[task])
    return out | said


def next_item_targets(
    model: Any, pdf: pd.DataFrame, *, k: int, min_item_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """(top-k predicted ids, true ids) for predicting each row's newest event from the events before it
    (rows with at least two events). Event ages stay measured to the as-of date: a small approximation."""
    rows = pdf[pdf["seq_len"] >= 2]
    if rows.empty:
        return np.zeros((0, k), dtype=np.int64), np.zeros(0, dtype=np.int64)
    shifted, target = _shifted(rows)
    got = predict_frame(model, shifted, top_k=k, min_item_id=min_item_id)
    return got["next_items"], target
