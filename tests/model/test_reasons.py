"""Reasons per user (issue 17 item 5): each aggregate feature belongs to exactly one driver, drivers are said
in words, and a reported effect is exactly what removing the driver does to the calibrated score, so the
top driver moves the score more than any other one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from shopformer.features.aggregates import feature_names
from shopformer.model.evaluation import Calibrator
from shopformer.model.network import ShopformerModel
from shopformer.model.reasons import driver_effects, drivers, top_reasons
from tests.model.test_network import random_batch, tiny

NAMES = tuple(feature_names([7, 30]))
CALIBRATORS = {"propensity": Calibrator("platt", {"a": 1.5, "b": -0.2}).to_dict()}


def test_every_feature_is_in_exactly_one_driver_and_drivers_speak_plainly() -> None:
    groups = drivers([*NAMES, "a_new_feature"])
    owned = [f for d in groups for f in d.features]
    assert sorted(owned) == sorted([*NAMES, "a_new_feature"])
    by = {d.name: d for d in groups}
    assert by["a_new_feature"].features == ("a_new_feature",)
    assert by["purchases"].features == ("n_purchases_7d", "n_purchases_30d", "n_purchases_all")
    said = {
        "purchase_recency": by["purchase_recency"].text({"purchase_recency_days": 41.0}),
        "never": by["purchase_recency"].text({"purchase_recency_days": float("nan")}),
        "recent_activity": by["recent_activity"].text({"n_sessions_7d": 3.0}),
        "discounts": by["discounts"].text({"discount_purchase_share": 0.6}),
        "purchases": by["purchases"].text({"n_purchases_30d": 0.0}),
        "new": by["a_new_feature"].text({"a_new_feature": 2.5}),
    }
    assert said == {
        "purchase_recency": "no purchase in 41 days",
        "never": "no purchase on record",
        "recent_activity": "3 sessions in the last 7 days",
        "discounts": "units bought on discount: 60 %",
        "purchases": "no purchases in the last 30 days",
        "new": "a_new_feature = 2.5",
    }


def _model() -> tuple[ShopformerModel, dict[str, torch.Tensor]]:
    torch.manual_seed(3)
    model = ShopformerModel(tiny(aggregate_names=NAMES))
    b = random_batch(model.config, b=6, n=8, seed=4)
    b["aggregates"][::2, NAMES.index("purchase_recency_days")] = torch.nan  # never purchased
    spread = np.random.default_rng(1).uniform(0.2, 2.0, b["aggregates"].shape)
    model.scaler.fit(b["aggregates"].numpy() * spread)
    with torch.no_grad():  # the wide path starts at zero: give the aggregates a real say
        model.wide.weight.normal_(0, 0.5)
    return model.eval(), b


def _without(model: ShopformerModel, b: dict, features: tuple[str, ...], task: str) -> np.ndarray:
    """The calibrated score with ``features`` at the training mean, computed without captum by the model
    that serves ``task`` (its route, when it has one)."""
    serving = model.for_task(task)
    with torch.no_grad():
        hidden, _ = serving.encode(b)
        scaled = serving.scaler(b["aggregates"]).clone()
        for f in features:
            i = NAMES.index(f)
            scaled[:, i] = scaled[:, len(NAMES) + i] = 0.0
        p = torch.sigmoid(serving.heads(hidden[:, -1], scaled)[f"{task}_logit"]).double().numpy()
    return Calibrator.from_dict(CALIBRATORS[task]).apply(p) if task in CALIBRATORS else p


def _routed(model: ShopformerModel, task: str) -> ShopformerModel:
    """``model`` with ``task`` served by other weights (per-task early stopping's route)."""
    other = ShopformerModel(model.config)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in (*other.wide.parameters(), *other.backbone.parameters()):
            p.add_(torch.randn_like(p) * 0.3)
    model.set_routes({task: other.state_dict()})
    return model.eval()


@pytest.mark.parametrize("routed", [False, True], ids=["one_model", "task_routed"])
@pytest.mark.parametrize("task", ["propensity", "churn"])
def test_removing_the_top_driver_moves_the_score_more_than_removing_a_random_one(
    task: str, routed: bool
) -> None:
    model, b = _model()
    model = _routed(model, task) if routed else model
    groups = drivers(NAMES)
    got = model.predict(b)  # the summaries reasons start from, per task
    summaries = {t: got[f"{t}_summary"] for t in ("propensity", "churn")}
    effects = driver_effects(model, summaries, b["aggregates"], groups, CALIBRATORS)[task]  # [B, G]
    full = _without(model, b, (), task)
    for g, d in enumerate(groups):  # faithful: the effect is the score minus the score without the driver
        np.testing.assert_allclose(effects[:, g], full - _without(model, b, d.features, task), atol=1e-6)
    pdf = pd.DataFrame(b["aggregates"].numpy(), columns=list(NAMES))
    reasons = top_reasons(pdf, effects, groups, k=3)
    rng = np.random.default_rng(0)
    for i, row in enumerate(reasons):
        assert [r["driver"] for r in row] == [groups[g].name for g in np.argsort(-np.abs(effects[i]))[:3]]
        top = next(d for d in groups if d.name == row[0]["driver"])
        other = groups[rng.choice([g for g, d in enumerate(groups) if d is not top])]
        moved_top = abs(full[i] - _without(model, b, top.features, task)[i])
        moved_other = abs(full[i] - _without(model, b, other.features, task)[i])
        assert moved_top > moved_other, (i, top.name, other.name)
        assert row[0]["reason"] == top.text(pdf.iloc[i].to_dict())
