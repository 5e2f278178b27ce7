"""Metrics against hand-computed values (edge cases first), calibration, time split, PSI. No Spark."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from shopformer.model.evaluation import (
    Calibrator,
    binary_metrics,
    ece,
    lift_at,
    log_loss,
    metrics_row,
    ndcg_at_k,
    psi,
    recall_at_k,
    spearman,
)

# --- edge cases ------------------------------------------------------------------------------------


def test_single_class_gives_nan_with_a_reason_not_a_crash() -> None:
    m = binary_metrics([1, 1, 1], [0.2, 0.5, 0.9])
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"]) and math.isnan(m["lift_top_decile"])
    assert "single class" in m["note"]
    assert m["n"] == 3 and m["base_rate"] == 1.0
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.2, 0.5, 0.9])))


def test_no_labelled_rows_and_null_labels_are_dropped() -> None:
    empty = binary_metrics([None, np.nan], [0.1, 0.2])
    assert empty["n"] == 0 and empty["note"] == "no labelled rows" and math.isnan(empty["log_loss"])
    m = binary_metrics(pd.Series([1, 0, None], dtype="Int64"), [0.9, 0.1, 0.5])
    assert m["n"] == 2 and m["roc_auc"] == 1.0 and m["note"] == ""


def test_nan_score_and_bad_labels_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        binary_metrics([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="0, 1 or null"):
        binary_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="rows"):
        binary_metrics([0, 1, 1], [0.1, 0.2])


def test_all_equal_scores() -> None:
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0])
    m = binary_metrics(y, np.full(10, 0.3))
    assert m["roc_auc"] == 0.5
    assert m["pr_auc"] == pytest.approx(0.2)  # one threshold: precision = base rate at recall 1
    assert m["lift_top_decile"] == pytest.approx(1.0)  # tie group counted at its mean rate
    assert m["ece"] == pytest.approx(0.1)  # one bin: |0.2 - 0.3|


def test_perfectly_ranked() -> None:
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0
    assert m["lift_top_decile"] == pytest.approx(2.0)


def test_hand_computed_metrics() -> None:
    y, p = np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.5, 0.8])
    m = binary_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered
    assert m["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.5, 0.8])))
    assert m["lift_top_decile"] == pytest.approx(2.0)  # top 1 of 4 is positive; base rate 0.5
    assert m["base_rate"] == 0.5
    # 2 equal-mass bins {0.1, 0.4} and {0.5, 0.8}: 0.5 * |0.5 - 0.25| + 0.5 * |0.5 - 0.65|
    assert ece(y, p, bins=2) == pytest.approx(0.2)


def test_lift_tie_group_straddling_the_cut() -> None:
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.9, *[0.1] * 8])
    assert lift_at(y, p, 0.1) == pytest.approx(0.5 / 0.2)
    assert math.isnan(lift_at(np.zeros(4), np.arange(4.0)))


def test_log_loss_is_finite_for_hard_mistakes() -> None:
    assert math.isfinite(log_loss(np.array([1.0, 0.0]), np.array([0.0, 1.0])))


def test_ece_of_calibrated_and_miscalibrated_probabilities() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 50_000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    assert ece(y, p) < 0.015
    assert ece(y, p, strategy="uniform") < 0.015
    assert ece(y, 0.5 * p + 0.3) > 0.05
    assert ece(y, p**2) > 0.05
    with pytest.raises(ValueError, match="strategy"):
        ece(y, p, strategy="kmeans")


def test_metrics_row() -> None:
    row = metrics_row("gbdt", "churn", "holdout", [0, 1], [0.2, 0.7])
    assert (row["model"], row["task"], row["split"], row["n"]) == ("gbdt", "churn", "holdout", 2)


# --- ranking, correlation, drift -------------------------------------------------------------------


def test_recall_and_ndcg_at_k() -> None:
    topk = np.array([[5, 3, 9], [1, 2, 3], [7, 8, 9]])
    target = np.array([3, 4, 9])  # ranks 2, absent, 3
    assert recall_at_k(topk, target) == pytest.approx(2 / 3)
    assert recall_at_k(topk, target, k=2) == pytest.approx(1 / 3)
    assert recall_at_k(topk, target, k=1) == 0.0
    assert ndcg_at_k(topk, target) == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 3)
    assert ndcg_at_k(np.array([[4, 1]]), np.array([4])) == 1.0
    assert recall_at_k(topk, np.array([3, 0, 9]), ignore_target=0) == 1.0
    assert math.isnan(recall_at_k(np.zeros((0, 3)), np.zeros(0)))
    with pytest.raises(ValueError, match=r"\[n, k\]"):
        recall_at_k(np.array([1, 2]), np.array([1, 2]))


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, np.nan, 4], [1, 2, 9, 4]) == pytest.approx(1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_psi() -> None:
    # two bins split at 2.5: expected shares (0.5, 0.5), actual (0.75, 0.25) -> 0.25 * ln 3
    assert psi([1, 2, 3, 4], [1, 1, 1, 4], bins=2) == pytest.approx(0.25 * math.log(3))
    rng = np.random.default_rng(1)
    base = rng.beta(2, 5, 20_000)
    assert psi(base, rng.beta(2, 5, 20_000)) < 0.01
    assert psi(base, rng.beta(5, 2, 20_000)) > 0.25
    assert psi(np.full(100, 0.3), np.full(50, 0.3)) == pytest.approx(0.0)
    assert math.isnan(psi([], [0.1]))


# --- calibration ----------------------------------------------------------------------------------


def _miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.beta(1, 6, n)  # low base rate, like propensity
    y = (rng.uniform(size=n) < truth).astype(float)
    return y, np.clip(truth * 2.5 + 0.05, 0, 0.999)  # over-confident scores


@pytest.mark.parametrize("method", ["auto", "isotonic", "platt"])
def test_calibrator_improves_log_loss_and_round_trips(method: str) -> None:
    y_valid, p_valid = _miscalibrated(8000, seed=2)
    y_test, p_test = _miscalibrated(8000, seed=3)
    cal = Calibrator.fit(y_valid, p_valid, method=method)
    assert cal.method in ("isotonic", "platt")
    calibrated = cal.apply(p_test)
    assert log_loss(y_test, calibrated) < log_loss(y_test, p_test) - 0.02
    assert ece(y_test, calibrated) < ece(y_test, p_test) / 2
    if method != "platt":  # a sigmoid of logit(p) cannot undo a linear distortion exactly
        assert ece(y_test, calibrated) < 0.02
    again = Calibrator.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_allclose(again.apply(p_test), calibrated)


def test_calibrator_degenerate_validation_is_identity() -> None:
    cal = Calibrator.fit([0, 0, 0], [0.1, 0.2, 0.3])
    assert cal.method == "identity"
    np.testing.assert_allclose(cal.apply([0.1, 0.5]), [0.1, 0.5])
    assert Calibrator.fit([0, 1] * 5, np.linspace(0.1, 0.9, 10)).method == "platt"  # too few for 3 folds
    with pytest.raises(ValueError, match="unknown calibration"):
        Calibrator.fit([0, 1], [0.1, 0.9], method="beta")
