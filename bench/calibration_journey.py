"""Why does calibration miss ECE 0.02 on The Complete Journey? A diagnosis (not a test).

The trained model of a ``./dev journey`` root scores the run's own purged train / valid / holdout samples
(``model.holdout.prepare``: the split and samples the training job used); results in
``bench/results/calibration_journey.json``. Reported per task:

- the label rate and the model's mean raw probability on each split and on each valid / holdout date, and
  the raw ECE: does the model's bias stay the same from date to date?
- the holdout ECE after each calibrator the training could fit: Platt, isotonic and the training's own
  choice (``auto``) on the validation date(s), and Platt on the 4 newest training dates (more rows, but
  in-sample for the model).

    .venv/bin/python bench/calibration_journey.py  # after ./dev journey; writes bench/results/<name>.json
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from journey_run import model_and_split

from shopformer.model import holdout
from shopformer.model.evaluation import Calibrator, ece
from shopformer.model.inference import predict_frame
from shopformer.schemas import TASK_LABELS

log = logging.getLogger("bench")


def scored(model: Any, frame: pd.DataFrame, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, raw probabilities, as-of dates) of the rows that have this task's label."""
    ok = frame[TASK_LABELS[task]].notna().to_numpy()
    rows = frame[ok].reset_index(drop=True)
    p = np.asarray(predict_frame(model, rows)[task], dtype=float)
    return rows[TASK_LABELS[task]].to_numpy().astype(int), p, rows["as_of_date"].astype(str).to_numpy()


def split_facts(y: np.ndarray, p: np.ndarray, dates: np.ndarray, by_date: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"n": int(y.size), "rate": float(y.mean()), "raw_mean": float(p.mean())}
    out["raw_ece"] = ece(y, p)
    if by_date:
        per = pd.DataFrame({"y": y, "p": p, "d": dates}).groupby("d")
        out["by_date"] = {d: {"n": len(g), "rate": g.y.mean(), "raw_mean": g.p.mean()} for d, g in per}
    return out


def task_report(model: Any, d: holdout.Data, task: str) -> dict[str, Any]:
    parts = {
        "train": d.pandas["train"],
        "valid": d.pandas[f"valid:{task}"],
        "holdout": d.pandas[f"holdout:{task}"],
    }
    got = {k: scored(model, f, task) for k, f in parts.items()}
    res: dict[str, Any] = {k: split_facts(*got[k], by_date=k != "train") for k in got}
    (yv, pv, _), (yh, ph, _), (yt, pt, dt) = got["valid"], got["holdout"], got["train"]
    for method in ("platt", "isotonic", "auto"):
        cal = Calibrator.fit(yv, pv, method=method)
        res[f"holdout_ece_{method}_on_valid"] = ece(yh, cal.apply(ph))
        res[f"holdout_mean_{method}_on_valid"] = float(cal.apply(ph).mean())
    newest = sorted(set(dt))[-4:]
    sel = np.isin(dt, newest)
    res["holdout_ece_platt_on_newest_4_train_dates"] = ece(
        yh, Calibrator.fit(yt[sel], pt[sel], method="platt").apply(ph)
    )
    res["newest_4_train_dates"] = newest
    return res


def main(argv: list[str] | None = None) -> int:
    got = model_and_split(argv, __doc__, "bench/results/calibration_journey.json", "calibration_journey")
    if got is None:
        return 1
    args, checkpoint, model, d = got
    out = {"checkpoint": str(checkpoint), **{task: task_report(model, d, task) for task in TASK_LABELS}}
    Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
