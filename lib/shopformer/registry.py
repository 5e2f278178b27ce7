"""MLflow registry: experiments, versions, the champion alias and its rollback, vocabulary tags, the gate.

The registered pyfunc itself (checkpoint + calibrators + vocabulary inside) is ``shopformer.model.pyfunc``;
this module only moves names and aliases, so every stage can ask "which model is champion" without
importing torch. Scoring loads ``models:/<name>@champion`` once per executor. The gate re-scores the
current champion on *this* run's holdout, so the comparison is fair
even when the data moved on since the champion was trained.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from shopformer import errors, tables
from shopformer.errors import ShopformerError

log = logging.getLogger(__name__)
CHAMPION = "champion"
PREVIOUS = "previous_champion"  # set by promote: where a rollback goes


def use_experiment(name: str, artifact_location: str | None) -> None:
    """Make ``name`` the active experiment, creating it with ``artifact_location`` (MLflow's default is
    ``./mlruns`` of the current directory, which scatters artifacts by wherever a job happened to run)."""
    if artifact_location is not None and mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=artifact_location)
    mlflow.set_experiment(name)


def model_checkpoint(name: str, version_or_alias: str, dst: str) -> tuple[str, str]:
    """(version, local checkpoint path) of ``name`` at a version number or an alias such as ``champion``;
    raises MlflowException when the registry has no such model, version or alias."""
    client = MlflowClient()
    wanted = str(version_or_alias)
    if wanted.isdigit():
        mv = client.get_model_version(name, wanted)
    else:
        mv = client.get_model_version_by_alias(name, wanted)
    path = mlflow.artifacts.download_artifacts(f"models:/{name}/{mv.version}", dst_path=dst)
    return str(mv.version), f"{path}/artifacts/{_checkpoint_file(path)}"


def champion_checkpoint(name: str, dst: str) -> tuple[str, str] | None:
    """(version, local checkpoint path) of the current champion; None only when the registry has no such
    model or no champion alias. Any other registry error is a RegistryError: a lookup that failed is not
    "no champion" (the gate fails closed instead of promoting the new model unchecked)."""
    version = alias_target(name, CHAMPION)
    if version is None:
        return None
    try:
        return model_checkpoint(name, version, dst)
    except Exception as exc:  # MLflow, I/O: the champion exists but cannot be fetched
        raise RegistryError(f"model {name!r} champion v{version}: cannot fetch it: {exc}") from exc


def alias_target(name: str, alias: str = CHAMPION) -> str | None:
    """The version number ``alias`` points at; None only when the model or the alias does not exist
    (MLflow's RESOURCE_DOES_NOT_EXIST, or a model without that alias). Other errors raise RegistryError."""
    try:
        model = MlflowClient().get_registered_model(name)
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise RegistryError(f"registry lookup of model {name!r} failed: {exc.message}") from exc
    version = (model.aliases or {}).get(alias)
    return None if version is None else str(version)


def _checkpoint_file(model_dir: str) -> str:
    from pathlib import Path

    files = sorted(p.name for p in (Path(model_dir) / "artifacts").iterdir())
    return files[0]


def gate(
    new: Mapping[str, float],
    old: Mapping[str, float] | None,
    *,
    metrics: Sequence[str],
    min_delta: float,
    max_ece_increase: float = float("inf"),
) -> tuple[bool, str]:
    """Promote only when every gate metric of ``new`` beats ``old`` by more than ``min_delta`` (a tie
    keeps the champion; a missing metric counts as not better) and no gated task's calibration got worse:
    ``{task}_ece`` may not exceed the champion's by more than ``max_ece_increase`` (skipped where either
    side's ECE is undefined: one class on the holdout)."""
    if old is None:
        return True, "no champion yet: the new model becomes champion"
    nan = float("nan")
    worse = [m for m in metrics if not new.get(m, float("-inf")) > old.get(m, float("inf")) + min_delta]
    if worse:
        detail = ", ".join(f"{m}: new {new.get(m, nan):.4f} vs champion {old.get(m, nan):.4f}" for m in worse)
        return False, f"kept the champion: the new model does not beat it on {detail}"
    eces = sorted({f"{m.split('_', 1)[0]}_ece" for m in metrics})
    drift = [e for e in eces if new.get(e, nan) > old.get(e, nan) + max_ece_increase]  # NaN: no comparison
    if drift:
        detail = ", ".join(f"{e}: new {new[e]:.4f} vs champion {old[e]:.4f}" for e in drift)
        return False, f"kept the champion: the new model is worse calibrated on {detail}"
    return True, "promoted: " + ", ".join(f"{m} {old.get(m):.4f} -> {new.get(m):.4f}" for m in metrics)


def version_at(name: str, alias: str = CHAMPION) -> ModelVersion | None:
    """The model version an alias points at, or None when the model or the alias does not exist (other
    registry errors raise RegistryError)."""
    version = alias_target(name, alias)
    if version is None:
        return None
    try:
        return MlflowClient().get_model_version(name, version)
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"registry lookup of model {name!r} v{version} failed: {exc.message}") from exc


def champion_version(name: str, alias: str = CHAMPION) -> str | None:
    """The version number an alias points at (None: no such model or alias)."""
    mv = version_at(name, alias)
    return None if mv is None else str(mv.version)


class RegistryError(ShopformerError):
    """No such model, version or alias in the registry, or a registry call failed (exit 1, naming it)."""


class GateError(ShopformerError):
    """The gate could not score the champion on the run's holdout: it fails closed (nothing promoted)."""


def rollback_target(name: str) -> str:
    """The version ``--rollback`` promotes: the one the last promotion displaced."""
    previous = champion_version(name, PREVIOUS)
    if previous is None:
        raise RegistryError(
            f"model {name!r} has no {PREVIOUS!r} alias (no promotion since aliases were recorded, or no "
            "model): choose the version with --version N (mlflow ui lists them)"
        )
    return previous


def model_version(name: str, version: str) -> ModelVersion:
    """A registered version; RegistryError naming it when the model or version is absent."""
    try:
        return MlflowClient().get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"model {name!r} version {version!r}: {exc.message}") from exc


def promote_checked(name: str, version: str) -> str | None:
    """``promote`` with a missing model or version turned into a RegistryError naming it."""
    try:
        return promote(name, version)
    except mlflow.exceptions.MlflowException as exc:
        raise RegistryError(f"cannot promote model {name!r} version {version!r}: {exc.message}") from exc


def promote(name: str, version: str) -> str | None:
    """Point ``champion`` at ``version``; the champion it replaces keeps the ``previous_champion`` alias,
    so a rollback needs no memory of its own (MLflow keeps no alias history). Returns that version."""
    client = MlflowClient()
    version = str(client.get_model_version(name, str(version)).version)  # raises when absent
    old = champion_version(name)
    if old is not None and old != version:
        tables.before_registry_write("set_alias", f"model {name} alias {PREVIOUS}")
        client.set_registered_model_alias(name, PREVIOUS, old)
    tables.before_registry_write("set_alias", f"model {name} alias {CHAMPION}")
    client.set_registered_model_alias(name, CHAMPION, version)
    errors.note_commit()
    log.info("model %s: champion v%s (was v%s)", name, version, old)
    return old


VOCAB_TAG = "vocab_version"  # model version tag: the gold.vocabularies version its ids mean
FINGERPRINT_TAG = "vocab_fingerprint"  # model version tag: that version's rows:hash when it trained


def tag_vocabulary(name: str, version: str, vocab_version: str) -> None:
    """Record which vocabulary a version was trained with, so snapshots can follow the champion's."""
    tables.before_registry_write("tag_version", f"model {name} v{version} {VOCAB_TAG}")
    MlflowClient().set_model_version_tag(name, str(version), VOCAB_TAG, vocab_version)


def tag_fingerprint(name: str, version: str, fingerprint: str) -> None:
    """Record the content hash of the vocabulary a version was trained with (``vocab.fingerprint_text``),
    so scoring can refuse the version's vocabulary once its rows changed under the same name."""
    tables.before_registry_write("tag_version", f"model {name} v{version} {FINGERPRINT_TAG}")
    MlflowClient().set_model_version_tag(name, str(version), FINGERPRINT_TAG, fingerprint)


def recorded_fingerprint(mv: ModelVersion) -> str | None:
    """The vocabulary fingerprint a version recorded (None: registered before fingerprints were)."""
    return (mv.tags or {}).get(FINGERPRINT_TAG) or None


def champion_vocabulary(name: str, alias: str = CHAMPION) -> str:
    """The vocabulary version of the model at ``alias``; RegistryError when there is none to follow."""
    return champion_vocabulary_version(name, alias)[0]


def champion_vocabulary_version(name: str, alias: str = CHAMPION) -> tuple[str, ModelVersion]:
    """(vocabulary version, model version) of the model at ``alias``, from one registry read (the alias
    may move between two); RegistryError when there is no vocabulary to follow."""
    mv = version_at(name, alias)
    if mv is None:
        raise RegistryError(f"model {name!r} has no {alias!r} alias to take the vocabulary from")
    tagged = (mv.tags or {}).get(VOCAB_TAG)
    if not tagged:
        raise RegistryError(
            f"model {name!r} v{mv.version} ({alias}) has no {VOCAB_TAG!r} tag (trained before tagging): "
            "set snapshots.vocab_version to its vocabulary explicitly"
        )
    return str(tagged), mv


def __getattr__(name: str) -> Any:
    """Models registered before the stage layout pickled their pyfunc as
    ``shopformer.registry.ShopformerPyfunc``; unpickling them looks the name up here, so it resolves
    (lazily: the registry does not import the model layer) to the class in ``shopformer.model.pyfunc``."""
    if name == "ShopformerPyfunc":
        from shopformer.model.pyfunc import ShopformerPyfunc

        return ShopformerPyfunc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
