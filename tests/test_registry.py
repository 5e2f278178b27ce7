"""The champion gate fails closed, on a real MLflow registry (SQLite): "no champion" only when the model
or the alias truly does not exist; a registry error or a champion that cannot be scored stops the run
before anything is registered or promoted; ties keep the champion."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.tracking import MlflowClient

from shopformer import registry
from shopformer.config import load_config
from shopformer.model import gate
from tests.factories import tiny_model_dir

NAME = "shopformer"
METRICS = ["propensity_roc_auc", "churn_roc_auc"]


@pytest.fixture
def champion_root(tmp_path: Path) -> Path:
    """A registry whose version 1 (a tiny real checkpoint) is champion."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    client.create_registered_model(NAME)
    client.create_model_version(NAME, source=str(tiny_model_dir(tmp_path / "m1")))
    registry.promote(NAME, "1")
    return tmp_path


def _lookup_fails_once(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The registry's model lookup fails once, as a locked database or a network blip would."""
    real, calls = MlflowClient.get_registered_model, []

    def flaky(self: MlflowClient, name: str) -> Any:
        calls.append(name)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.OperationalError) database is locked", INTERNAL_ERROR)
        return real(self, name)

    monkeypatch.setattr(MlflowClient, "get_registered_model", flaky)
    return calls


def _m(propensity: float, churn: float | None = None) -> dict[str, float]:
    out = {"propensity_roc_auc": propensity}
    return out if churn is None else {**out, "churn_roc_auc": churn}


@pytest.mark.parametrize(
    ("new", "old", "delta", "promoted"),
    [
        (_m(0.8, 0.8), None, 0.0, True),  # no champion yet
        (_m(0.8, 0.8), _m(0.8, 0.8), 0.0, False),  # a tie keeps the champion
        (_m(0.81, 0.81), _m(0.8, 0.8), 0.0, True),
        (_m(0.81, 0.8), _m(0.8, 0.8), 0.0, False),  # better on one metric only
        (_m(0.825, 0.83), _m(0.8, 0.8), 0.02, True),
        (_m(0.815, 0.83), _m(0.8, 0.8), 0.02, False),  # better, but by less than the margin
        (_m(0.9, 0.9), _m(0.8), 0.0, False),  # the champion lacks a metric: not comparable
    ],
)
def test_promotion_needs_a_strict_improvement_on_every_gate_metric(
    new: dict[str, float], old: dict[str, float] | None, delta: float, promoted: bool
) -> None:
    assert registry.gate(new, old, metrics=METRICS, min_delta=delta)[0] is promoted


def _ece(propensity: float, churn: float) -> dict[str, float]:
    return {**_m(0.9, 0.9), "propensity_ece": propensity, "churn_ece": churn}


@pytest.mark.parametrize(
    ("new", "promoted", "named"),
    [
        (_ece(0.03, 0.02), True, None),  # the same calibration
        (_ece(0.035, 0.02), True, None),  # worse, within the tolerance
        (_ece(0.05, 0.02), False, "propensity_ece"),  # better ranking, worse calibration: kept
        (_ece(0.01, 0.029), True, None),  # better on one, within the tolerance on the other
        (_ece(0.03, 0.05), False, "churn_ece"),
        (_ece(0.03, float("nan")), True, None),  # undefined (one class): not compared
    ],
)
def test_a_better_ranking_with_a_worse_calibration_keeps_the_champion(
    new: dict[str, float], promoted: bool, named: str | None
) -> None:
    old = {**_m(0.8, 0.8), "propensity_ece": 0.03, "churn_ece": 0.02}
    ok, why = registry.gate(new, old, metrics=METRICS, min_delta=0.0, max_ece_increase=0.01)
    assert ok is promoted
    assert (named in why and "worse calibrated" in why) if named else why.startswith("promoted")


def test_no_champion_only_when_the_model_or_alias_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    assert registry.champion_checkpoint(NAME, str(tmp_path / "a")) is None  # no model
    MlflowClient().create_registered_model(NAME)
    assert registry.champion_checkpoint(NAME, str(tmp_path / "b")) is None  # no alias
    calls = _lookup_fails_once(monkeypatch)
    with pytest.raises(registry.RegistryError, match="database is locked"):
        registry.champion_checkpoint(NAME, str(tmp_path / "c"))
    assert calls == [NAME]


def test_a_registry_error_in_the_gate_registers_and_promotes_nothing(
    champion_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config("local", [f"paths.root={champion_root}"])
    _lookup_fails_once(monkeypatch)
    registered = []
    monkeypatch.setattr(gate.pyfunc, "log_model", lambda *a: registered.append(a) or "2")
    new = {"propensity_roc_auc": 1.0, "churn_roc_auc": 1.0}  # would beat any champion
    with pytest.raises(registry.RegistryError, match="database is locked"):
        gate.gate_and_register(
            None,  # type: ignore[arg-type]
            cfg,
            SimpleNamespace(),  # type: ignore[arg-type]
            "unused.pt",
            new,
            str(champion_root / "t"),
            vocab_fp="1:abc",
        )
    assert registered == [] and registry.champion_version(NAME) == "1"


def test_a_champion_that_cannot_be_scored_fails_the_gate_closed(
    champion_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args: Any, **kw: Any) -> Any:
        raise IndexError("index out of range in self")  # the champion on ids of a grown vocabulary

    monkeypatch.setattr(gate, "evaluate_model", crash)
    cfg = load_config("local", [f"paths.root={champion_root}", f"train.registered_model={NAME}"])
    d = SimpleNamespace(names=[], vocab={"version": "v2024-01-01"})  # the champion's: no re-encoding
    with pytest.raises(registry.GateError, match=r"champion v1 could not be scored.*IndexError"):
        gate.champion_metrics(None, cfg, d, str(champion_root / "t"))  # type: ignore[arg-type]
    assert registry.champion_version(NAME) == "1"


def test_a_promoted_version_carries_its_vocabulary_tags_when_it_becomes_champion(
    champion_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring refuses a champion without its vocabulary's name and content hash: both are tagged before
    the alias moves, so no reader ever sees an untagged champion (the tags were once set after it)."""
    cfg = load_config("local", [f"paths.root={champion_root}", f"train.registered_model={NAME}"])
    client = MlflowClient()
    monkeypatch.setattr(gate, "champion_metrics", lambda *a: (None, None))  # no champion to beat
    monkeypatch.setattr(
        gate.pyfunc,
        "log_model",
        lambda *a: str(
            client.create_model_version(NAME, source=str(tiny_model_dir(champion_root / "m2"))).version
        ),
    )
    seen: list[dict[str, str]] = []
    real_promote = registry.promote

    def promote(name: str, version: str) -> str | None:
        seen.append(dict(client.get_model_version(name, version).tags))
        return real_promote(name, version)

    monkeypatch.setattr(registry, "promote", promote)
    d = SimpleNamespace(vocab={"version": "v2024-01-08"})
    new = {"propensity_roc_auc": 0.9, "churn_roc_auc": 0.9}
    # The gate runs inside the training run; an explicit one here, in this test's own store (an implicit
    # run would land in whichever experiment an earlier test in this process made active).
    with mlflow.start_run(experiment_id=client.create_experiment("gate")):
        version, ok, _ = gate.gate_and_register(
            None,  # type: ignore[arg-type]
            cfg,
            d,  # type: ignore[arg-type]
            "unused.pt",
            new,
            str(champion_root / "t"),
            vocab_fp="7:0123abcd",
        )
    assert (version, ok, registry.champion_version(NAME)) == ("2", True, "2")
    assert seen == [{registry.VOCAB_TAG: "v2024-01-08", registry.FINGERPRINT_TAG: "7:0123abcd"}]
