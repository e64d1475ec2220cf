"""Markdown tables: the ``slate eval`` result (one row per hop count and per dataset, then macro and overall), and
the seed summary of a method comparison (mean ± 95% t-interval per arm).

``result`` is the dict of ``slate.eval.evaluate.report``: overall ``n, em, f1, valid_rate, searches``, optional
``by_hops`` and ``by_dataset`` (each name -> the same five keys) and, with several datasets, ``macro`` (the
unweighted mean over datasets of ``em, f1, valid_rate, searches``; it has no ``n``). Rates print with three
decimals, searches per question with two, as the terminal table does.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from scipy import stats

HEADER = ("split", "n", "EM", "F1", "valid rate", "searches")


def _row(name: str, metrics: dict[str, Any]) -> str:
    n = metrics.get("n", "")
    cells = (name, str(n), f"{metrics['em']:.3f}", f"{metrics['f1']:.3f}", f"{metrics['valid_rate']:.3f}",
             f"{metrics['searches']:.2f}")
    return "| " + " | ".join(cells) + " |"


def format_markdown(result: dict[str, Any], title: str) -> str:
    """A markdown section: ``### title``, then the table (hop rows, dataset rows, macro, overall)."""
    rows = [_row(f"{hops}-hop", m) for hops, m in result.get("by_hops", {}).items()]
    rows += [_row(name, m) for name, m in result.get("by_dataset", {}).items()]
    if "macro" in result:
        rows.append(_row("macro", {key: value for key, value in result["macro"].items() if key != "n"}))
    rows.append(_row("overall", result))
    lines = [f"### {title}", "", "| " + " | ".join(HEADER) + " |", "|---|---:|---:|---:|---:|---:|", *rows]
    return "\n".join(lines) + "\n"


def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """Mean and the half-width of a t-interval over seeds (None for a single value: no spread to measure)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    quantile = stats.t.ppf(0.5 + confidence / 2, df=len(values) - 1)
    return mean, float(quantile * statistics.stdev(values) / math.sqrt(len(values)))


def seed_table(rows: list[dict[str, Any]]) -> str:
    """One line per arm (in order of first appearance): test EM per hop and overall as mean ± 95% CI over the arm's
    seeds, mean policy-generated tokens and wall-clock seconds. Each row: ``arm``, ``policy_tokens``, ``wall_s`` and
    ``test`` (an eval result with ``em`` and ``by_hops``)."""
    lines = ["| arm | seeds | 1-hop | 2-hop | 3-hop | 4-hop | all | policy tokens | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        cells = []
        for key in ("1", "2", "3", "4", "all"):
            values = [r["test"]["em"] if key == "all" else r["test"]["by_hops"][key]["em"] for r in mine]
            mean, half = mean_ci(values)
            cells.append(f"{mean:.3f}" + (f" ± {half:.3f}" if half is not None else ""))
        tokens = statistics.fmean(r["policy_tokens"] for r in mine)
        wall = statistics.fmean(r["wall_s"] for r in mine)
        lines.append(f"| {arm} | {len(mine)} | " + " | ".join(cells) + f" | {tokens:,.0f} | {wall:.0f} |")
    return "\n".join(lines) + "\n"
