"""Evaluation report: a markdown page, PNG plots and a compact text table, saying plainly who wins.

Input is what the training job already has: the results table (rows = model x task x split, columns =
``evaluation.METRICS`` + ``note``) and the holdout predictions (``model, task, y_true, p``). Output files
go to one folder so ``mlflow.log_artifacts(folder)`` picks them all up. Plots use matplotlib's
object API (``Figure``, Agg canvas), so no global backend is switched and no display is needed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from shopformer.model.evaluation import ECE_BINS, HIGHER_IS_BETTER, reliability_curve

log = logging.getLogger(__name__)

ECE_GOAL = 0.02  # SPEC: calibrated probabilities, ECE <= 0.02 on held-out dates
TABLE_METRICS = ("roc_auc", "pr_auc", "log_loss", "ece", "lift_top_decile", "n")


@dataclass
class Report:
    """What ``write_report`` produced: the files (for MLflow), the text table, the winner per task."""

    files: list[Path]
    table: str
    winners: dict[str, str | None]
    verdicts: dict[str, str]


def _holdout(results: pd.DataFrame, split: str) -> pd.DataFrame:
    missing = {"model", "task", "split"} - set(results.columns)
    if missing:
        raise ValueError(f"results table lacks columns {sorted(missing)}")
    return results[results["split"] == split].reset_index(drop=True)


def winner(rows: pd.DataFrame, primary: str = "roc_auc") -> str | None:
    """Best model of one task's rows by ``primary`` (log loss breaks ties); None if all undefined."""
    if primary not in rows:
        return None
    ok = rows[pd.to_numeric(rows[primary], errors="coerce").notna()]
    if ok.empty:
        return None
    sign = 1 if HIGHER_IS_BETTER.get(primary, True) else -1
    tie = ok.get("log_loss", 0.0)
    order = ok.assign(_k=-sign * ok[primary].astype(float), _t=tie).sort_values(["_k", "_t", "model"])
    return str(order["model"].iloc[0])


def _fmt(v: Any, digits: int = 3) -> str:
    """3 decimals; integers (counts such as ``n``, even when a NaN row made the column float) plain."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, str):
        return v
    return str(int(v)) if digits == 0 or isinstance(v, int | np.integer) else f"{float(v):.{digits}f}"


def _cell(column: str, v: Any) -> str:
    return _fmt(v, 0 if column == "n" else 3)


def verdict(rows: pd.DataFrame, task: str, model_name: str | None, primary: str = "roc_auc") -> str:
    """One honest sentence per task: who wins, and how the candidate model compares to the best other."""
    best = winner(rows, primary)
    if best is None:
        notes = "; ".join(sorted({str(n) for n in rows.get("note", []) if n}))
        return f"{task}: no winner, {primary} is undefined on this split ({notes or 'no rows'})."
    by = rows.drop_duplicates("model", keep="last").set_index("model")
    text = f"{task}: {best} wins on {primary} ({_fmt(by.at[best, primary])})"
    if model_name is not None and model_name not in by.index:
        return f"{text}; the model {model_name} has no result for this task."
    if model_name is not None and pd.isna(by.at[model_name, primary]):
        note = by.at[model_name, "note"] if "note" in by else ""
        return f"{text}; the model {model_name} has no {primary} ({note or 'undefined'})."
    if model_name is not None:
        others = rows[rows["model"] != model_name]
        rival = best if best != model_name else winner(others, primary)
        m, r = by.at[model_name, primary], by.at[rival, primary] if rival else math.nan
        gap = f"{_fmt(m)} vs {rival} {_fmt(r)}, {float(m) - float(r):+.3f}" if rival else _fmt(m)
        outcome = "wins" if best == model_name else "loses"
        text += f"; the model {model_name} {outcome} ({gap}{_noise(by, model_name, rival, primary)})"
    ece = float(by.at[best, "ece"]) if "ece" in by else math.nan
    met = "is undefined for" if math.isnan(ece) else "meets" if ece <= ECE_GOAL else "misses"
    text = f"{text}. Winner's ECE {_fmt(ece)} {met} the {ECE_GOAL} goal"
    if model_name is not None and model_name != best and "ece" in by:
        text += f" (the model's: {_fmt(by.at[model_name, 'ece'])})"
    floor = ece_noise_floor(float(by.at[best, "n"]), float(by.at[best, "base_rate"])) if "n" in by else 0.0
    return text + (
        f" (too few rows to tell: perfect calibration would show ~{floor:.3f})." if floor > ECE_GOAL else "."
    )


def ece_noise_floor(n: float, base_rate: float, bins: int = ECE_BINS) -> float:
    """Rough ECE of a *perfectly* calibrated model on n rows: the sampling noise of the bin rates,
    sqrt(2/pi) * sqrt(b (1 - b) / (n / bins)). A measured ECE near it says nothing about calibration."""
    if not n > 0 or math.isnan(base_rate):
        return 0.0
    return math.sqrt(2 / math.pi) * math.sqrt(base_rate * (1 - base_rate) / max(n / bins, 1.0))


def _noise(by: pd.DataFrame, a: str, b: str | None, primary: str) -> str:
    """', within the noise (2 SE = x)' when an AUC gap is smaller than two combined standard errors."""
    if primary != "roc_auc" or b is None or not {"n", "base_rate"} <= set(by.columns):
        return ""
    se = [
        auc_se(float(by.at[m, primary]), float(by.at[m, "n"]), float(by.at[m, "base_rate"])) for m in (a, b)
    ]
    two_se = 2 * math.hypot(*se)
    gap = abs(float(by.at[a, primary]) - float(by.at[b, primary]))
    return f"; within the noise, 2 SE = {two_se:.3f}" if gap < two_se else ""


def text_table(rows: pd.DataFrame, winners: dict[str, str | None]) -> str:
    """Fixed-width table, one line per task x model, the winner marked with '*'."""
    cols = [c for c in TABLE_METRICS if c in rows.columns]
    head = {"lift_top_decile": "lift@10%"}
    lines = [f"{'task':<12} {'model':<20}" + "".join(f"{head.get(c, c):>10}" for c in cols)]
    for _, r in rows.sort_values(["task", "model"]).iterrows():
        name = f"{r['model']}{' *' if winners.get(r['task']) == r['model'] else ''}"
        lines.append(f"{r['task']:<12} {name:<20}" + "".join(f"{_cell(c, r[c]):>10}" for c in cols))
    return "\n".join(lines)


def auc_se(auc: float, n: float, base_rate: float) -> float:
    """Standard error of an AUC (Hanley & McNeil 1982), to say when a gap is within the noise."""
    n1, n0 = n * base_rate, n * (1 - base_rate)
    if not (n1 >= 1 and n0 >= 1 and 0 < auc < 1):
        return 0.0
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    return math.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0))


def _md_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = [
        "| " + " | ".join(_cell(c, v) for c, v in zip(df.columns, r, strict=True)) + " |" for r in df.values
    ]
    return "\n".join([head, rule, *body])


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _by_model(preds: pd.DataFrame, task: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    sub = preds[preds["task"] == task]
    return [
        (str(m), g["y_true"].to_numpy(dtype=float), g["p"].to_numpy(dtype=float))
        for m, g in sub.groupby("model", sort=True)
    ]


def plot_roc(preds: pd.DataFrame, task: str, path: Path) -> Path:
    """ROC curve per model; a model whose labels have one class is listed as 'undefined'."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    for m, y, p in _by_model(preds, task):
        if len(np.unique(y)) < 2:
            ax.plot([], [], label=f"{m} (undefined: one class)")
            continue
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=m)
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC, {task} (holdout)")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_calibration(preds: pd.DataFrame, task: str, path: Path) -> Path:
    """Reliability curve: mean predicted vs observed rate in 10 equal-mass bins per model."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    top = 0.0
    for m, y, p in _by_model(preds, task):
        mean_p, obs, _ = reliability_curve(y, p, bins=10)
        ax.plot(mean_p, obs, "o-", ms=3, label=m)
        top = max(top, float(np.max(mean_p, initial=0)), float(np.max(obs, initial=0)))
    lim = min(1.0, top * 1.05 + 1e-3)
    ax.plot([0, lim], [0, lim], "k:", lw=1, label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed rate", title=f"Calibration, {task}")
    ax.set(xlim=(0, lim), ylim=(0, lim))
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def plot_gains(preds: pd.DataFrame, task: str, path: Path) -> Path:
    """Cumulative gains: share of positives captured when targeting the top x % by score."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot()
    for m, y, p in _by_model(preds, task):
        if y.sum() == 0:
            continue
        _, inverse = np.unique(-p, return_inverse=True)  # tie groups, best score first
        targeted = np.concatenate([[0], np.cumsum(np.bincount(inverse))]) / y.size
        captured = np.concatenate([[0], np.cumsum(np.bincount(inverse, weights=y))]) / y.sum()
        ax.plot(targeted, captured, label=m)  # straight within a tie group: random tie breaking
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="random")
    ax.axvline(0.1, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="share of users targeted", ylabel="share of positives captured", title=f"Gains, {task}")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def plot_histograms(preds: pd.DataFrame, task: str, path: Path) -> Path:
    """Score distribution per model (density), to spot collapsed or saturated scores."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    for m, _, p in _by_model(preds, task):
        if np.ptp(p) == 0:  # a constant score is one spike that would flatten every other curve
            ax.plot([], [], label=f"{m} (constant {p[0]:.3f}, not shown)")
            continue
        ax.hist(p, bins=np.linspace(0, 1, 41), density=True, histtype="step", lw=1.3, label=m)
    ax.set(xlabel="predicted probability", ylabel="density", title=f"Score histogram, {task} (holdout)")
    ax.legend(fontsize=8)
    return _save(fig, path)


PLOTS = {"roc": plot_roc, "calibration": plot_calibration, "gains": plot_gains, "histogram": plot_histograms}


def _markdown(
    title: str, split: str, verdicts: dict[str, str], rows: pd.DataFrame, results: pd.DataFrame, plots: dict
) -> str:
    cols = ["model", *[c for c in (*TABLE_METRICS, "base_rate", "note") if c in rows.columns]]
    parts = [f"# {title}", "", f"Metrics on the **{split}** split; definitions in docs/evaluation.md.", ""]
    for task, text in verdicts.items():
        parts += [f"## {task}", "", text, "", _md_table(rows[rows["task"] == task][cols]), ""]
        parts += [f"![{kind}]({p.name})" for kind, p in plots.get(task, {}).items()] + [""]
    parts += ["## All splits", "", _md_table(results), ""]
    return "\n".join(parts)


def write_report(
    results: pd.DataFrame,
    predictions: pd.DataFrame,
    out_dir: str | Path,
    *,
    model_name: str | None = None,
    split: str = "holdout",
    primary: str = "roc_auc",
    tasks: Sequence[str] | None = None,
    title: str = "shopformer evaluation",
) -> Report:
    """Write report.md, results.csv and 4 PNGs per task into ``out_dir``; return files, table, winners."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _holdout(results, split)
    tasks = list(tasks or dict.fromkeys(rows["task"]))
    winners = {t: winner(rows[rows["task"] == t], primary) for t in tasks}
    verdicts = {t: verdict(rows[rows["task"] == t], t, model_name, primary) for t in tasks}
    plots: dict[str, dict[str, Path]] = {}
    for t in tasks:
        if not predictions.empty and (predictions["task"] == t).any():
            plots[t] = {k: f(predictions, t, out / f"{k}_{t}.png") for k, f in PLOTS.items()}
    results.to_csv(out / "results.csv", index=False)
    (out / "report.md").write_text(_markdown(title, split, verdicts, rows, results, plots))
    table = text_table(rows[rows["task"].isin(tasks)], winners) + "\n" + "\n".join(verdicts.values())
    files = [out / "report.md", out / "results.csv", *[p for d in plots.values() for p in d.values()]]
    log.info("report: %d files in %s", len(files), out)
    return Report(files=files, table=table, winners=winners, verdicts=verdicts)
