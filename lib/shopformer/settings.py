"""Typed settings: each ``conf/base.yaml`` section as a frozen dataclass, built and checked in one place.

``load_config`` builds every section through ``typed_section`` right after merging the layers, so a
missing, unknown, mistyped or out-of-range value fails before Spark starts, naming its key (jobs exit 2).
Stages read ``cfg.settings.<section>.<key>`` instead of casting raw YAML values themselves.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shopformer.errors import ConfigError
from shopformer.schemas import DRIFT_SCORES, EVENT_TYPES, SCORE_LABELS


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` (int, float, str, bool, date, X | None, tuple[X, ...], dict[str, X])."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if any(a is not type(None) and isinstance(value, a) and not _bool_as_number(value, a) for a in args):
            return value
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, a, key)
            except ConfigError:
                continue
        raise _wrong(key, value, tp)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _wrong(key, value, tp)
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _wrong(key, value, tp)
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    return _scalar(value, tp, key)


def _bool_as_number(value: Any, tp: Any) -> bool:
    return isinstance(value, bool) and tp in (int, float)


def _scalar(value: Any, tp: Any, key: str) -> Any:
    if tp is Any:
        return value
    if value is None or _bool_as_number(value, tp) or isinstance(value, list | dict):
        raise _wrong(key, value, tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            raise ValueError(value)
        if tp is dt.date:
            return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return tp(value)
    except (TypeError, ValueError) as exc:
        raise _wrong(key, value, tp) from exc


def _wrong(key: str, value: Any, tp: Any) -> ConfigError:
    name = getattr(tp, "__name__", None) or str(tp).replace("datetime.", "")
    return ConfigError(f"config key '{key}' must be {name}, got {value!r}")


def typed_section(raw: Any, section: str, cls: type[Any]) -> Any:
    """The mapping ``raw`` of conf key ``section`` as a ``cls`` instance: every field present, no unknown
    key, each value coerced to its annotation, then ``cls.checks()`` (key -> ok) applied."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config key '{section}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    unknown = sorted(set(raw) - {f.name for f in fields})
    if unknown:
        raise ConfigError(f"unknown config key '{section}.{unknown[0]}'")
    missing = [f.name for f in fields if f.name not in raw and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing config key '{section}.{missing[0]}'")
    given = [f.name for f in fields if f.name in raw]
    out = cls(**{n: _coerce(raw[n], hints[n], f"{section}.{n}") for n in given})
    bad = [k for k, ok in out.checks().items() if not ok]
    if bad:
        raise ConfigError(f"config key '{section}.{bad[0]}' is out of range: {_value(out, bad[0])!r}")
    return out


def _value(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[part] if isinstance(obj, Mapping) else getattr(obj, part)
    return obj


@dataclass(frozen=True)
class PathsSettings:
    root: str
    landing: str
    warehouse: str
    mlflow_tracking_uri: str
    mlflow_artifacts: str | None

    def checks(self) -> dict[str, bool]:
        return {"root": bool(self.root)}


@dataclass(frozen=True)
class SparkSettings:
    app_name: str
    master: str | None
    delta: bool
    log_level: str
    conf: dict[str, Any]

    def checks(self) -> dict[str, bool]:
        levels = ("ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF", "TRACE")
        return {"log_level": self.log_level.upper() in levels}


@dataclass(frozen=True)
class IngestSettings:
    source: str
    max_future_hours: int
    max_age_days: int
    max_reject_share: float
    late_file_days: int

    def checks(self) -> dict[str, bool]:
        return {
            "max_future_hours": self.max_future_hours >= 0,
            "max_age_days": self.max_age_days >= 1,
            "max_reject_share": 0 <= self.max_reject_share <= 1,
            "late_file_days": self.late_file_days >= 0,
        }


@dataclass(frozen=True)
class SessionizeSettings:
    gap_minutes: int

    def checks(self) -> dict[str, bool]:
        return {"gap_minutes": self.gap_minutes >= 1}


@dataclass(frozen=True)
class SnapshotsSettings:
    every_days: int
    max_len: int
    windows_days: tuple[int, ...]
    population_days: int
    reference_price_days: int
    discount_threshold: float
    label_cutoff: dt.date | None
    propensity_horizon_days: int
    churn_horizon_days: int
    churn_active_days: int
    activity_event_types: tuple[str, ...]
    price_horizon_days: int
    price_conversion_hours: int
    price_max_views: int
    vocab_version: str
    state_retention_days: int

    def checks(self) -> dict[str, bool]:
        positive = (
            "every_days",
            "max_len",
            "population_days",
            "reference_price_days",
            "propensity_horizon_days",
            "churn_horizon_days",
            "churn_active_days",
            "price_horizon_days",
            "price_conversion_hours",
            "price_max_views",
        )
        return {
            **{k: getattr(self, k) >= 1 for k in positive},
            "windows_days": bool(self.windows_days) and min(self.windows_days) >= 1,
            "discount_threshold": 0 <= self.discount_threshold < 1,
            "activity_event_types": bool(self.activity_event_types)
            and set(self.activity_event_types) <= set(EVENT_TYPES),
            "vocab_version": bool(self.vocab_version),
            "state_retention_days": self.state_retention_days >= 0,
        }


@dataclass(frozen=True)
class TrainSettings:
    model_size: str
    plr_frequencies: int
    holdout_dates: int
    valid_dates: int
    batch_size: int
    pretrain_epochs: int
    finetune_epochs: int
    patience: int
    finetune_next_item_weight: float
    lr: float
    seed: int
    num_processes: int
    use_gpu: bool | str
    max_eval_rows: int
    max_train_rows: int
    experiment: str
    registered_model: str
    gate_metrics: tuple[str, ...]
    gate_min_delta: float
    gate_max_ece_increase: float
    init_from: str | None
    petastorm_cache: str

    def checks(self) -> dict[str, bool]:
        at_least_one = (
            "holdout_dates",
            "valid_dates",
            "batch_size",
            "patience",
            "num_processes",
            "max_eval_rows",
            "max_train_rows",
        )
        return {
            "model_size": self.model_size in ("tiny", "small", "base"),
            **{k: getattr(self, k) >= 1 for k in at_least_one},
            "plr_frequencies": self.plr_frequencies >= 0,
            "pretrain_epochs": self.pretrain_epochs >= 0,
            "finetune_epochs": self.finetune_epochs >= 0,
            "finetune_next_item_weight": self.finetune_next_item_weight >= 0,
            "lr": self.lr > 0,
            "use_gpu": self.use_gpu in (True, False, "auto"),
            "gate_metrics": bool(self.gate_metrics),
            "gate_min_delta": self.gate_min_delta >= 0,
            "gate_max_ece_increase": self.gate_max_ece_increase >= 0,
        }


@dataclass(frozen=True)
class ScoringSettings:
    model_version: str
    top_k: int
    torch_threads: int
    arrow_batch_size: int

    def checks(self) -> dict[str, bool]:
        return {
            "top_k": self.top_k >= 0,
            "torch_threads": self.torch_threads >= 0,
            "arrow_batch_size": self.arrow_batch_size >= 1,
        }


@dataclass(frozen=True)
class VocabSettings:
    min_count: int
    hash_buckets: int
    max_size: dict[str, int]

    def checks(self) -> dict[str, bool]:
        return {
            "min_count": self.min_count >= 1,
            "hash_buckets": self.hash_buckets >= 1,
            "max_size": set(self.max_size) == {"item", "category", "brand"}
            and min(self.max_size.values()) >= 1,
        }


@dataclass(frozen=True)
class EmbeddingsSettings:
    model_name: str
    model_path: str | None
    dim: int
    batch_size: int
    min_items_per_task: int
    device: str
    torch_threads: int

    def checks(self) -> dict[str, bool]:
        return {
            "dim": self.dim >= 1,
            "batch_size": self.batch_size >= 1,
            "min_items_per_task": self.min_items_per_task >= 1,
            "device": self.device in ("auto", "cpu", "cuda"),
            "torch_threads": self.torch_threads >= 0,
        }


@dataclass(frozen=True)
class SyntheticSettings:
    out: str
    truth: str
    start_date: dt.date | None
    days: int
    users: int
    items: int
    seed: int
    format: str
    dirty_fraction: float
    late_fraction: float
    files_per_day: int
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
    categories: dict[str, Any] = field(default_factory=dict)  # open map (config.OPEN_SECTIONS); unused today

    def checks(self) -> dict[str, bool]:
        return {
            "days": self.days >= 1,
            "users": self.users >= 1,
            "items": self.items >= 1,
            "files_per_day": self.files_per_day >= 1,
            "format": self.format in ("csv", "parquet"),
            "dirty_fraction": 0 <= self.dirty_fraction < 0.5,
            "late_fraction": 0 <= self.late_fraction < 0.5,
            "new_user_share": 0 <= self.new_user_share <= 1,
            "missions_per_day": self.missions_per_day > 0,
            "mean_lifetime_days": self.mean_lifetime_days > 0,
            "activity_decay_days": self.activity_decay_days > 0,
            "purchase_rate": 0 < self.purchase_rate < 1,
            "elasticity_median": self.elasticity_median < 0,
            "promo_share": 0 <= self.promo_share <= 1,
            "zipf_exponent": self.zipf_exponent > 0,
            "mission_intent": 0 <= self.mission_intent <= 5,
            "mission_spacing_scale": 0 < self.mission_spacing_scale <= 30,
        }


@dataclass(frozen=True)
class QualitySettings:
    lookback_days: int | None
    min_rows: int
    ece_bins: int
    psi_bins: int
    min_roc_auc: dict[str, float | None]
    max_ece: dict[str, float | None]
    max_psi: dict[str, float | None]

    def checks(self) -> dict[str, bool]:
        unknown = {
            f"{k}.{score}": score in (DRIFT_SCORES if k == "max_psi" else SCORE_LABELS)
            for k in ("min_roc_auc", "max_ece", "max_psi")
            for score in getattr(self, k)
        }
        return {
            "lookback_days": self.lookback_days is None or self.lookback_days >= 0,
            "min_rows": self.min_rows >= 0,
            "ece_bins": self.ece_bins >= 1,
            "psi_bins": self.psi_bins >= 1,
            **unknown,
        }


@dataclass(frozen=True)
class MaintenanceSettings:
    optimize: bool
    retain_hours: float

    def checks(self) -> dict[str, bool]:
        return {"retain_hours": self.retain_hours >= 168}


SECTIONS: dict[str, type[Any]] = {
    "paths": PathsSettings,
    "spark": SparkSettings,
    "ingest": IngestSettings,
    "sessionize": SessionizeSettings,
    "snapshots": SnapshotsSettings,
    "train": TrainSettings,
    "scoring": ScoringSettings,
    "vocab": VocabSettings,
    "embeddings": EmbeddingsSettings,
    "synthetic": SyntheticSettings,
    "quality": QualitySettings,
    "maintenance": MaintenanceSettings,
}


@dataclass(frozen=True)
class Settings:
    """Every typed section (``tables`` and ``sources`` stay maps: names and mappings, not settings)."""

    paths: PathsSettings
    spark: SparkSettings
    ingest: IngestSettings
    sessionize: SessionizeSettings
    snapshots: SnapshotsSettings
    train: TrainSettings
    scoring: ScoringSettings
    vocab: VocabSettings
    embeddings: EmbeddingsSettings
    synthetic: SyntheticSettings
    quality: QualitySettings
    maintenance: MaintenanceSettings

    @classmethod
    def build(cls, data: Mapping[str, Any]) -> Settings:
        return cls(**{name: typed_section(data.get(name), name, kind) for name, kind in SECTIONS.items()})

    def resolved(self) -> dict[str, Any]:
        """Flat ``section.key -> value`` of every setting (logged by jobs, logged to MLflow by training)."""
        flat: dict[str, Any] = {}
        for name in SECTIONS:
            for key, value in dataclasses.asdict(getattr(self, name)).items():
                flat[f"{name}.{key}"] = value
        return flat
