"""The ``synthetic:`` config section as validated shop parameters (docs/synthetic_shop.md)."""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, fields

from shopformer.config import Config
from shopformer.errors import ConfigError
from shopformer.settings import SyntheticSettings
from shopformer.synthetic.catalog import CatalogLayout

DAY_S = 86_400


@dataclass(frozen=True)
class ShopParams:
    """The ``synthetic:`` config section, validated (each error names its key)."""

    start_date: dt.date
    days: int
    users: int
    items: int
    seed: int
    format: str
    dirty_fraction: float
    late_fraction: float
    new_user_share: float
    missions_per_day: float
    mean_lifetime_days: float
    activity_decay_days: float
    purchase_rate: float
    elasticity_median: float
    promo_share: float
    zipf_exponent: float
    mission_intent: float
    mission_spacing_scale: float
    files_per_day: int

    @classmethod
    def from_config(cls, cfg: Config, run_date: dt.date) -> ShopParams:
        """``start_date: null`` means the period ends the day before ``run_date``."""
        s = cfg.settings.synthetic
        start = s.start_date or run_date - dt.timedelta(days=s.days)
        same = {f.name: getattr(s, f.name) for f in fields(cls) if f.name != "start_date"}
        return cls(**same, start_date=start)

    def validate(self) -> None:
        """The section's range checks (``settings.SyntheticSettings``), for parameters built in code."""
        bad = [k for k, ok in SyntheticSettings.checks(self).items() if not ok]  # type: ignore[arg-type]
        if bad:
            raise ConfigError(f"config key 'synthetic.{bad[0]}' is out of range: {getattr(self, bad[0])!r}")

    @property
    def end_s(self) -> int:
        """End of the period in seconds since its start (exclusive)."""
        return self.days * DAY_S

    @property
    def start_epoch_s(self) -> int:
        return calendar.timegm(self.start_date.timetuple())

    def layout(self) -> CatalogLayout:
        return CatalogLayout.build(self.items, self.zipf_exponent)
