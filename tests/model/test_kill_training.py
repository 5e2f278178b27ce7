"""A training run killed between its registry writes (issue 16 item 2): no half-registered version is or can
become champion, and the rerun registers and promotes a whole one.

Training commits to the MLflow registry, not to Delta: the new version (``pyfunc.log_model``), its two
vocabulary tags, then the ``champion`` alias when the gate passes. The kill switch counts those writes
(``tables.before_registry_write``). Each kill runs in this process (tests/test_kill.py ``killed_while``:
the switch's ``os._exit`` raises ``Killed``), so nothing of the run goes on after it; the registry
(SQLite) holds whatever was written before, exactly as after a real kill. The training itself (data,
TorchDistributor) is not re-run per point: the registry writes all happen in ``gate.gate_and_register`` at
its end, called here as ``model/job.py`` calls it with a tiny real checkpoint; a kill during the training
proper leaves only scratch files, which the next run removes (tests/model/test_scratch.py).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from shopformer import registry, tables
from shopformer.config import Config, load_config
from shopformer.model import gate
from shopformer.ops.promote import check_promotable
from tests.factories import tiny_model_dir
from tests.test_kill import killed_while

NAME = "shopformer"
VOCAB = "v2024-01-08"
FINGERPRINT = "7:0123abcd"
NEW = {"propensity_roc_auc": 0.9, "churn_roc_auc": 0.9}  # beats no champion: the gate promotes


def _points(version: int) -> list[tuple[str, str]]:
    """The registry writes of a run that registers ``version`` and promotes it (no champion before)."""
    return [
        ("register_model", f"model {NAME}"),
        ("tag_version", f"model {NAME} v{version} {registry.FINGERPRINT_TAG}"),
        ("tag_version", f"model {NAME} v{version} {registry.VOCAB_TAG}"),
        ("set_alias", f"model {NAME} alias {registry.CHAMPION}"),
    ]


def _store(root: Path) -> tuple[Config, str, str]:
    """A registry (SQLite) under ``root``, the run's config, an experiment and a tiny real checkpoint."""
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    cfg = load_config("local", [f"paths.root={root}", f"train.registered_model={NAME}"])
    experiment = MlflowClient().create_experiment("train", artifact_location=str(root / "mlruns"))
    return cfg, experiment, str(tiny_model_dir(root / "model") / "artifacts" / "model.pt")


def _gate(cfg: Config, experiment: str, ckpt: str, root: Path) -> tuple[str, bool, str]:
    """The end of a training run: register, tag, gate and promote, inside the run (as model/job.py)."""
    d = SimpleNamespace(names=[], vocab={"version": VOCAB})
    with mlflow.start_run(experiment_id=experiment):
        return gate.gate_and_register(
            None,  # type: ignore[arg-type]  # no champion: nothing is re-scored with Spark
            cfg,
            d,  # type: ignore[arg-type]
            ckpt,
            NEW,
            str(root / "tmp"),
            vocab_fp=FINGERPRINT,
        )


def _versions() -> dict[str, dict[str, str]]:
    """Every registered version of the model and its tags ({} before the model exists)."""
    found = MlflowClient().search_model_versions(f"name='{NAME}'")
    return {str(mv.version): dict(mv.tags or {}) for mv in found}


def test_the_kill_points_are_the_registry_writes_of_a_training_run(tmp_path: Path) -> None:
    cfg, experiment, ckpt = _store(tmp_path)
    seen: list[tuple[str, str]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tables, "_before_commit", lambda what, target: seen.append((what, target)))
        assert _gate(cfg, experiment, ckpt, tmp_path)[:2] == ("1", True)
    assert seen == _points(1)


def test_a_training_killed_at_each_registry_write_never_leaves_a_promotable_half_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed before write 1, then rerun and killed before write 2, ...: after each kill there is no
    champion, and every version a kill left half-registered is refused by promote_model; the rerun to the
    end registers a whole version and makes it champion."""
    cfg, experiment, ckpt = _store(tmp_path)
    for k in range(1, 5):
        _, err = killed_while(lambda: _gate(cfg, experiment, ckpt, tmp_path), k, capsys)
        what, target = _points(k - 1)[k - 1]  # run k registers version k - 1 (run 1 registers none)
        assert f"{tables.KILL_ENV}={k}: killed before {what} {target}" in err
        assert registry.champion_version(NAME) is None
        # What the runs so far left: run j (2 <= j <= k) registered version j - 1 with its first j - 2 tags.
        tags = [(registry.FINGERPRINT_TAG, FINGERPRINT), (registry.VOCAB_TAG, VOCAB)]
        assert _versions() == {str(j - 1): dict(tags[: j - 2]) for j in range(2, k + 1)}
    for half in ("1", "2"):  # no vocabulary tag: refused (v3 is whole; its alias move was killed)
        with pytest.raises(registry.RegistryError, match=f"v{half} has no 'vocab_version' tag"):
            check_promotable(NAME, half)
    assert _gate(cfg, experiment, ckpt, tmp_path)[:2] == ("4", True)  # the rerun to the end
    assert registry.champion_version(NAME) == "4"
    assert _versions()["4"] == {registry.FINGERPRINT_TAG: FINGERPRINT, registry.VOCAB_TAG: VOCAB}
