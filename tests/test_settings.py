"""Typed settings: every section is checked when the config loads, so a bad ``--set`` exits 2 naming the key
before anything heavy (torch, MLflow, Spark) is imported or started."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shopformer import cli
from shopformer.config import load_config
from shopformer.errors import ConfigError
from shopformer.settings import SECTIONS, SnapshotsSettings, typed_section

REPO = Path(__file__).resolve().parents[1]

# One bad value per section, each of another kind: wrong type, out of range, bad element, bad date, ...
BAD = {
    "paths": ("paths.mlflow_artifacts=[1]", r"paths\.mlflow_artifacts"),
    "spark": ("spark.delta=maybe", r"spark\.delta"),
    "ingest": ("ingest.max_future_hours=-1", r"ingest\.max_future_hours"),
    "sessionize": ("sessionize.gap_minutes=0", r"sessionize\.gap_minutes"),
    "snapshots": ("snapshots.windows_days=[7, x]", r"snapshots\.windows_days\[1\]"),
    "train": ("train.lr=abc", r"train\.lr"),
    "scoring": ("scoring.top_k=-1", r"scoring\.top_k"),
    "vocab": ("vocab.max_size.item=0", r"vocab\.max_size"),
    "embeddings": ("embeddings.device=tpu", r"embeddings\.device"),
    "synthetic": ("synthetic.start_date=2024-13-01", r"synthetic\.start_date"),
    "quality": ("quality.lookback_days=-5", r"quality\.lookback_days"),
    "maintenance": ("maintenance.optimize=sometimes", r"maintenance\.optimize"),
}


def test_every_section_has_a_bad_value_case() -> None:
    assert set(BAD) == set(SECTIONS)


@pytest.mark.parametrize("section", sorted(BAD))
def test_a_bad_value_fails_loading_naming_the_key(section: str) -> None:
    override, key = BAD[section]
    with pytest.raises(ConfigError, match=key):
        load_config("local", [override])


@pytest.mark.parametrize("section", sorted(BAD))
def test_a_bad_value_exits_2_before_the_job_module_is_imported(
    section: str, capsys: pytest.CaptureFixture[str]
) -> None:
    override, key = BAD[section]
    # A module that does not exist: reaching the import would raise ModuleNotFoundError, not exit 2.
    with pytest.raises(SystemExit) as stop:
        cli.entry("shopformer.no_such_job", ["--run-date", "2024-01-01", "--set", override])
    assert stop.value.code == 2
    assert key.replace("\\", "").split("[")[0] in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-5"])
def test_max_train_rows_must_be_positive(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=rf"'train\.max_train_rows' is out of range: {value}"):
        load_config("local", [f"train.max_train_rows={value}"])
    with pytest.raises(SystemExit) as stop:
        cli.entry(
            "shopformer.no_such_job", ["--run-date", "2024-01-01", "--set", f"train.max_train_rows={value}"]
        )
    assert stop.value.code == 2 and "train.max_train_rows" in capsys.readouterr().err


def test_a_good_config_reaches_the_job() -> None:
    with pytest.raises(ModuleNotFoundError, match="no_such_job"):
        cli.entry("shopformer.no_such_job", ["--run-date", "2024-01-01", "--set", "train.lr=0.01"])


def test_the_entry_point_script_exits_2_without_starting_spark(tmp_path: Path) -> None:
    argv = ["--run-date", "2024-01-01", "--set", f"paths.root={tmp_path}", "--set", "scoring.top_k=-1"]
    done = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "score_users.py"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "config key 'scoring.top_k' is out of range: -1" in done.stderr
    assert "Spark" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "warehouse").exists()


def test_values_are_coerced_to_their_annotations() -> None:
    raw = {**yaml.safe_load((REPO / "conf" / "base.yaml").read_text())["snapshots"]}
    raw |= {"windows_days": [7, 30.0], "label_cutoff": "2024-03-01", "discount_threshold": 0}
    s = typed_section(raw, "snapshots", SnapshotsSettings)
    assert s.windows_days == (7, 30) and s.label_cutoff == dt.date(2024, 3, 1)
    assert s.discount_threshold == 0.0 and isinstance(s.discount_threshold, float)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_len": True}, r"'snapshots\.max_len' must be int, got True"),  # YAML's yes/true is no number
        ({"max_len": 2.5}, r"'snapshots\.max_len' must be int, got 2\.5"),
        ({"windows_days": 7}, r"'snapshots\.windows_days' must be tuple"),
        ({"every_days": None}, r"'snapshots\.every_days' must be int, got None"),
        ({"extra": 1}, r"unknown config key 'snapshots\.extra'"),
        ({"activity_event_types": ["view", "click"]}, r"'snapshots\.activity_event_types' is out of range"),
    ],
)
def test_bad_values_name_their_key(change: dict, message: str) -> None:
    raw = {**yaml.safe_load((REPO / "conf" / "base.yaml").read_text())["snapshots"], **change}
    with pytest.raises(ConfigError, match=message):
        typed_section(raw, "snapshots", SnapshotsSettings)


def test_a_missing_key_is_named() -> None:
    raw = yaml.safe_load((REPO / "conf" / "base.yaml").read_text())["snapshots"]
    del raw["max_len"]
    with pytest.raises(ConfigError, match=r"missing config key 'snapshots\.max_len'"):
        typed_section(raw, "snapshots", SnapshotsSettings)


def test_resolved_settings_cover_every_base_key_outside_open_maps() -> None:
    base = yaml.safe_load((REPO / "conf" / "base.yaml").read_text())
    expected = {f"{s}.{k}" for s in SECTIONS for k in base[s]}
    resolved = load_config("local").settings.resolved()
    assert expected <= set(resolved)
    assert resolved["train.gate_metrics"] == ("propensity_roc_auc", "churn_roc_auc")
