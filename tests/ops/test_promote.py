"""Model rollback on a real MLflow registry (SQLite): the promote job moves ``champion`` and remembers the
displaced version as ``previous_champion``; bad versions change nothing. Versions are registered directly
(no training): the job only moves aliases."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from shopformer import errors, registry, tables
from shopformer.config import load_config
from shopformer.errors import ConfigError
from shopformer.features.job import _vocabulary
from shopformer.features.vocab import VocabularyChangedError, fingerprint_text
from shopformer.ops.jobs import job_main
from shopformer.schemas import GOLD_VOCABULARIES
from tests.factories import tiny_model_dir

REPO = Path(__file__).resolve().parents[2]
NAME = "shopformer"


@pytest.fixture
def registry_root(tmp_path: Path) -> Path:
    """A registry with versions 1..3 of the model (tiny real checkpoints) and no alias or tag."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    client.create_registered_model(NAME)
    for n in range(3):
        client.create_model_version(NAME, source=str(tiny_model_dir(tmp_path / f"m{n}", seed=n)))
    return tmp_path


def tag_all(versions: str = "123") -> None:
    for v in versions:
        registry.tag_vocabulary(NAME, v, f"v2024-0{v}-01")


def promote(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str
) -> dict:
    """Run jobs/promote_model.py in-process; its PROMOTE line, or {"exit": code} when it exits (the
    line is then ``PROMOTE {"error": ..., "exit_code": code}``)."""
    argv = ["--run-date", "2024-03-01", *args, "--set", f"paths.root={root}"]
    rc = job_main("promote_model")(argv)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("PROMOTE ")]
    assert len(lines) == 1
    line = json.loads(lines[0].removeprefix("PROMOTE "))
    if rc != 0:
        assert line["exit_code"] == rc
        return {"exit": rc}
    return line


def aliases(root: Path) -> dict[str, str]:
    mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
    return {a: str(v) for a, v in MlflowClient().get_registered_model(NAME).aliases.items()}


@pytest.mark.integration  # MLflow registry with logged models
def test_promote_then_roll_back_and_forward(
    registry_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(*args: str) -> dict:
        return promote(registry_root, capsys, monkeypatch, *args)

    tag_all()
    assert run("--rollback") == {"exit": 1}  # nothing to roll back to yet
    assert run("--version", "1") == {"model": NAME, "champion": "1", "was": None}
    assert aliases(registry_root) == {"champion": "1"}
    assert run("--version", "3") == {"model": NAME, "champion": "3", "was": "1"}
    assert run("--rollback") == {"model": NAME, "champion": "1", "was": "3"}
    assert aliases(registry_root) == {"champion": "1", "previous_champion": "3"}
    assert run("--rollback") == {"model": NAME, "champion": "3", "was": "1"}  # undo the rollback
    assert run("--version", "9") == {"exit": 1}  # no such version: nothing moves
    assert aliases(registry_root) == {"champion": "3", "previous_champion": "1"}
    assert registry.champion_version(NAME) == "3"
    assert run("--version", "3") == {"model": NAME, "champion": "3", "was": "3"}  # re-promote: no-op
    assert aliases(registry_root) == {"champion": "3", "previous_champion": "1"}


@pytest.mark.integration  # MLflow registry with logged models
def test_champion_vocabulary_follows_the_alias_and_names_what_is_missing(registry_root: Path) -> None:
    with pytest.raises(registry.RegistryError, match="no 'champion' alias"):
        registry.champion_vocabulary(NAME)
    registry.promote(NAME, "2")
    with pytest.raises(registry.RegistryError, match="v2 \\(champion\\) has no 'vocab_version' tag"):
        registry.champion_vocabulary(NAME)
    registry.tag_vocabulary(NAME, "1", "v2024-01-01")
    registry.tag_vocabulary(NAME, "2", "v2024-02-05")
    registry.tag_vocabulary(NAME, "3", "v2024-03-04")  # newer vocabulary, but not the champion
    assert registry.champion_vocabulary(NAME) == "v2024-02-05"
    registry.promote(NAME, "1")
    assert registry.champion_vocabulary(NAME) == "v2024-01-01"


@pytest.mark.integration  # MLflow registry with logged models
def test_snapshots_with_vocab_version_champion_use_the_champions_vocabulary(
    spark: SparkSession, registry_root: Path
) -> None:
    cfg = load_config("local", [f"paths.root={registry_root}", "snapshots.vocab_version=champion"])
    rows = [(v, "item", "a", 66, 3, 64) for v in ("v2024-01-01", "v2024-02-05", "v2024-03-04")]
    tables.replace_where(
        spark.createDataFrame(rows, GOLD_VOCABULARIES),
        cfg.table("gold_vocabularies"),
        predicate="true",
        schema=GOLD_VOCABULARIES,
        partition_by=["vocab_version"],
        run_id="test",
    )
    with pytest.raises(ConfigError, match=r"'snapshots\.vocab_version' is 'champion': model 'shopformer'"):
        _vocabulary(spark, cfg, spark.range(0), build=None, run_id="test")
    registry.tag_vocabulary(NAME, "2", "v2024-02-05")
    registry.promote(NAME, "2")
    got = _vocabulary(spark, cfg, spark.range(0), build=None, run_id="test")
    assert [r["vocab_version"] for r in got.collect()] == ["v2024-02-05"]  # not the newest, v2024-03-04


@pytest.mark.integration  # MLflow registry with logged models
def test_snapshots_refuse_a_champion_vocabulary_whose_rows_changed(
    spark: SparkSession, registry_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The champion's vocabulary is checked by content, not by name: once its rows change (here one id
    moves), build_snapshots with vocab_version=champion stops with exit 2; a champion registered before
    fingerprints were recorded (no tag) still works, with a warning."""
    cfg = load_config("local", [f"paths.root={registry_root}", "snapshots.vocab_version=champion"])
    path, v = cfg.table("gold_vocabularies"), "v2024-02-05"

    def write(rows: list[tuple]) -> None:
        df = spark.createDataFrame(rows, GOLD_VOCABULARIES)
        tables.replace_where(
            df, path, predicate="true", schema=GOLD_VOCABULARIES, partition_by=["vocab_version"], run_id="t"
        )

    def chosen() -> list[tuple]:
        got = _vocabulary(spark, cfg, spark.range(0), build=None, run_id="test")
        return sorted(tuple(r) for r in got.collect())

    trained = [(v, "item", "a", 66, 3, 64), (v, "item", "b", 67, 2, 64)]
    write(trained)
    registry.tag_vocabulary(NAME, "2", v)
    registry.promote(NAME, "2")
    with caplog.at_level(logging.WARNING, logger="shopformer.features.vocab"):
        assert chosen() == trained  # no fingerprint recorded (an older model): used, with a warning
    assert "records no vocabulary fingerprint: vocabulary v2024-02-05 is used unchecked" in caplog.text
    registry.tag_fingerprint(NAME, "2", fingerprint_text(spark.createDataFrame(trained, GOLD_VOCABULARIES)))
    assert chosen() == trained
    write([(v, "item", "a", 67, 3, 64), (v, "item", "b", 66, 2, 64)])  # same name, ids swapped
    with pytest.raises(VocabularyChangedError, match=r"v2024-02-05 no longer holds the rows model 'sh"):
        chosen()
    failure = errors.classify(VocabularyChangedError("x"), committed=0)
    assert (failure.exit_code, failure.kind) == (2, "VocabularyChangedError")


@pytest.mark.integration  # MLflow registry with logged models
def test_a_version_without_its_vocabulary_or_that_does_not_load_is_not_promoted(
    registry_root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def error(version: str) -> str:
        argv = ["--run-date", "2024-03-01", "--version", version, "--set", f"paths.root={registry_root}"]
        assert job_main("promote_model")(argv) == 1
        out = capsys.readouterr().out
        return json.loads(out[out.index("PROMOTE ") :].removeprefix("PROMOTE "))["error"]

    assert "v1 has no 'vocab_version' tag" in error("1")
    tag_all("12")
    (registry_root / "m1" / "artifacts" / "model.pt").write_bytes(b"not a checkpoint")  # version 2's file
    assert "v2 does not load" in error("2")
    assert aliases(registry_root) == {}  # nothing moved
    assert promote(registry_root, capsys, monkeypatch, "--version", "1")["champion"] == "1"
