"""Training's shared scratch folder (``train.petastorm_cache``): a killed run's leftovers (Petastorm's
Parquet copies of training rows, checkpoints) are removed by the next run, and two runs never share it."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopformer.config import load_config
from shopformer.errors import ShopformerError
from shopformer.model.job import LOCK, scratch


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
