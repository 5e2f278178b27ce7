"""Long work reports where it stands: at most once per interval, always at the end, with a rate and ETA."""

from __future__ import annotations

import logging

import pytest

from shopformer.progress import EpochProgress, Progress


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_reports_once_per_interval_with_rate_and_time_left() -> None:
    clock = FakeClock()
    p = Progress("scoring dates", 4, every_s=60, clock=clock)
    clock.t = 30
    assert p.advance(rows=3000) is None  # within the first minute: quiet
    clock.t = 90
    assert p.advance(rows=6000) == "scoring dates: 2/4 in 1m30s, 100 rows/s, ~1m30s left"
    clock.t = 100
    assert p.advance(rows=1000) is None
    clock.t = 110
    assert p.advance(rows=1000) == "scoring dates: 4/4 in 1m50s, 100 rows/s (done)"  # the end always logs


def test_without_rows_it_reports_units_only() -> None:
    clock = FakeClock()
    p = Progress("epochs", 2, every_s=0, clock=clock)
    clock.t = 3600
    assert p.advance() == "epochs: 1/2 in 1h00m, ~1h00m left"


def test_before_any_work_the_time_left_is_unknown() -> None:
    assert Progress("dates", 3, clock=FakeClock()).report() == "dates: 0/3 in 0s, ~? left"


def test_training_epochs_log_steps_with_time_left_in_the_epoch_and_stage_then_each_epoch_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    p = EpochProgress("pretrain", 2, 4, rows_per_step=600, every_s=30, clock=clock)
    lines = []
    with caplog.at_level(logging.INFO, logger="shopformer.progress"):
        for t, k in ((10, 1), (20, 2), (30, 3), (40, 4)):
            clock.t = t
            lines.append(p.step(k))
        lines.append(p.epoch_done({"next_item": 5.12345, "total": 5.12345}))
        for t, k in ((50, 1), (75, 2), (80, 3), (80, 4)):
            clock.t = t
            lines.append(p.step(k))
        lines.append(p.epoch_done({"next_item": 4.5, "total": 4.5}))
    assert lines == [
        None,  # not 30 s yet
        None,
        "pretrain: epoch 1/2, step 3/4 in 30s, 60 rows/s, ~10s left in the epoch, ~50s left in the stage",
        None,  # an epoch's last step: its end line follows
        "pretrain: epoch 1/2 done in 40s, 60 rows/s, ~40s left in the stage: next_item 5.123, total 5.123",
        None,  # 10 s after the epoch's line
        "pretrain: epoch 2/2, step 2/4 in 1m15s, 48 rows/s, ~25s left in the epoch, ~25s left in the stage",
        None,
        None,
        "pretrain: epoch 2/2 done in 1m20s, 60 rows/s (done): next_item 4.5, total 4.5",
    ]
    assert [r.getMessage() for r in caplog.records] == [x for x in lines if x]


def test_early_stopping_says_so_instead_of_a_time_left() -> None:
    clock = FakeClock()
    p = EpochProgress("finetune", 5, 2, rows_per_step=50, clock=clock)
    clock.t = 20
    p.step(1)
    p.step(2)
    line = p.epoch_done({"total": 0.5, "valid_total": 0.61, "best_epoch": 0}, stopping=True)
    assert (
        line
        == "finetune: epoch 1/5 done in 20s, 5 rows/s: total 0.5, valid_total 0.61, best_epoch 0; stops early"
    )
