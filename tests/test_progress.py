"""Long work reports where it stands: at most once per interval, always at the end, with a rate and ETA."""

from __future__ import annotations

from shopformer.progress import Progress


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
