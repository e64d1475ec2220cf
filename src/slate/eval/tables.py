"""Markdown tables: the ``slate eval`` result (one row per hop count and per dataset, then macro and overall), and
the seed summary of a method comparison (mean ± 95% t-interval per arm), and each arm's training diagnostics.

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


def _mean_ci_cell(values: list[float]) -> str:
    """``mean ± half-width`` of the 95% t-interval, three decimals; the mean alone for a single value."""
    mean, half = mean_ci(values)
    return f"{mean:.3f}" + (f" ± {half:.3f}" if half is not None else "")


def hop_keys(by_hops: list[dict[str, Any]]) -> list[str]:
    """The hop counts present in any of the ``by_hops`` maps, in numeric order ("1" … "6")."""
    return sorted({key for hops in by_hops for key in hops}, key=int)


def seed_table(rows: list[dict[str, Any]]) -> str:
    """One line per arm (in order of first appearance): test EM per hop and overall as mean ± 95% CI over the arm's
    seeds, mean policy-generated tokens and wall-clock seconds. Each row: ``arm``, ``policy_tokens``, ``wall_s`` and
    ``test`` (an eval result with ``em`` and ``by_hops``)."""
    hops = hop_keys([r["test"].get("by_hops", {}) for r in rows])
    lines = ["| arm | seeds | " + " | ".join(f"{h}-hop" for h in hops) + " | all | policy tokens | wall s |",
             "|---|---|" + "---|" * len(hops) + "---|---|---|"]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        cells = [_mean_ci_cell([r["test"]["em"] if key == "all" else r["test"]["by_hops"][key]["em"] for r in mine])
                 for key in (*hops, "all")]
        tokens = statistics.fmean(r["policy_tokens"] for r in mine)
        wall = statistics.fmean(r["wall_s"] for r in mine)
        lines.append(f"| {arm} | {len(mine)} | " + " | ".join(cells) + f" | {tokens:,.0f} | {wall:.0f} |")
    return "\n".join(lines) + "\n"


def training_diagnostics(metrics: list[dict[str, float]], wall_s: float) -> dict[str, Any]:
    """What one training run did, from its per-step metrics (``metrics.jsonl`` rows): optimizer steps per RL step,
    policy tokens per second, searches per question at the first and last step, and (SLATE) the mean share of sibling
    groups whose advantage signs only the early-answer bonus decided. A key a run never logged is left out."""
    out: dict[str, Any] = {"rl_steps": len(metrics)}
    if not metrics:
        return out
    tokens = metrics[-1].get("rollout/policy_tokens_total", 0.0)
    out["tokens_per_s"] = tokens / wall_s if wall_s > 0 else 0.0
    for key, name in (("update/optimizer_steps", "optimizer_steps_per_rl_step"),
                      ("slate/bonus_only_groups", "bonus_only_groups"),
                      ("slate/bonus_flipped_groups", "bonus_flipped_groups"),
                      ("slate/answer_candidate_share", "answer_candidate_share")):
        values = [m[key] for m in metrics if key in m]
        if values:
            out[name] = statistics.fmean(values)
    searches = [m["rollout/searches"] for m in metrics if "rollout/searches" in m]
    if searches:
        out["searches_first"], out["searches_last"] = searches[0], searches[-1]
    return out


def diagnostics_table(rows: list[dict[str, Any]]) -> str:
    """One line per arm: the mean over its seeds of each ``training_diagnostics`` value ("–" where not logged)."""
    columns = (("rl_steps", "RL steps", "{:.0f}"), ("tokens_per_s", "tokens/s", "{:.0f}"),
               ("optimizer_steps_per_rl_step", "optimizer steps / RL step", "{:.1f}"),
               ("searches_first", "searches (first step)", "{:.2f}"), ("searches_last", "searches (last)", "{:.2f}"),
               ("bonus_only_groups", "groups decided by the bonus alone", "{:.3f}"),
               ("bonus_flipped_groups", "groups a bonus flips", "{:.3f}"))
    lines = ["| arm | " + " | ".join(title for _, title, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r.get("diagnostics", {}) for r in rows if r["arm"] == arm]
        cells = []
        for key, _, fmt in columns:
            values = [d[key] for d in mine if key in d]
            cells.append(fmt.format(statistics.fmean(values)) if values else "–")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def first_evaluation_table(rows: list[dict[str, Any]]) -> str:
    """One line per arm with a learning curve: dev EM per hop and overall at the curve's first point after the start
    (``curve[1]``, the first evaluation during training), mean ± 95% CI over seeds, and the mean tokens it was
    measured at. Where every arm ends near one ceiling, this early point is what tells how fast each one learns.
    Rows without such a point are left out."""
    rows = [r for r in rows if len(r.get("curve", [])) > 1]
    hops = hop_keys([r["curve"][1]["em_by_hops"] for r in rows])
    lines = ["| arm | seeds | policy tokens | " + " | ".join(f"{h}-hop" for h in hops) + " | all |",
             "|---|---|---:|" + "---|" * len(hops) + "---|"]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        points = [r["curve"][1] for r in rows if r["arm"] == arm]
        cells = [_mean_ci_cell([p["em"] if key == "all" else p["em_by_hops"][key] for p in points])
                 for key in (*hops, "all")]
        tokens = statistics.fmean(p["tokens"] for p in points)
        lines.append(f"| {arm} | {len(points)} | {tokens:,.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
