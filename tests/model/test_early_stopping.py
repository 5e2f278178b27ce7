"""Per-task early stopping (training.py ``_Best``): each task is served by the weights of its own best
validation epoch, the model by the best total's; a task without validation labels is never routed."""

from __future__ import annotations

import math

import torch

from shopformer.model.network import ShopformerModel
from shopformer.model.training import _Best
from tests.model.test_network import random_batch, tiny


def _epoch_marked(model: ShopformerModel, epoch: int) -> ShopformerModel:
    """Stand-in for an epoch of training: the churn head's bias holds the epoch number."""
    with torch.no_grad():
        model.churn_head.bias.fill_(float(epoch))
    return model


def _run(valid: list[dict[str, float]]) -> tuple[ShopformerModel, _Best, dict[str, int]]:
    model, best = ShopformerModel(tiny()), _Best(("propensity", "churn"))
    for epoch, losses in enumerate(valid):
        best.offer({f"valid_{k}": v for k, v in losses.items()}, epoch, _epoch_marked(model, epoch))
    return model, best, best.restore(model)


def test_a_task_whose_validation_loss_rises_is_served_by_its_best_epoch() -> None:
    # the Complete Journey run's pattern: propensity best after epoch 1, churn and the total after 3
    model, best, served = _run(
        [
            {"total": 1.00, "propensity": 0.53, "churn": 0.33},
            {"total": 0.90, "propensity": 0.515, "churn": 0.306},
            {"total": 0.85, "propensity": 0.529, "churn": 0.292},
            {"total": 0.80, "propensity": 0.540, "churn": 0.233},
        ]
    )
    assert served == {"propensity": 1, "churn": 3} and best.epoch == 3
    assert float(model.churn_head.bias.detach()) == 3.0 and list(model.routes) == ["propensity"]
    assert float(model.for_task("propensity").churn_head.bias.detach()) == 1.0
    assert sorted(best.states) == [1, 3]  # epochs 0 and 2 are nobody's best: their weights were dropped
    b = random_batch(model.config)
    got, epoch1 = model.eval().predict(b), model.routes["propensity"].eval()(b)
    torch.testing.assert_close(got["propensity"], torch.sigmoid(epoch1["propensity_logit"]), rtol=0, atol=0)


def test_no_route_when_every_task_peaks_with_the_total_or_has_no_labels() -> None:
    model, best, served = _run(
        [
            {"total": 1.0, "propensity": 0.6, "churn": 0.0},  # churn: no labelled validation row
            {"total": 0.9, "propensity": 0.5, "churn": 0.0},
            {"total": 0.95, "propensity": 0.55, "churn": 0.0},
        ]
    )
    assert served == {"propensity": 1, "churn": 1} and list(model.routes) == []
    assert float(model.churn_head.bias.detach()) == 1.0 and best.waited == 1


def test_patience_counts_epochs_in_which_no_criterion_improved() -> None:
    best = _Best(("propensity", "churn"))
    model = ShopformerModel(tiny())
    waited = []
    for epoch, (total, prop) in enumerate([(1.0, 0.6), (1.1, 0.5), (1.2, 0.7), (1.3, 0.8)]):
        best.offer({"valid_total": total, "valid_propensity": prop, "valid_churn": math.inf}, epoch, model)
        waited.append(best.waited)
    assert waited == [0, 0, 1, 2]  # epoch 1 improved propensity only: still worth training on
