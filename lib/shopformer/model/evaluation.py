"""Metrics, calibration, time-based splits and drift (PSI): pure numpy/pandas, no Spark, no pickles.

Used the same way for the transformer, the baselines (``baselines.py``), the report (``report.py``) and
the nightly score-quality job, so every number in MLflow and in ``scores.score_quality`` means one thing.
Definitions and choices are in docs/evaluation.md.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score

log = logging.getLogger(__name__)

ECE_BINS = 15
EPS = 1e-6  # probabilities are kept in [EPS, 1 - EPS]: a log loss stays finite after calibration
METRICS = ("roc_auc", "pr_auc", "log_loss", "ece", "lift_top_decile", "base_rate", "n")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "log_loss": False, "ece": False, "lift_top_decile": True}


def _clean(y_true: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """Drop rows without a label (null = not available); a NaN *score* is a bug and raises."""
    y = np.asarray(pd.to_numeric(pd.Series(np.asarray(y_true).ravel()), errors="coerce"), dtype=float)
    s = np.asarray(p, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.size} rows but the scores have {s.size}")
    keep = ~np.isnan(y)
    if np.isnan(s[keep]).any():
        raise ValueError(f"{int(np.isnan(s[keep]).sum())} scores are NaN on labelled rows")
    if not np.isin(y[keep], (0.0, 1.0)).all():
        raise ValueError("binary labels must be 0, 1 or null")
    return y[keep], s[keep]


def binary_metrics(y_true: Any, p: Any, *, ece_bins: int = ECE_BINS) -> dict[str, Any]:
    """AUC, PR-AUC (average precision), log loss, ECE, lift at the top decile, base rate, n and a note.

    Metrics that are undefined for this sample (one class only, nothing labelled) are NaN and ``note``
    says why, instead of raising: a quiet day must not crash the nightly job.
    """
    y, s = _clean(y_true, p)
    n = int(y.size)
    out: dict[str, Any] = dict.fromkeys(METRICS[:-1], math.nan) | {"n": n, "note": ""}
    if n == 0:
        out["note"] = "no labelled rows"
        return out
    base = float(y.mean())
    out |= {"base_rate": base, "log_loss": log_loss(y, s), "ece": ece(y, s, bins=ece_bins)}
    if base in (0.0, 1.0):
        out["note"] = f"single class (all {int(base)}): roc_auc, pr_auc and lift are undefined"
        log.warning("binary_metrics: %s (n=%d)", out["note"], n)
        return out
    out["roc_auc"] = float(roc_auc_score(y, s))
    out["pr_auc"] = float(average_precision_score(y, s))
    out["lift_top_decile"] = lift_at(y, s, 0.1)
    return out


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log likelihood, scores clipped to [EPS, 1-EPS] so one 0/1 score cannot give inf."""
    q = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))


def ece(y: np.ndarray, p: np.ndarray, *, bins: int = ECE_BINS, strategy: str = "quantile") -> float:
    """Expected calibration error: sum over bins of (bin share) * |observed rate - mean score|.

    ``quantile`` (default) = equal-mass bins: with a 5 % base rate, equal-width bins would put nearly
    every user into the first bin and hide miscalibration. Tied scores always share a bin.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if y.size == 0:
        return math.nan
    ids = _bin_ids(p, bins, strategy)
    counts = np.bincount(ids)
    used = counts > 0
    obs = np.bincount(ids, weights=y)[used] / counts[used]
    mean_p = np.bincount(ids, weights=p)[used] / counts[used]
    return float(np.sum(counts[used] / y.size * np.abs(obs - mean_p)))


def _bin_ids(p: np.ndarray, bins: int, strategy: str) -> np.ndarray:
    if strategy == "quantile":
        inner = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)[1:-1]))
    elif strategy == "uniform":
        inner = np.linspace(0, 1, bins + 1)[1:-1]
    else:
        raise ValueError(f"unknown ECE bin strategy {strategy!r} (quantile | uniform)")
    return np.searchsorted(inner, p, side="right")


def reliability_curve(y: Any, p: Any, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean score, observed rate, count) per equal-mass bin: the points of a reliability plot."""
    y, s = _clean(y, p)
    ids = _bin_ids(s, bins, "quantile") if s.size else np.zeros(0, dtype=int)
    counts = np.bincount(ids, minlength=1).astype(float)
    used = counts > 0
    mean_p = np.bincount(ids, weights=s, minlength=1)[used] / counts[used]
    return mean_p, np.bincount(ids, weights=y, minlength=1)[used] / counts[used], counts[used]


def lift_at(y: np.ndarray, p: np.ndarray, fraction: float = 0.1) -> float:
    """Positive rate among the top ``fraction`` by score / overall positive rate.

    A tie group straddling the cut counts with its mean rate (the expectation under random tie
    breaking), so all-equal scores give exactly 1.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    if y.size == 0 or y.mean() == 0:
        return math.nan
    k = max(1, math.ceil(fraction * y.size))
    _, inverse = np.unique(-p, return_inverse=True)  # ascending -p = descending score
    n_g, pos_g = np.bincount(inverse), np.bincount(inverse, weights=y)
    before = np.concatenate([[0], np.cumsum(n_g)[:-1]])
    take = np.clip(k - before, 0, n_g)
    top_pos = float(np.sum(pos_g * take / n_g))
    return (top_pos / k) / float(y.mean())


def _ranks(topk_ids: Any, target: Any, k: int | None, ignore_target: int | None) -> np.ndarray:
    """1-based rank of the target in each row's top k (0 = not there), rows with ignored targets dropped."""
    ids, t = np.asarray(topk_ids), np.asarray(target).ravel()
    if ids.ndim != 2 or ids.shape[0] != t.size:
        raise ValueError(f"topk_ids must be [n, k] with n = len(target); got {ids.shape} and {t.size}")
    ids = ids[:, : (k or ids.shape[1])]
    if ignore_target is not None:
        keep = t != ignore_target
        ids, t = ids[keep], t[keep]
    hit = ids == t[:, None]
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0)


def recall_at_k(topk_ids: Any, target: Any, k: int | None = None, ignore_target: int | None = None) -> float:
    """Share of rows whose single next item is among the first k predictions (= hit rate)."""
    r = _ranks(topk_ids, target, k, ignore_target)
    return float((r > 0).mean()) if r.size else math.nan


def ndcg_at_k(topk_ids: Any, target: Any, k: int | None = None, ignore_target: int | None = None) -> float:
    """NDCG with one relevant item: 1 / log2(rank + 1) if it is in the top k, else 0 (ideal DCG = 1)."""
    r = _ranks(topk_ids, target, k, ignore_target)
    if not r.size:
        return math.nan
    return float(np.where(r > 0, 1.0 / np.log2(np.maximum(r, 1) + 1.0), 0.0).mean())


def spearman(a: Any, b: Any) -> float:
    """Spearman rank correlation over the pairs where both are present; NaN if either is constant."""
    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def psi(expected_scores: Any, actual_scores: Any, bins: int = 10) -> float:
    """Population stability index sum((a - e) * ln(a / e)) over quantile bins of the expected scores.

    Shares are floored at 1e-4 so an empty bin gives a large, finite value. Rule of thumb:
    < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.
    """
    e = np.asarray(expected_scores, dtype=float)
    a = np.asarray(actual_scores, dtype=float)
    e, a = e[~np.isnan(e)], a[~np.isnan(a)]
    if e.size == 0 or a.size == 0:
        return math.nan
    inner = np.unique(np.quantile(e, np.linspace(0, 1, bins + 1)[1:-1]))
    n_bins = inner.size + 1
    e_share = np.bincount(np.searchsorted(inner, e, side="right"), minlength=n_bins) / e.size
    a_share = np.bincount(np.searchsorted(inner, a, side="right"), minlength=n_bins) / a.size
    e_share, a_share = np.maximum(e_share, 1e-4), np.maximum(a_share, 1e-4)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(q) - np.log1p(-q)


@dataclass
class Calibrator:
    """Maps raw scores to calibrated probabilities; stored as plain floats/lists (see ``to_dict``).

    ``method``: ``isotonic`` (piecewise-linear through ``x``/``y``, applied with ``np.interp``), ``platt``
    (sigmoid(a * logit(p) + b)) or ``identity``. ``fit`` picks isotonic or Platt by out-of-fold log loss
    on the validation split, so the flexible isotonic map only wins where the data supports it.
    """

    method: str = "identity"
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, y_valid: Any, p_valid: Any, *, method: str = "auto", folds: int = 3, seed: int = 0
    ) -> Calibrator:
        """Fit on the validation split (never on train: the model's train scores are over-confident)."""
        y, p = _clean(y_valid, p_valid)
        if y.size == 0 or y.min() == y.max():
            log.warning("Calibrator: validation split has one class only (n=%d): identity", y.size)
            return cls()
        if method == "auto":
            method = _choose_method(y, p, folds, seed)
        fitters = {"isotonic": _fit_isotonic, "platt": _fit_platt, "identity": lambda y, p: cls()}
        if method not in fitters:
            raise ValueError(f"unknown calibration method {method!r} (auto | isotonic | platt | identity)")
        fitted = fitters[method](y, p)
        log.info("Calibrator: %s on %d validation rows", fitted.method, y.size)
        return fitted

    def apply(self, p: Any) -> np.ndarray:
        """Calibrated probabilities in [EPS, 1-EPS]; numpy only, so it runs inside a pandas UDF."""
        s = np.asarray(p, dtype=float)
        if self.method == "isotonic":
            out = np.interp(s, self.params["x"], self.params["y"])
        elif self.method == "platt":
            out = 1.0 / (1.0 + np.exp(-(self.params["a"] * _logit(s) + self.params["b"])))
        elif self.method == "identity":
            out = s
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        return np.clip(out, EPS, 1 - EPS)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``{"method": ..., "params": {...}}`` with floats and lists of floats."""
        params = {
            k: [float(v) for v in val] if isinstance(val, list | np.ndarray) else float(val)
            for k, val in self.params.items()
        }
        return {"method": self.method, "params": params}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        return cls(method=str(d["method"]), params=dict(d.get("params", {})))


def _fit_isotonic(y: np.ndarray, p: np.ndarray) -> Calibrator:
    iso = IsotonicRegression(y_min=EPS, y_max=1 - EPS, out_of_bounds="clip").fit(p, y)
    return Calibrator("isotonic", {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})


def _fit_platt(y: np.ndarray, p: np.ndarray) -> Calibrator:
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(_logit(p)[:, None], y)
    return Calibrator("platt", {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])})


def _choose_method(y: np.ndarray, p: np.ndarray, folds: int, seed: int) -> str:
    """Isotonic vs Platt by out-of-fold log loss; Platt when a fold would lack a class (too few rows)."""
    if min(y.sum(), (1 - y).sum()) < 10 * folds:
        return "platt"
    fold = np.random.default_rng(seed).permutation(y.size) % folds
    losses = {}
    for name, fitter in (("isotonic", _fit_isotonic), ("platt", _fit_platt)):
        oof = np.empty_like(p)
        for f in range(folds):
            train, test = fold != f, fold == f
            oof[test] = fitter(y[train], p[train]).apply(p[test])
        losses[name] = log_loss(y, oof)
    log.info("Calibrator: out-of-fold log loss %s", {k: round(v, 5) for k, v in losses.items()})
    return min(losses, key=losses.__getitem__)


def metrics_row(model: str, task: str, split: str, y_true: Any, p: Any) -> dict[str, Any]:
    """One row of the results table that ``report.write_report`` reads (model x task x split)."""
    return {"model": model, "task": task, "split": split, **binary_metrics(y_true, p)}
