from pathlib import Path

import pytest

from shopformer.config import load_config
from shopformer.errors import ConfigError


def test_unknown_override_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'sessionize\.gap_minutez'"):
        load_config("local", ["sessionize.gap_minutez=10"])


def test_env_file_missing_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_layers_override_in_order_and_paths_resolve(tmp_path: Path) -> None:
    env = tmp_path / "env.yaml"
    env.write_text(f"paths:\n  root: {tmp_path}\nsessionize:\n  gap_minutes: 45\n")
    cfg = load_config(env, ["sessionize.gap_minutes=20", "sources.extra.format=parquet"])
    assert cfg.get("sessionize.gap_minutes") == 20
    assert cfg.table("bronze_events") == f"{tmp_path}/warehouse/bronze/events"
    assert cfg.get("paths.mlflow_tracking_uri") == f"sqlite:///{tmp_path}/mlflow.db"
    assert cfg.get("sources.extra.format") == "parquet"
    assert cfg.get("sources.synthetic.fields.item_id") == "product_id"  # YAML merge key kept the mapping


def test_missing_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"missing config key 'sessionize\.nothing'"):
        load_config("local").get("sessionize.nothing")


def test_cluster_example_keeps_object_store_paths() -> None:
    cfg = load_config("cluster")
    assert cfg.table("silver_sessions") == "s3a://my-bucket/shopformer/warehouse/silver/sessions"
    assert cfg.get("spark.master") is None


def test_an_override_of_a_spark_setting_keeps_its_dotted_key_whole() -> None:
    cfg = load_config("local", ["spark.conf.spark.sql.shuffle.partitions=2", "spark.master=local[2]"])
    conf = cfg.section("spark.conf")
    assert conf["spark.sql.shuffle.partitions"] == 2
    assert "spark" not in conf
    assert cfg.get("spark.master") == "local[2]"
