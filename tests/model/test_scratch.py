"""Training's shared scratch folder (``train.petastorm_cache``): a killed run's leftovers (Petastorm's
Parquet copies of training rows, checkpoints) are removed by the next run, and two runs never share it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from shopformer.config import load_config
from shopformer.errors import ShopformerError
from shopformer.model.job import LOCK, RUN_MARKER, scratch


def test_the_next_run_removes_a_killed_runs_leftovers_and_a_second_run_at_once_stops(tmp_path: Path) -> None:
    cfg = load_config("local", [f"paths.root={tmp_path}"])
    shared = tmp_path / "petastorm_cache"
    (shared / "0b6c3a6e-uuid" / "part-0.parquet").parent.mkdir(parents=True)
    (shared / "0b6c3a6e-uuid" / "part-0.parquet").write_bytes(b"rows of a killed run")
    (shared / "tmpk1ll3d").mkdir()
    (shared / "tmpk1ll3d" / "model.pt").write_bytes(b"half a checkpoint")
    (shared / "stray.pt").write_bytes(b"x")
    with scratch(cfg) as held:
        assert held == shared
        assert sorted(p.name for p in shared.iterdir()) == [LOCK]
        (shared / "mine").mkdir()  # what this run writes stays while it runs
        with pytest.raises(ShopformerError, match="another training run holds"), scratch(cfg):
            pass
        assert (shared / "mine").is_dir()
    with scratch(cfg):  # released: the next run gets it (and cleans up after the first)
        assert sorted(p.name for p in shared.iterdir()) == [LOCK]


def test_the_next_run_ends_the_mlflow_run_a_killed_run_named_and_leaves_others_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config("local", [f"paths.root={tmp_path}"])
    client = MlflowClient(str(cfg.get("paths.mlflow_tracking_uri")))
    experiment = client.create_experiment("scratch", artifact_location=str(tmp_path / "mlruns"))
    killed, finished = (client.create_run(experiment).info.run_id for _ in range(2))
    client.set_terminated(finished, status="FINISHED")
    shared = tmp_path / "petastorm_cache"
    shared.mkdir()
    for run_id, want in ((killed, "KILLED"), (finished, "FINISHED")):
        (shared / RUN_MARKER).write_text(run_id)
        with scratch(cfg):
            assert not (shared / RUN_MARKER).exists()
        assert client.get_run(run_id).info.status == want
    assert "shopformer.ended_by" in client.get_run(killed).data.tags
    assert "shopformer.ended_by" not in client.get_run(finished).data.tags
    (shared / RUN_MARKER).write_text("0" * 32)  # a run this store does not know: a warning, not a failure
    with caplog.at_level(logging.WARNING), scratch(cfg):
        pass
    assert f"could not mark MLflow run {'0' * 32}" in caplog.text
