"""Layered YAML configuration: ``conf/base.yaml`` <- environment file <- ``--set key=value`` overrides.

Every key an environment file or override sets must already exist in ``base.yaml`` (so a typo fails loudly,
naming the key), except below the *open* sections listed in ``OPEN_SECTIONS``, whose children are free-form
maps (Spark settings, source mappings).
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shopformer.errors import ConfigError
from shopformer.settings import Settings


def _conf_dir() -> Path:
    """conf/ of the checkout. Beside lib/ when imported from source; under spark-submit the driver imports
    the wheel on --py-files instead (docs/cluster.md), so then $SHOPFORMER_CONF_DIR, else the conf/ next to
    the jobs/ folder of the script being run."""
    if env := os.environ.get("SHOPFORMER_CONF_DIR"):
        return Path(env)
    source = Path(__file__).resolve().parents[2] / "conf"
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    if source.is_dir() or not main:
        return source
    return Path(main).resolve().parents[1] / "conf"


CONF_DIR = _conf_dir()
OPEN_SECTIONS = ("spark.conf", "sources", "synthetic.categories")
FLAT_KEY_SECTIONS = ("spark.conf",)  # children are single keys that contain dots
_MISSING = object()


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _is_open(dotted: str) -> bool:
    return any(dotted == s or dotted.startswith(s + ".") for s in OPEN_SECTIONS)


def _merge(base: dict[str, Any], layer: Mapping[str, Any], origin: str, prefix: str = "") -> None:
    """Merge ``layer`` into ``base`` in place; unknown keys outside open sections are errors."""
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if key not in base and not _is_open(dotted):
            raise ConfigError(f"unknown config key '{dotted}' in {origin} (not defined in conf/base.yaml)")
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, origin, dotted + ".")
        else:
            base[key] = copy.deepcopy(value)


def _override_to_layer(item: str) -> dict[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.path=value")
    dotted, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except (yaml.YAMLError, ValueError) as exc:  # e.g. a date YAML cannot build: 2024-13-01
        raise ConfigError(f"config key '{dotted.strip()}': bad value in --set {item} ({exc})") from exc
    layer: dict[str, Any] = {}
    node = layer
    dotted = dotted.strip()
    flat = next((f for f in FLAT_KEY_SECTIONS if dotted.startswith(f + ".")), None)
    # Spark's own keys contain dots: spark.conf.spark.sql.shuffle.partitions is one key under spark.conf.
    parts = [*flat.split("."), dotted[len(flat) + 1 :]] if flat else dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return layer


# Keys outside ``paths`` and ``tables`` whose values are path templates over ``paths`` (``{root}/...``).
PATH_TEMPLATE_KEYS = ("train.petastorm_cache", "synthetic.out", "synthetic.truth")


def expand(template: str, values: Mapping[str, Any], key: str) -> str:
    """``template`` with its ``{name}`` references filled from ``values``; a ConfigError names ``key``."""
    try:
        return template.format(**{k: v for k, v in values.items() if isinstance(v, str)})
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"config key '{key}': cannot expand {template!r} ({exc!r})") from exc


def _local(path: str) -> str:
    return path if "://" in path else str(Path(path).expanduser().resolve())


def _resolve_paths(data: dict[str, Any]) -> None:
    """Expand ``{root}``-style references among ``paths.*``, in ``tables.*`` and ``PATH_TEMPLATE_KEYS``;
    make local paths absolute (so a job's paths do not depend on where a later step changes directory)."""
    paths = data.get("paths", {})
    for _ in range(len(paths) + 1):  # references may chain: warehouse -> root
        paths.update(
            {k: expand(v, paths, f"paths.{k}") if isinstance(v, str) else v for k, v in paths.items()}
        )
    for key, value in paths.items():
        if isinstance(value, str) and key != "mlflow_tracking_uri":
            paths[key] = _local(value)
    tables = data.get("tables", {})
    for key, value in tables.items():
        tables[key] = expand(str(value), paths, f"tables.{key}")
    if "mlflow_tracking_uri" in paths:
        paths["mlflow_tracking_uri"] = expand(
            str(paths["mlflow_tracking_uri"]), paths, "paths.mlflow_tracking_uri"
        )
    for dotted in PATH_TEMPLATE_KEYS:
        section, key = dotted.split(".")
        if isinstance(data.get(section, {}).get(key), str):
            data[section][key] = _local(expand(data[section][key], paths, dotted))


@dataclass(frozen=True)
class Config:
    """Read-only view of the merged configuration; ``get`` names the missing key when absent. Stages read
    typed values from ``settings``; ``get``/``section``/``table`` serve names, maps and paths."""

    data: Mapping[str, Any]
    origin: str
    settings: Settings  # every section typed and checked (shopformer.settings)

    def get(self, dotted: str, default: Any = _MISSING) -> Any:
        node: Any = self.data
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                if default is not _MISSING:
                    return default
                raise ConfigError(f"missing config key '{dotted}' (config: {self.origin})")
            node = node[part]
        return node

    def section(self, dotted: str) -> dict[str, Any]:
        value = self.get(dotted)
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key '{dotted}' must be a mapping, got {type(value).__name__}")
        return copy.deepcopy(dict(value))

    def table(self, name: str) -> str:
        """Location of a Delta table by logical name (``bronze_events`` ...)."""
        return str(self.get(f"tables.{name}"))

    def expand(self, template: str, key: str, **extra: str) -> str:
        """A path template over ``paths.*`` (and ``extra``, e.g. ``date``), e.g. a source's landing path."""
        return expand(template, {**self.section("paths"), **extra}, key)


def load_config(env: str | os.PathLike[str] | None = None, overrides: Iterable[str] = ()) -> Config:
    """Merge base.yaml, the environment file (a path, or a name in conf/) and ``key=value`` overrides."""
    data = _read_yaml(CONF_DIR / "base.yaml")
    origins = ["conf/base.yaml"]
    if env:
        env_path = Path(env)
        if not env_path.suffix:
            env_path = CONF_DIR / f"{env}.yaml"
        _merge(data, _read_yaml(env_path), str(env_path))
        origins.append(str(env_path))
    for item in overrides:
        _merge(data, _override_to_layer(item), f"--set {item}")
        origins.append(f"--set {item}")
    _resolve_paths(data)
    return Config(data=data, origin=" + ".join(origins), settings=Settings.build(data))
