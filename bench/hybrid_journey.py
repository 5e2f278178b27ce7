"""Would a hybrid win where the sequence model alone does not? The Complete Journey (not a test).

Issue 17 item 3's "hybrid" candidate, measured offline before it is built into training and scoring: the
trained champion of a ``./dev journey`` root scores the run's own purged train / valid / holdout rows
(``model.holdout.prepare``, the same split and samples the training job used), and GBDT (the baseline's
settings, ``baselines.fit_gbdt``) is fitted on the aggregates plus the model's outputs:

- ``gbdt``: the aggregates alone (reproduces the training report's baseline);
- ``hybrid_logits``: + the model's propensity and churn logits;
- ``hybrid_summary``: + the logits and 16 principal components of the user summary vector;
- ``blend``: a logistic regression of the label on the model's logit and the GBDT's, fitted on the
  validation date's rows (which neither model trained on), i.e. stacking without in-sample outputs.

Caveat stated in the results: the model was fine-tuned on the train rows, so its logits there are
in-sample (sharper than on new rows) and the GBDT may over-trust them; early stopping and calibration use
the validation date, and the holdout is untouched by both. Reported per task: holdout ROC-AUC of each
variant and of the model alone, and a paired bootstrap 95 % interval of each variant's margin over ``gbdt``.

    .venv/bin/python bench/hybrid_journey.py      # after ./dev journey -> bench/results/hybrid_journey.json
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from journey_run import model_and_split
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from shopformer.model import baselines
from shopformer.model.network import batch_from_numpy
from shopformer.schemas import TASK_LABELS

log = logging.getLogger("bench")
TASKS = tuple(TASK_LABELS)
LOGITS = ["m_logit_propensity", "m_logit_churn"]
PCS = [f"m_pc{i}" for i in range(16)]


def model_outputs(model: object, pdf: pd.DataFrame, batch: int = 2048) -> pd.DataFrame:
    """``pdf`` with the model's logits and user summary vector (``m_*`` columns) added."""
    import torch

    names, logits, summaries = model.config.aggregate_names, [], []
    with torch.no_grad():
        for start in range(0, len(pdf), batch):
            chunk = pdf.iloc[start : start + batch]
            got = model.predict(batch_from_numpy({c: chunk[c].to_numpy() for c in chunk.columns}, names))
            p = torch.stack([got[t] for t in TASKS], dim=1).clamp(1e-6, 1 - 1e-6)  # [B, 2]
            logits.append(torch.logit(p).numpy())
            summaries.append(got["summary"].numpy())  # [B, D]
    out = pdf.copy()
    out[LOGITS] = np.concatenate(logits)
    out["m_summary"] = list(np.concatenate(summaries))
    return out


def with_components(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """16 principal components of the summary vector, fitted on the train rows."""
    pca = PCA(n_components=len(PCS), random_state=0).fit(np.stack(frames["train"]["m_summary"].to_numpy()))
    for f in frames.values():
        f[PCS] = pca.transform(np.stack(f["m_summary"].to_numpy()))
    return frames


def margin(y: np.ndarray, p: np.ndarray, base: np.ndarray, reps: int = 400) -> list[float]:
    """Paired bootstrap 95 % interval of AUC(p) - AUC(base) over holdout rows."""
    rng, n, out = np.random.default_rng(0), len(y), []
    for _ in range(reps):
        i = rng.integers(0, n, n)
        if 0 < y[i].mean() < 1:
            out.append(roc_auc_score(y[i], p[i]) - roc_auc_score(y[i], base[i]))
    return [round(float(np.percentile(out, q)), 4) for q in (2.5, 97.5)]


def blend(gbdt: baselines.Fitted, valid: pd.DataFrame, hold: pd.DataFrame, task: str) -> np.ndarray:
    """Holdout scores of a logistic regression on [model logit, GBDT logit] fitted on the valid rows."""
    v, yv = baselines.labelled(valid, task)

    def inputs(df: pd.DataFrame) -> np.ndarray:
        g = np.clip(baselines.predict(gbdt, df), 1e-6, 1 - 1e-6)
        return np.column_stack([df[f"m_logit_{task}"].to_numpy(), np.log(g / (1 - g))])

    return LogisticRegression(C=1.0).fit(inputs(v), yv).predict_proba(inputs(hold))[:, 1]


def task_result(frames: dict[str, pd.DataFrame], task: str) -> dict[str, object]:
    """Holdout ROC-AUC of the model alone and each GBDT variant, with margins over ``gbdt``."""
    train, valid, hold = frames["train"], frames[f"valid:{task}"], frames[f"holdout:{task}"]
    h, y = baselines.labelled(hold, task)
    scores, fitted_gbdt = {"model": h[f"m_logit_{task}"].to_numpy()}, None
    for name, extra in (("gbdt", []), ("hybrid_logits", LOGITS), ("hybrid_summary", LOGITS + PCS)):
        fitted = baselines.fit_gbdt(train, valid, task, extra=extra)
        scores[name] = baselines.predict(fitted, h)
        fitted_gbdt = fitted if name == "gbdt" else fitted_gbdt
        log.info("%s/%s: %s", task, name, fitted.info)
    scores["blend"] = blend(fitted_gbdt, valid, h, task)
    auc = {k: round(float(roc_auc_score(y, p)), 4) for k, p in scores.items()}
    over = {k: margin(y, p, scores["gbdt"]) for k, p in scores.items() if k != "gbdt"}
    return {"n_holdout": len(y), "roc_auc": auc, "margin_over_gbdt_95": over}


def main(argv: list[str] | None = None) -> int:
    got = model_and_split(argv, __doc__, "bench/results/hybrid_journey.json", "bench-hybrid")
    if got is None:
        return 2
    args, checkpoint, model, d = got
    frames = with_components({k: model_outputs(model, f) for k, f in d.pandas.items()})
    result = {"checkpoint": str(checkpoint), **{t: task_result(frames, t) for t in TASKS}}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
