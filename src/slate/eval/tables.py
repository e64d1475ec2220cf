"""The ``slate eval`` result as a markdown table: one row per hop count and per dataset, then macro and overall.

``result`` is the dict of ``slate.eval.evaluate.report``: overall ``n, em, f1, valid_rate, searches``, optional
``by_hops`` and ``by_dataset`` (each name -> the same five keys) and, with several datasets, ``macro`` (the
unweighted mean over datasets of ``em, f1, valid_rate, searches``; it has no ``n``). Rates print with three
decimals, searches per question with two, as the terminal table does.
"""

from __future__ import annotations

from typing import Any

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
