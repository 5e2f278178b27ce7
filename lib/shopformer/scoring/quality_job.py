"""One score-quality run: scores.user_scores + gold.user_snapshots labels -> scores.score_quality.

Every scored date in the look-back window ending at the run date is (re)evaluated: metrics where labels
have matured, PSI against the source's previous scored date wherever there is one. The window's rows are
replaced in one atomic commit (``replaceWhere`` on the date range), so a rerun gives the same table, and
a date whose churn labels matured later gets its churn rows on a later night. Breaches are written first
and raised afterwards (``QualityBreachError``), so the table always says what failed the job. The last
commit sets the verdict of the window's nights in scores.published_nights (``publish.judge``), which
makes them visible to the SQL views.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from shopformer import cli, tables
from shopformer.config import Config
from shopformer.errors import ShopformerError, UsageError
from shopformer.features.snapshots import snapshot_schema
from shopformer.schemas import SCORES_SCORE_QUALITY
from shopformer.scoring import publish, quality
from shopformer.settings import QualitySettings
from shopformer.spark import build_spark

log = logging.getLogger(__name__)
RULE_KEYS = {"min_roc_auc": ("roc_auc", "min"), "max_ece": ("ece", "max"), "max_psi": ("psi", "max")}


class QualityInputError(ShopformerError):
    """There are no scores to evaluate for the run date."""


class QualityBreachError(ShopformerError):
    """A metric crossed its threshold; raised after scores.score_quality was written. Exit code 3, so a
    scheduler can tell "scores are suspect" (alert) from "the job failed" (1)."""

    exit_code = 3

    def __init__(self, message: str, report: QualityReport) -> None:
        super().__init__(message)
        self.report = report


def rules(q: QualitySettings) -> tuple[quality.Rule, ...]:
    """The thresholds of conf ``quality`` (typed and checked when the config loaded) as rules."""
    return tuple(
        quality.Rule(score, metric, bound, limit)
        for key, (metric, bound) in RULE_KEYS.items()
        for score, limit in getattr(q, key).items()
        if limit is not None
    )


@dataclass(frozen=True)
class QualityReport:
    run_date: str
    window: list[str | None]
    labelled_dates: list[str]
    drift_dates: list[str]
    rows: int
    breaches: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)


def _scores(spark: SparkSession, cfg: Config, run_date: dt.date) -> DataFrame:
    path = cfg.table("scores_user_scores")
    if not tables.exists(spark, path):
        raise QualityInputError(f"no scores.user_scores at {path}: run jobs/score_users.py first")
    return tables.read(spark, path).where(F.col("as_of_date") <= F.lit(run_date))


def _labels(spark: SparkSession, cfg: Config, dates: list[dt.date]) -> DataFrame:
    """Snapshot keys and labels of the evaluated dates (empty when the table is absent: drift only)."""
    path = cfg.table("gold_user_snapshots")
    if not tables.exists(spark, path):
        log.warning("no gold.user_snapshots at %s: no labels, drift only", path)
    schema = snapshot_schema(cfg.settings.snapshots.windows_days)
    snaps = tables.read(spark, path, schema).where(F.col("as_of_date").isin(dates))
    return snaps.select(*quality.KEYS, *quality.SCORE_LABELS.values())


def _predicate(lo: dt.date | None, run_date: dt.date) -> str:
    upper = f"as_of_date <= DATE'{run_date.isoformat()}'"
    return upper if lo is None else f"as_of_date >= DATE'{lo.isoformat()}' AND {upper}"


def run(spark: SparkSession, cfg: Config, *, run_date: dt.date, run_id: str) -> QualityReport:
    """Evaluate the window's scored dates, replace its rows of scores.score_quality, raise on a breach."""
    s = cfg.settings.quality
    scores = _scores(spark, cfg, run_date)
    lo = None if s.lookback_days is None else run_date - dt.timedelta(days=s.lookback_days)
    dates = quality.previous_dates(scores)
    if lo is not None:
        dates = dates.where(F.col("as_of_date") >= F.lit(lo))
    window = dates.collect()  # one small row per (source, scored date)
    if not window:
        raise QualityInputError(f"scores.user_scores has no scored dates in {_predicate(lo, run_date)}")
    evaluated = sorted({r["as_of_date"] for r in window})
    needed = sorted(set(evaluated) | {r["reference_date"] for r in window if r["reference_date"]})
    scoped = scores.where(F.col("as_of_date").isin(needed))  # partition pruning
    current = scoped.where(F.col("as_of_date").isin(evaluated))
    pairs = quality.labelled_pairs(current, _labels(spark, cfg, evaluated))
    refs = spark.createDataFrame(window, "source string, as_of_date date, reference_date date")
    metrics = quality.label_metrics(pairs, ece_bins=s.ece_bins).unionByName(
        quality.drift_metrics(quality.drift_inputs(scoped, refs), bins=s.psi_bins)
    )
    judged = quality.judge(metrics, rules=rules(s), min_rows=s.min_rows, evaluated_on=run_date, run_id=run_id)
    path = cfg.table("scores_score_quality")
    tables.replace_where(
        judged,
        path,
        predicate=_predicate(lo, run_date),
        schema=SCORES_SCORE_QUALITY,
        partition_by=["as_of_date"],
        run_id=run_id,
    )
    written = tables.read(spark, path).where(F.expr(_predicate(lo, run_date))).collect()
    # Last commit, before a breach is raised: the window's published nights get their verdict.
    publish.judge(spark, cfg, predicate=_predicate(lo, run_date), run_date=run_date, run_id=run_id)
    report = _report(run_date, lo, written)
    if report.failing:
        raise QualityBreachError(
            f"score quality breached ({len(report.failing)}): {'; '.join(report.failing)} "
            f"(written to scores.score_quality; thresholds in conf quality.*)",
            report,
        )
    return report


def _describe(r: Any) -> str:
    sign = "<" if r["metric"] == "roc_auc" else ">"
    return (
        f"{r['source']} {r['as_of_date']} {r['score']} {r['metric']}={r['value']:.4f} "
        f"{sign} {r['threshold']:g}"
    )


def _report(run_date: dt.date, lo: dt.date | None, rows: list[Any]) -> QualityReport:
    """Counts of the written rows. A breach fails the run only on the newest date of its (source, score,
    metric) in the window: an old date's breach was reported when it was new, and would otherwise keep
    failing every night until it left the window."""
    newest: dict[tuple[str, str, str], dt.date] = {}
    for r in rows:
        key = (r["source"], r["score"], r["metric"])
        newest[key] = max(newest.get(key, r["as_of_date"]), r["as_of_date"])
    ordered = sorted(rows, key=lambda r: (r["source"], r["as_of_date"], r["score"], r["metric"]))
    breached = [r for r in ordered if r["breached"]]
    return QualityReport(
        run_date=run_date.isoformat(),
        window=[None if lo is None else lo.isoformat(), run_date.isoformat()],
        labelled_dates=sorted({str(r["as_of_date"]) for r in rows if r["metric"] in quality.LABEL_METRICS}),
        drift_dates=sorted({str(r["as_of_date"]) for r in rows if r["metric"] == "psi"}),
        rows=len(rows),
        breaches=[_describe(r) for r in breached],
        failing=[
            _describe(r)
            for r in breached
            if r["as_of_date"] == newest[(r["source"], r["score"], r["metric"])]
        ],
    )


ABOUT = """\
Evaluate the nightly scores into scores.score_quality (docs/scoring.md "Score quality").

For every scored as-of date in [--run-date - quality.lookback_days, --run-date]: ROC-AUC, PR-AUC, log loss,
ECE and top-decile lift of propensity_7d and churn_30d where gold.user_snapshots has matured labels, and PSI
of each score against the source's previous scored date. Thresholds are in conf ``quality``; a breach is
written to the table first, then the job exits 3 with one line naming it (1: the job itself failed).
Last, the window's nights in scores.published_nights get their verdict, which shows them to the SQL views.
"""


def _evaluate(args: cli.JobArgs) -> None:
    if args.end_date != args.run_date:
        raise UsageError("evaluate_scores evaluates a window ending at --run-date: drop --end-date")
    spark = build_spark(args.cfg, "evaluate_scores")
    try:
        report = run(spark, args.cfg, run_date=args.run_date, run_id=args.run_id)
    except QualityBreachError as exc:
        cli.emit("QUALITY", asdict(exc.report))  # the summary line even when the run fails
        raise
    cli.emit("QUALITY", asdict(report))


def main(argv: list[str] | None = None) -> int:
    """``jobs/evaluate_scores.py``: score quality of the scored dates (exit 3 on a breach)."""
    return cli.run_main("evaluate_scores", cli.parser(ABOUT), argv, _evaluate, tag="QUALITY")
