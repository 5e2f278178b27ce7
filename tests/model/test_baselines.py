"""Baselines on synthetic snapshot frames, BG/NBD on data simulated from its own process, the report.

Everything is pandas/numpy: no Spark session is started.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from shopformer.features.aggregates import feature_names
from shopformer.model.baselines import (
    BASELINES,
    BaselineRun,
    BgNbd,
    aggregate_features,
    bgnbd_inputs,
    fit_bgnbd_params,
    fit_gbdt,
    p_alive,
    p_none_within,
    predict,
    run_baselines,
)
from shopformer.model.evaluation import binary_metrics, metrics_row
from shopformer.model.report import verdict, write_report

WINDOWS = (7, 30, 90)


def snapshot_frame(n_rows: int = 2400, n_dates: int = 6, seed: int = 0) -> pd.DataFrame:
    """Rows shaped like gold.user_snapshots whose labels depend on the aggregates (roughly consistent)."""
    rng = np.random.default_rng(seed)
    rate = np.minimum(rng.gamma(1.0, 0.25, n_rows), 1.0)  # share of days active
    buy = rng.beta(1.0, 5.0, n_rows)  # share of active days with a purchase
    dead_for = np.where(rng.random(n_rows) < 0.3, rng.uniform(0, 120, n_rows), 0.0)  # days since dropout
    tenure = rng.integers(1, 400, n_rows).astype(float)
    df = pd.DataFrame({"source": "synthetic", "user_id": [f"u{i % 800}" for i in range(n_rows)]})
    start = dt.date(2024, 1, 1)
    df["as_of_date"] = [start + dt.timedelta(weeks=int(i)) for i in np.sort(rng.integers(0, n_dates, n_rows))]
    active = {
        w: rng.binomial(np.clip(np.minimum(w, tenure) - dead_for, 0, None).astype(int), rate) for w in WINDOWS
    }
    df["recency_days"] = dead_for + rng.exponential(1 / np.maximum(rate, 0.02))
    df["tenure_days"] = np.maximum(tenure, np.ceil(df["recency_days"]))
    for w in WINDOWS:
        df[f"active_days_{w}d"] = active[w]
        df[f"n_events_{w}d"] = active[w] * (1 + rng.poisson(3, n_rows))
        df[f"n_views_{w}d"] = (0.8 * df[f"n_events_{w}d"]).round()
        df[f"n_carts_{w}d"] = (0.1 * df[f"n_events_{w}d"]).round()
        df[f"n_purchases_{w}d"] = rng.binomial(active[w], buy)
        df[f"revenue_{w}d"] = df[f"n_purchases_{w}d"] * rng.uniform(10, 100, n_rows)
        df[f"n_sessions_{w}d"] = active[w]
    scale = np.maximum(df["tenure_days"] / 90, 1)
    for m in ("n_events", "n_purchases", "revenue", "n_sessions"):
        df[f"{m}_all"] = (df[f"{m}_90d"] * scale).round(2)
    df["n_categories_all"] = rng.integers(1, 10, n_rows)
    df["purchase_recency_days"] = np.where(
        df["n_purchases_all"] > 0, df["recency_days"] + rng.exponential(5), np.nan
    )
    for c in ("view_to_cart_rate", "cart_to_purchase_rate", "cart_abandonment", "discount_purchase_share"):
        df[c] = np.where(rng.random(n_rows) < 0.2, np.nan, rng.uniform(0, 1, n_rows))
    df["avg_rel_price_paid"], df["avg_rel_price_viewed"] = rng.normal(1, 0.1, (2, n_rows))
    alive = dead_for == 0
    df["label_propensity"] = (rng.random(n_rows) < alive * (1 - np.exp(-7 * rate * buy * 3))).astype(int)
    churned = ~alive | (rng.random(n_rows) < np.exp(-30 * rate))
    df["label_churn"] = pd.array(np.where(active[90] > 0, churned.astype(float), np.nan)).astype("Int64")
    df["propensity_horizon_days"], df["churn_horizon_days"] = 7, 30
    return df


@pytest.fixture(scope="module")
def splits() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Holdout from 2024-02-05, the as-of date before it valid, the earlier ones train."""
    df = snapshot_frame()
    dates = pd.to_datetime(df["as_of_date"]).dt.date
    cut = dt.date(2024, 2, 5)
    valid_date = max(d for d in dates.unique() if d < cut)
    return df[dates < valid_date], df[dates == valid_date], df[dates >= cut]


@pytest.fixture(scope="module")
def run(splits: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> BaselineRun:
    return run_baselines(*splits, threads=1)  # a loaded 2-core machine: OpenMP threads only contend


def test_synthetic_frame_has_every_aggregate_column() -> None:
    df = snapshot_frame(50)
    assert aggregate_features(df) == feature_names(WINDOWS)
    with pytest.raises(ValueError, match="missing"):
        aggregate_features(df.drop(columns=["cart_abandonment"]))


def test_gbdt_beats_the_base_rate(run: BaselineRun) -> None:
    h = run.results[run.results["split"] == "holdout"].set_index(["task", "model"])
    for task in ("propensity", "churn"):
        gbdt, base = h.loc[(task, "gbdt")], h.loc[(task, "base_rate")]
        assert gbdt["roc_auc"] > 0.7 > base["roc_auc"] - 0.15 and base["roc_auc"] == 0.5
        assert gbdt["log_loss"] < base["log_loss"] - 0.02
        assert h.loc[(task, "logistic_rfm"), "roc_auc"] > 0.65
        assert h.loc[(task, "recency"), "roc_auc"] > 0.6
    assert run.fitted[("gbdt", "churn")].info["early_stopping_on_valid"]
    assert run.fitted[("gbdt", "churn")].info["n_iter"] < 500


def test_run_baselines_covers_every_baseline_task_and_split(run: BaselineRun, splits: tuple) -> None:
    assert len(run.results) == len(BASELINES) * 2 * 2
    assert set(run.results["note"]) == {""}
    assert set(run.predictions.columns) == {"model", "task", "y_true", "p"}
    holdout = splits[2]
    n_churn = int(holdout["label_churn"].notna().sum())
    assert len(run.predictions.query("model == 'gbdt' and task == 'churn'")) == n_churn
    p = predict(run.fitted[("bgnbd", "churn")], holdout)
    assert p.shape == (len(holdout),) and ((p > 0) & (p < 1)).all()


def test_bgnbd_baseline_ranks_churn(run: BaselineRun) -> None:
    h = run.results[run.results["split"] == "holdout"].set_index(["task", "model"])
    assert h.loc[("churn", "bgnbd"), "roc_auc"] > 0.6
    assert run.fitted[("bgnbd", "churn")].info["basis"] == "activity"


def test_a_baseline_that_cannot_fit_gets_a_note_row(splits: tuple, tmp_path: Path) -> None:
    train, valid, holdout = splits
    one_class = train.assign(label_propensity=0)
    names = ["gbdt", "base_rate"]
    res = run_baselines(one_class, valid, holdout, tasks=["propensity"], names=names, threads=1)
    note = res.results.set_index("model").at["gbdt", "note"]
    assert note.startswith("fit failed") and ("base_rate", "propensity") in res.fitted
    rep = write_report(res.results, res.predictions, tmp_path)
    assert rep.winners == {"propensity": "base_rate"}
    gbdt_line = next(line for line in rep.table.splitlines() if " gbdt " in line)
    assert gbdt_line.split()[-1] == "n/a" and f" {len(holdout)}" in rep.table
    assert "fit failed" in (tmp_path / "report.md").read_text()


def test_a_task_without_training_rows_gets_note_rows_not_nan_scores(splits: tuple) -> None:
    """A training sample with no churn label at all (seen at scale: a biased sample cut the purged split's
    early dates) used to give base_rate NaN scores, and the NaN stopped the training run."""
    train, valid, holdout = splits
    unlabelled = train.assign(label_churn=np.nan)
    res = run_baselines(
        unlabelled, valid, holdout, tasks=["churn"], names=["base_rate", "recency"], threads=1
    )
    notes = res.results.set_index("model")["note"]
    assert notes["base_rate"] == "fit failed: no labelled churn rows in the training split"
    assert list(res.fitted) == [("recency", "churn")]  # recency needs no training rows


def test_gbdt_without_usable_validation_still_fits(splits: tuple) -> None:
    train, valid, _ = splits
    with threadpool_limits(limits=1):
        f = fit_gbdt(train, valid.iloc[:0], "propensity", max_iter=50)
    assert not f.info["early_stopping_on_valid"] and f.calibrator.method == "identity"


def test_gbdt_leaves_out_features_without_any_value(splits: tuple) -> None:
    """Transactions-only sources have no views: their funnel rates are all missing."""
    train, valid, hold = (df.assign(view_to_cart_rate=np.nan) for df in splits)
    with threadpool_limits(limits=1):
        f = fit_gbdt(train, valid, "propensity", max_iter=50)
    assert "view_to_cart_rate" not in f.state["features"] and len(f.state["features"]) > 5
    y, labelled = hold["label_propensity"], hold["label_propensity"].notna()
    assert binary_metrics(y[labelled], predict(f, hold)[labelled.to_numpy()])["roc_auc"] > 0.7


# --- BG/NBD ---------------------------------------------------------------------------------------


def simulate_bgnbd(m: BgNbd, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The generative process: Poisson(lambda) purchases, dropout with prob p after each one."""
    rng = np.random.default_rng(seed)
    lam, p = rng.gamma(m.r, 1 / m.alpha, n), rng.beta(m.a, m.b, n)
    t_obs = rng.uniform(60, 360, n)
    t, x, t_x, going = np.zeros(n), np.zeros(n), np.zeros(n), np.ones(n, dtype=bool)
    while going.any():
        t = t + rng.exponential(1 / np.maximum(lam, 1e-12))
        bought = going & (t <= t_obs)
        x, t_x = x + bought, np.where(bought, t, t_x)
        going = bought & (rng.random(n) >= p)
    return x, t_x, t_obs


def test_bgnbd_recovers_parameters_from_simulated_data() -> None:
    true = BgNbd(r=0.6, alpha=12.0, a=0.8, b=2.5)
    fit = fit_bgnbd_params(*simulate_bgnbd(true, 5000, seed=0))
    assert fit.r / fit.alpha == pytest.approx(true.r / true.alpha, rel=0.15)  # mean purchase rate
    assert fit.a / (fit.a + fit.b) == pytest.approx(true.a / (true.a + true.b), rel=0.2)  # mean dropout
    for got, want in zip(vars(fit).values(), vars(true).values(), strict=True):
        assert got == pytest.approx(want, rel=0.35)


def test_p_alive_falls_with_the_recency_gap() -> None:
    m = BgNbd(r=0.6, alpha=12.0, a=0.8, b=2.5)
    t_x = np.array([170.0, 150.0, 100.0, 40.0])  # last purchase ever longer ago, same history length
    alive = p_alive(m, np.full(4, 5.0), t_x, np.full(4, 180.0))
    assert (np.diff(alive) < 0).all() and alive[0] > 0.8 and alive[-1] < 0.1
    assert p_alive(m, np.zeros(1), np.zeros(1), np.array([180.0]))[0] == 1.0
    quiet = p_none_within(m, np.full(4, 5.0), t_x, np.full(4, 180.0), np.full(4, 30.0))
    assert (np.diff(quiet) > 0).all() and ((quiet >= 1 - alive) & (quiet <= 1)).all()


def test_bgnbd_inputs_from_snapshot_columns() -> None:
    df = pd.DataFrame(
        {
            "n_events_90d": [9, 9, 0],
            "active_days_90d": [4, 3, 0],
            "tenure_days": [200.0, 40.0, 10.0],
            "recency_days": [10.0, 5.0, 3.0],
            "n_purchases_all": [3, 0, 1],
            "purchase_recency_days": [20.0, np.nan, 3.0],
        }
    )
    x, t_x, t_obs = bgnbd_inputs(df, "activity")
    np.testing.assert_allclose(x, [4, 2, 0])  # born before the window: all 4; inside: 3 - 1
    np.testing.assert_allclose(t_obs, [90, 40, 10])
    np.testing.assert_allclose(t_x, [80, 35, 0])
    x, t_x, t_obs = bgnbd_inputs(df, "purchases")
    np.testing.assert_allclose(x, [2, 0, 0])
    np.testing.assert_allclose(t_x, [180, 0, 0])
    with pytest.raises(ValueError, match="basis"):
        bgnbd_inputs(df, "sessions")


# --- report ---------------------------------------------------------------------------------------


def test_report_writes_files_and_names_the_winner_even_when_the_model_loses(
    run: BaselineRun, splits: tuple, tmp_path: Path
) -> None:
    holdout = splits[2]
    rows, preds = [run.results], [run.predictions]
    rng = np.random.default_rng(9)
    for task, col in (("propensity", "label_propensity"), ("churn", "label_churn")):
        y = holdout[col].dropna().to_numpy(dtype=float)
        p = np.clip(0.2 * y + rng.uniform(0, 0.8, y.size), 0.01, 0.99)  # weak, uncalibrated "model"
        rows.append(pd.DataFrame([metrics_row("shopformer", task, "holdout", y, p)]))
        preds.append(pd.DataFrame({"model": "shopformer", "task": task, "y_true": y, "p": p}))
    results = pd.concat(rows, ignore_index=True)
    rep = write_report(results, pd.concat(preds, ignore_index=True), tmp_path / "r", model_name="shopformer")
    assert len(rep.files) == 2 + 4 * 2 and all(f.exists() and f.stat().st_size > 0 for f in rep.files)
    assert {f.suffix for f in rep.files} == {".md", ".csv", ".png"}
    assert set(rep.winners) == {"propensity", "churn"} and "shopformer" not in rep.winners.values()
    assert all(f"{w} *" in rep.table for w in rep.winners.values())
    assert rep.table.count("the model shopformer loses") == 2
    md = (tmp_path / "r" / "report.md").read_text()
    assert "![roc](roc_churn.png)" in md and "loses" in md


def test_report_with_an_undefined_metric_says_so(tmp_path: Path) -> None:
    rows = pd.DataFrame([metrics_row("gbdt", "churn", "holdout", [1, 1], [0.3, 0.6])])
    preds = pd.DataFrame({"model": "gbdt", "task": "churn", "y_true": [1.0, 1.0], "p": [0.3, 0.6]})
    rep = write_report(rows, preds, tmp_path, model_name="shopformer")
    assert rep.winners == {"churn": None} and "no winner" in rep.table and "single class" in rep.table
    assert binary_metrics([1, 1], [0.3, 0.6])["note"] in (tmp_path / "report.md").read_text()


def test_verdict_separates_clear_gaps_from_noise() -> None:
    def rows(n: int) -> pd.DataFrame:
        base = {"task": "churn", "split": "holdout", "n": n, "base_rate": 0.3, "log_loss": 0.5, "ece": 0.01}
        return pd.DataFrame(
            [base | {"model": "shopformer", "roc_auc": 0.80}, base | {"model": "gbdt", "roc_auc": 0.78}]
        )

    big, small = verdict(rows(100_000), "churn", "shopformer"), verdict(rows(200), "churn", "shopformer")
    assert "the model shopformer wins (0.800 vs gbdt 0.780, +0.020)" in big and "noise" not in big
    assert "within the noise" in small and "too few rows" in small
    assert "meets the 0.02 goal." in big
    lost = verdict(rows(100_000), "churn", "gbdt")
    assert (
        "the model gbdt loses (0.780 vs shopformer 0.800, -0.020)" in lost and "(the model's: 0.010)" in lost
    )
    failed = rows(1000).assign(roc_auc=[np.nan, 0.78], note=["fit failed: boom", ""])
    assert "the model shopformer has no roc_auc (fit failed: boom)" in verdict(failed, "churn", "shopformer")
