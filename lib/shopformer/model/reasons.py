"""Reasons per user: the top drivers of each score, in words a CRM analyst reads (docs/scoring.md "Reasons").

Attribution is captum's ``FeatureAblation`` over the model's aggregate features, grouped into drivers
("no purchase in 41 days", "bought 60 % of units on discount"). A driver's effect is the user's calibrated
score minus the score with that driver's features set to the average training user's (the scaler's mean:
z = 0, not missing), everything else, the behaviour sequence included, unchanged. An occlusion is exact for
what it states: removing the top driver moves the score by exactly its effect, more than any other driver.
The sequence itself is not a driver (setting it to "average" has no meaning); its part of a score is what
no aggregate driver explains. The encoder runs once per batch; each driver re-runs only the heads
(``ShopformerModel.heads``): a few small MLP passes, not transformer passes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from shopformer.model.evaluation import Calibrator
from shopformer.schemas import TASKS

Values = Mapping[str, Any]


@dataclass(frozen=True)
class Driver:
    """Aggregate features that move together, and how to say the user's values in words."""

    name: str
    features: tuple[str, ...]
    text: Callable[[Values], str]


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _count(values: Values, name: str) -> str:
    v = _num(values.get(name))
    return "no" if not v else f"{v:.0f}"


def _windows(names: Sequence[str]) -> list[int]:
    return sorted(int(m.group(1)) for n in names if (m := re.fullmatch(r"n_events_(\d+)d", n)))


def _recency(v: Values) -> str:
    days = _num(v.get("recency_days"))
    return "no activity on record" if days is None else f"last active {days:.0f} days ago"


def _purchase_recency(v: Values) -> str:
    days = _num(v.get("purchase_recency_days"))
    return "no purchase on record" if days is None else f"no purchase in {days:.0f} days"


def _tenure(v: Values) -> str:
    days = _num(v.get("tenure_days"))
    return "tenure unknown" if days is None else f"customer for {days:.0f} days"


def _share(v: Values, name: str, words: str, none: str) -> str:
    x = _num(v.get(name))
    return none if x is None else f"{words} {100 * x:.0f} %"


def _per(stems: Sequence[str], w: Sequence[int]) -> tuple[str, ...]:
    return tuple(f"{s}_{d}d" for s in stems for d in w)


def _drivers_named(w: list[int]) -> list[Driver]:
    """The drivers for windows ``w`` (shortest first); features a model lacks are dropped later."""
    short, long = (w[0], w[-1]) if w else (0, 0)

    def sessions(v: Values) -> str:
        return f"{_count(v, f'n_sessions_{short}d')} sessions in the last {short} days"

    def carts(v: Values) -> str:
        return f"{_count(v, f'n_carts_{short}d')} cart adds in the last {short} days"

    def purchases(v: Values) -> str:
        return f"{_count(v, f'n_purchases_{long}d')} purchases in the last {long} days"

    def spend(v: Values) -> str:
        return f"spent {_num(v.get(f'revenue_{long}d')) or 0:.2f} in the last {long} days"

    def history(v: Values) -> str:
        return f"{_count(v, 'n_sessions_all')} sessions in {_count(v, 'n_categories_all')} categories"

    def funnel(v: Values) -> str:
        return _share(v, "cart_abandonment", "abandons carts:", "no cart yet")

    def discounts(v: Values) -> str:
        return _share(v, "discount_purchase_share", "units bought on discount:", "no priced purchase")

    return [
        Driver("recency", ("recency_days",), _recency),
        Driver("purchase_recency", ("purchase_recency_days",), _purchase_recency),
        Driver("tenure", ("tenure_days",), _tenure),
        Driver("recent_activity", _per(["n_events", "n_views", "n_sessions", "active_days"], w), sessions),
        Driver("carts", _per(["n_carts"], w), carts),
        Driver("purchases", (*_per(["n_purchases"], w), "n_purchases_all"), purchases),
        Driver("spend", (*_per(["revenue"], w), "revenue_all"), spend),
        Driver("history", ("n_events_all", "n_sessions_all", "n_categories_all"), history),
        Driver("funnel", ("view_to_cart_rate", "cart_to_purchase_rate", "cart_abandonment"), funnel),
        Driver(
            "discounts", ("discount_purchase_share", "avg_rel_price_paid", "avg_rel_price_viewed"), discounts
        ),
    ]


def drivers(names: Sequence[str]) -> list[Driver]:
    """The drivers of a model with aggregate features ``names``: each feature in exactly one driver (a
    feature no driver names becomes its own, said as ``name = value``)."""
    out: list[Driver] = []
    for d in _drivers_named(_windows(names)):
        kept = tuple(f for f in d.features if f in names)
        if kept:
            out.append(Driver(d.name, kept, d.text))
    covered = {f for d in out for f in d.features}
    for f in names:
        if f not in covered:
            out.append(Driver(f, (f,), lambda v, f=f: f"{f} = {_num(v.get(f))}"))
    return out


def driver_effects(
    model: Any,
    summaries: Mapping[str, Any],
    aggregates: Any,
    groups: Sequence[Driver],
    calibrators: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Per task, each row's effect of each driver on the calibrated probability, [B, G], from the
    encoder's summary [B, D] per task (``predict``'s, so the transformer is not run again; a routed task's
    from its own model, ``ShopformerModel.for_task``) and the raw aggregates [B, F] of the rows."""
    import torch
    from captum.attr import FeatureAblation

    names = list(model.config.aggregate_names)
    with torch.no_grad():
        scaled = model.scaler(aggregates)  # [B, 2F]
        mask = torch.zeros(1, scaled.shape[1], dtype=torch.long)  # [1, 2F]: z and missing flag alike
        for g, d in enumerate(groups):
            for f in d.features:
                mask[0, names.index(f)] = mask[0, len(names) + names.index(f)] = g
        out = {}
        for task in TASKS:
            spec = (calibrators or {}).get(task)
            cal = None if spec is None else Calibrator.from_dict(dict(spec))

            def score(x: torch.Tensor, task: str = task, cal: Calibrator | None = cal) -> torch.Tensor:
                heads = model.for_task(task).heads
                p = torch.sigmoid(heads(summaries[task], x)[f"{task}_logit"]).double()  # [B]
                return p if cal is None else torch.from_numpy(np.asarray(cal.apply(p.numpy()), np.float64))

            attr = FeatureAblation(score).attribute(scaled, baselines=0.0, feature_mask=mask)  # [B, 2F]
            first = [names.index(d.features[0]) for d in groups]
            out[task] = attr[:, first].double().numpy()  # [B, G]
    return out


def top_reasons(
    pdf: pd.DataFrame, effects: np.ndarray, groups: Sequence[Driver], k: int
) -> list[list[dict[str, Any]]]:
    """Per row, the ``k`` drivers with the largest absolute effect (ties: driver order), in words."""
    order = np.argsort(-np.abs(effects), axis=1, kind="stable")[:, :k]  # [B, k]
    records = pdf.to_dict("records")
    return [
        [
            {"driver": groups[g].name, "reason": groups[g].text(row), "effect": float(effects[i, g])}
            for g in order[i]
            if effects[i, g] != 0.0
        ]
        for i, row in enumerate(records)
    ]
