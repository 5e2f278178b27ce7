"""The notebooks run top to bottom in a kernel of this interpreter, against a root whose tables were made by
the real jobs (``scored_root``); their plots and tables are checked against the tables themselves."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shopformer import tables
from shopformer.config import load_config
from tests.factories import SMALL_SPARK

# Budget per test, enforced (pytest-timeout): run alone, this test also pays for the Airflow pipeline that
# ``scored_root`` comes from.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
KERNEL = "shopformer-test-venv"
# The suite's small-Spark settings (tests/factories.py), as the notebook's SHOPFORMER_SET overrides.
SPARK_SETS = " ".join(
    [
        "spark.master=local[2]",
        "spark.conf.spark.driver.memory=1g",
        *SMALL_SPARK,
    ]
)


def _kernel_spec(folder: Path) -> None:
    """A kernel spec that starts this very interpreter (not whatever 'python3' the machine knows)."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )


def _run(nb: nbformat.NotebookNode, cwd: Path, probe: str) -> str:
    """Execute every cell, then ``probe`` in the same kernel; the probe's printed text."""
    client = NotebookClient(nb, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(cwd)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        extra = nbformat.v4.new_code_cell(probe)
        nb.cells.append(extra)
        client.execute_cell(extra, len(nb.cells) - 1)
        nb.cells.pop()
    return "".join(o.text for o in extra.outputs if o.output_type == "stream" and o.name == "stdout")


def test_explore_scores_plots_the_score_tables(
    scored_root: Path, spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = REPO / "notebooks" / "explore_scores.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(c.get("outputs", []) == [] for c in nb.cells if c.cell_type == "code"), "saved with outputs"
    _kernel_spec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("SHOPFORMER_ROOT", str(scored_root))
    monkeypatch.setenv("SHOPFORMER_SET", SPARK_SETS)
    probe = (
        "import json; print(json.dumps({'segments': segments.to_dict('records'),"
        " 'dates': sorted(map(str, set(pairs.as_of_date)))}))"
    )
    got = json.loads(_run(nb, tmp_path, probe))

    cfg = load_config("local", [f"paths.root={scored_root}"])
    scores = tables.read(spark, cfg.table("scores_user_scores"))
    latest = scores.join(
        scores.groupBy("source").agg(F.max("as_of_date").alias("as_of_date")), ["source", "as_of_date"]
    )
    expected = {
        (r["source"], r["segment"]): (r["users"], r["mean_propensity_7d"])
        for r in latest.groupBy("source", F.col("price_sensitivity_segment").alias("segment"))
        .agg(F.count(F.lit(1)).alias("users"), F.avg("propensity_7d").alias("mean_propensity_7d"))
        .collect()
    }
    assert {(r["source"], r["segment"]): r["users"] for r in got["segments"]} == {
        k: v[0] for k, v in expected.items()
    }
    for r in got["segments"]:
        assert r["mean_propensity_7d"] == pytest.approx(expected[(r["source"], r["segment"])][1])
    # Calibration covers exactly the scored dates whose propensity labels have matured.
    snaps = tables.read(spark, cfg.table("gold_user_snapshots")).where(F.col("label_propensity").isNotNull())
    matured = scores.select("as_of_date").distinct().join(snaps.select("as_of_date").distinct(), "as_of_date")
    assert got["dates"] == sorted(str(r["as_of_date"]) for r in matured.collect())
    assert got["dates"], "the scored root has no matured dates to calibrate on"

    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    quality = cfg.table("scores_score_quality")
    has_quality = tables.exists(spark, quality) and tables.read(spark, quality).count() > 0
    assert len(images) == 4 + int(has_quality)  # distributions, segments, reliability, lift (+ quality)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
