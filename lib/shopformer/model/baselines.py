"""Reference models on the snapshot aggregates, so every training run says what the transformer adds.

Each baseline is ``fit_<name>(train_df, valid_df, task) -> Fitted`` and ``predict(fitted, df)`` gives
calibrated probabilities, calibrated on the validation split exactly like the model. Frames are pandas
rows of ``gold.user_snapshots``; no Spark. Why these baselines and the BG/NBD approximations:
docs/evaluation.md.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from shopformer.features.aggregates import feature_names
from shopformer.model.evaluation import Calibrator, metrics_row
from shopformer.schemas import TASK_LABELS

log = logging.getLogger(__name__)

TASKS = TASK_LABELS
HORIZONS = {"propensity": ("propensity_horizon_days", 7), "churn": ("churn_horizon_days", 30)}
BGNBD_BASIS = {"propensity": "purchases", "churn": "activity"}
SEED = 0


@dataclass
class Fitted:
    """A fitted baseline: its raw-score state, the calibrator fitted on valid, and fit facts."""

    name: str
    task: str
    state: dict[str, Any]
    calibrator: Calibrator = field(default_factory=Calibrator)
    info: dict[str, Any] = field(default_factory=dict)


def labelled(df: pd.DataFrame, task: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of the task's population (label not null) and their 0/1 labels."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    col = TASKS[task]
    if col not in df.columns:
        raise ValueError(f"label column {col!r} missing from the snapshot frame")
    y = pd.to_numeric(df[col], errors="coerce")
    keep = y.notna().to_numpy()
    return df[keep], y[keep].to_numpy(dtype=float)


def windows_of(df: pd.DataFrame) -> list[int]:
    """The aggregate windows present in the frame (``n_events_<w>d`` columns), ascending."""
    ws = sorted({int(m.group(1)) for c in df.columns if (m := re.fullmatch(r"n_events_(\d+)d", c))})
    if not ws:
        raise ValueError("no n_events_<w>d columns: is this a gold.user_snapshots frame?")
    return ws


def aggregate_features(df: pd.DataFrame) -> list[str]:
    """All aggregate feature columns (``aggregates.feature_names``) for the frame's windows."""
    names = feature_names(windows_of(df))
    if missing := [c for c in names if c not in df.columns]:
        raise ValueError(f"aggregate columns missing from the snapshot frame: {missing}")
    return names


def rfm_features(df: pd.DataFrame) -> list[str]:
    """Recency, frequency, monetary: recencies, tenure, events / purchases / revenue per window + life."""
    per_w = [f"{m}_{w}d" for m in ("n_events", "n_purchases", "revenue") for w in windows_of(df)]
    return [
        "recency_days",
        "purchase_recency_days",
        "tenure_days",
        *per_w,
        "n_events_all",
        "n_purchases_all",
        "revenue_all",
    ]


def _matrix(df: pd.DataFrame, cols: Sequence[str]) -> np.ndarray:
    """Float matrix, nulls (pandas NA or None from Arrow) as NaN."""
    return df[list(cols)].astype("float64").to_numpy(dtype=float, na_value=np.nan)


def _calibrate(fitted: Fitted, valid: pd.DataFrame) -> Fitted:
    v, y = labelled(valid, fitted.task)
    fitted.calibrator = Calibrator.fit(y, _raw(fitted, v), seed=SEED) if len(v) else Calibrator()
    fitted.info["calibration"] = fitted.calibrator.method
    return fitted


def fit_base_rate(train: pd.DataFrame, valid: pd.DataFrame, task: str) -> Fitted:
    """Everyone gets the train positive rate: the floor every model must clear (AUC 0.5)."""
    _, y = labelled(train, task)
    if not y.size:  # like the other baselines: a "fit failed" row, not NaN scores that stop the run
        raise ValueError(f"no labelled {task} rows in the training split")
    return Fitted("base_rate", task, {"rate": float(y.mean())}, info={"n_train": int(y.size)})


def fit_recency(train: pd.DataFrame, valid: pd.DataFrame, task: str) -> Fitted:
    """Days since the last event alone (recent users buy, stale users churn), mapped to a probability
    by the calibrator: the simplest ranker a CRM team already uses."""
    return _calibrate(Fitted("recency", task, {}), valid)


def fit_gbdt(
    train: pd.DataFrame, valid: pd.DataFrame, task: str, *, max_iter: int = 500, extra: Sequence[str] = ()
) -> Fitted:
    """Histogram GBDT on all aggregates (NaN-aware), early stopping on the validation split's loss.
    ``extra`` columns join the aggregates (bench/hybrid_journey.py: the sequence model's outputs)."""
    t, y = labelled(train, task)
    v, yv = labelled(valid, task)
    cols = [*aggregate_features(train), *extra]
    on_valid = yv.size > 0 and 0 < yv.mean() < 1
    # A feature without a single value (funnel rates of a transactions-only source) carries nothing and
    # breaks the histogram binning: leave it out, and say so.
    if empty := [c for c in cols if t[c].isna().all()]:
        log.info("gbdt/%s: %d features have no values in train, left out: %s", task, len(empty), empty)
        cols = [c for c in cols if c not in empty]
    model = HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=max_iter,
        max_leaf_nodes=31,
        l2_regularization=1.0,
        early_stopping=True,
        n_iter_no_change=20,
        scoring="loss",
        random_state=SEED,
    )
    if on_valid:
        model.fit(_matrix(t, cols), y, X_val=_matrix(v, cols), y_val=yv)
    else:
        log.warning("gbdt/%s: validation split unusable; early stopping on 10 %% of train", task)
        model.fit(_matrix(t, cols), y)
    info = {"n_train": int(y.size), "n_iter": int(model.n_iter_), "early_stopping_on_valid": on_valid}
    return _calibrate(Fitted("gbdt", task, {"model": model, "features": cols}, info=info), valid)


def _log1p_nonneg(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.clip(x, 0, None))


def fit_logistic(train: pd.DataFrame, valid: pd.DataFrame, task: str) -> Fitted:
    """Logistic regression on RFM columns: log1p, median fill + missing indicator, standardized."""
    t, y = labelled(train, task)
    cols = rfm_features(train)
    model = make_pipeline(
        FunctionTransformer(_log1p_nonneg),
        SimpleImputer(strategy="median", add_indicator=True),
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=2000),
    ).fit(_matrix(t, cols), y)
    return _calibrate(Fitted("logistic_rfm", task, {"model": model, "features": cols}), valid)


# --- BG/NBD (Fader, Hardie & Lee 2005), days as the time unit --------------------------------------


@dataclass(frozen=True)
class BgNbd:
    """Population parameters: purchase rate ~ Gamma(r, alpha), dropout after each purchase ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


def bgnbd_loglik(m: BgNbd, x: np.ndarray, t_x: np.ndarray, t_obs: np.ndarray) -> np.ndarray:
    """Per-customer log likelihood of x repeat events, the last at t_x, observed over (0, t_obs]."""
    ln = special.gammaln
    a1 = ln(m.r + x) - ln(m.r) + m.r * np.log(m.alpha)
    a2 = ln(m.a + m.b) + ln(m.b + x) - ln(m.b) - ln(m.a + m.b + x)
    a3 = -(m.r + x) * np.log(m.alpha + t_obs)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.log(m.a) - np.log(m.b + x - 1) - (m.r + x) * np.log(m.alpha + t_x)
    return a1 + a2 + np.logaddexp(a3, np.where(x > 0, a4, -np.inf))


def fit_bgnbd_params(x: np.ndarray, t_x: np.ndarray, t_obs: np.ndarray) -> BgNbd:
    """Maximum likelihood over log-parameters (L-BFGS-B, bounded so a vanishing dropout stays finite)."""
    x, t_x, t_obs = (np.asarray(v, dtype=float) for v in (x, t_x, t_obs))
    start = np.log([1.0, max(1.0, t_obs.mean() / (x.mean() + 1.0)), 1.0, 1.0])

    def nll(theta: np.ndarray) -> float:
        return -float(np.mean(bgnbd_loglik(BgNbd(*np.exp(theta)), x, t_x, t_obs)))

    res = optimize.minimize(nll, start, method="L-BFGS-B", bounds=[(-9.0, 12.0)] * 4)
    if not res.success:
        log.warning("BG/NBD fit did not converge: %s", res.message)
    return BgNbd(*(float(v) for v in np.exp(res.x)))


def p_alive(m: BgNbd, x: np.ndarray, t_x: np.ndarray, t_obs: np.ndarray) -> np.ndarray:
    """P(still alive at t_obs | x, t_x, t_obs); 1 for x = 0 (no purchase after which to drop out)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = (
            np.log(m.a) - np.log(m.b + x - 1) + (m.r + x) * (np.log(m.alpha + t_obs) - np.log(m.alpha + t_x))
        )
    return np.where(x > 0, special.expit(-odds), 1.0)


def p_none_within(m: BgNbd, x: np.ndarray, t_x: np.ndarray, t_obs: np.ndarray, h: np.ndarray) -> np.ndarray:
    """P(no event in (t_obs, t_obs+h]) = 1 - P(alive) * (1 - ((alpha+t_obs) / (alpha+t_obs+h))^(r+x))."""
    quiet_if_alive = np.exp((m.r + x) * (np.log(m.alpha + t_obs) - np.log(m.alpha + t_obs + h)))
    return 1.0 - p_alive(m, x, t_x, t_obs) * (1.0 - quiet_if_alive)


def bgnbd_inputs(df: pd.DataFrame, basis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, t_obs) in days from snapshot columns; the approximations are listed in docs/evaluation.md.

    ``activity``: events = active days in the longest window W; users first seen inside W start at
    their first day (x = active days - 1), older users at the window start (x = active days).
    ``purchases``: x = lifetime purchase events - 1, t_obs = tenure, t_x = tenure - purchase recency.
    """
    tenure = _matrix(df, ["tenure_days"])[:, 0]
    if basis == "activity":
        w = windows_of(df)[-1]
        active = np.nan_to_num(_matrix(df, [f"active_days_{w}d"])[:, 0])
        inside = tenure <= w
        t_obs, x, since = np.where(inside, tenure, float(w)), active - inside, "recency_days"
    elif basis == "purchases":
        purchases = np.nan_to_num(_matrix(df, ["n_purchases_all"])[:, 0])
        t_obs, x, since = tenure, purchases - 1, "purchase_recency_days"
    else:
        raise ValueError(f"unknown BG/NBD basis {basis!r} (activity | purchases)")
    x = np.clip(x, 0, None)
    t_x = np.clip(t_obs - np.nan_to_num(_matrix(df, [since])[:, 0], nan=np.inf), 0, t_obs)
    return x, np.where(x > 0, t_x, 0.0), np.maximum(t_obs, 1e-3)


def fit_bgnbd(train: pd.DataFrame, valid: pd.DataFrame, task: str, *, max_rows: int = 100_000) -> Fitted:
    """BG/NBD on the train rows of the task's population (each row = one customer history), scored as
    P(no activity within the churn horizon) or P(>= 1 purchase within the propensity horizon)."""
    t, _ = labelled(train, task)
    if len(t) > max_rows:
        t = t.sample(max_rows, random_state=SEED)
    basis = BGNBD_BASIS[task]
    params = fit_bgnbd_params(*bgnbd_inputs(t, basis))
    info = {"n_train": len(t), "basis": basis, **{k: round(v, 5) for k, v in vars(params).items()}}
    log.info("bgnbd/%s: %s", task, info)
    return _calibrate(Fitted("bgnbd", task, {"params": params, "basis": basis}, info=info), valid)


def _horizon(df: pd.DataFrame, task: str) -> np.ndarray:
    col, default = HORIZONS[task]
    h = _matrix(df, [col])[:, 0] if col in df.columns else np.full(len(df), np.nan)
    return np.where(np.isnan(h), default, h)


def _raw(f: Fitted, df: pd.DataFrame) -> np.ndarray:
    """Uncalibrated score, higher = more likely positive."""
    if f.name == "base_rate":
        return np.full(len(df), f.state["rate"])
    if f.name == "recency":
        rec = np.nan_to_num(_matrix(df, ["recency_days"])[:, 0], nan=1e6)
        return rec / (1.0 + rec) if f.task == "churn" else 1.0 / (1.0 + rec)
    if f.name in ("gbdt", "logistic_rfm"):
        return f.state["model"].predict_proba(_matrix(df, f.state["features"]))[:, 1]
    if f.name == "bgnbd":
        quiet = p_none_within(f.state["params"], *bgnbd_inputs(df, f.state["basis"]), _horizon(df, f.task))
        return quiet if f.task == "churn" else 1.0 - quiet
    raise ValueError(f"unknown baseline {f.name!r}")


def predict(fitted: Fitted, df: pd.DataFrame) -> np.ndarray:
    """Calibrated probabilities for every row of ``df`` (filter to the task population yourself)."""
    if len(df) == 0:
        return np.zeros(0)
    return fitted.calibrator.apply(_raw(fitted, df))


BASELINES: dict[str, Callable[[pd.DataFrame, pd.DataFrame, str], Fitted]] = {
    "base_rate": fit_base_rate,
    "recency": fit_recency,
    "logistic_rfm": fit_logistic,
    "gbdt": fit_gbdt,
    "bgnbd": fit_bgnbd,
}


@dataclass
class BaselineRun:
    """Everything the training job logs for the baselines: metrics, holdout predictions, models."""

    results: pd.DataFrame  # model, task, split, metrics..., note
    predictions: pd.DataFrame  # model, task, y_true, p (holdout, labelled rows)
    fitted: dict[tuple[str, str], Fitted]


def run_baselines(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    holdout: pd.DataFrame,
    tasks: Sequence[str] = ("propensity", "churn"),
    names: Sequence[str] | None = None,
    threads: int | None = None,
) -> BaselineRun:
    """Fit each baseline per task, score valid and holdout; a baseline that fails to fit gets a row
    with NaN metrics and the error as its note instead of stopping the training run.

    ``threads`` caps OpenMP/BLAS threads: on a busy driver, sklearn's GBDT with one thread per core
    can run 20x slower than with one thread (measured on a loaded 2-core machine)."""
    with threadpool_limits(limits=threads):
        return _run(train, valid, holdout, tasks, names or list(BASELINES))


def _run(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    holdout: pd.DataFrame,
    tasks: Sequence[str],
    names: Sequence[str],
) -> BaselineRun:
    rows, preds, fitted = [], [], {}
    for task in tasks:
        for name in names:
            start = time.perf_counter()
            try:
                f = BASELINES[name](train, valid, task)
            except (ValueError, FloatingPointError) as e:
                log.warning("baseline %s/%s failed to fit: %s", name, task, e)
                rows.append({"model": name, "task": task, "split": "holdout", "note": f"fit failed: {e}"})
                continue
            f.info["fit_seconds"] = round(time.perf_counter() - start, 3)
            fitted[(name, task)] = f
            for split, df in (("valid", valid), ("holdout", holdout)):
                d, y = labelled(df, task)
                p = predict(f, d)
                rows.append(metrics_row(name, task, split, y, p))
                if split == "holdout":
                    preds.append(pd.DataFrame({"model": name, "task": task, "y_true": y, "p": p}))
    predictions = pd.concat(preds, ignore_index=True) if preds else pd.DataFrame()
    return BaselineRun(pd.DataFrame(rows), predictions, fitted)
