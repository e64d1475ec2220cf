"""Learning-curve plots: dev EM against policy-generated tokens, one colour per arm, mean over seeds + a band.

A curve is a list of points ``{"tokens": float, "em": float, "em_by_hops": {"1": float, ...}}``; ``em_by_hops`` is
optional (older results carry ``tokens`` and ``em`` only). A run that starts at 0 tokens shows its start's dev EM.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

# fixed colours, so an arm keeps its colour across plots whatever subset of arms a file holds
ARM_COLOURS = {
    "searchr1": "#1f77b4", "stepsearch": "#ff7f0e", "slate": "#2ca02c", "slate_full": "#d62728",
    "slate_em": "#9467bd", "slate_noise0.1": "#8c564b", "slate_noise0.3": "#e377c2", "slate_std_floor": "#17becf",
    "continued_sft": "#7f7f7f", "slate_noise0.2": "#e377c2", "igpo": "#bcbd22", "slate_ig": "#000000",
}
_SPARE_COLOURS = ["#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d"]
BAND = "min–max"
LEGEND_TITLE = f"line: mean over seeds,\nwhere every seed has data\nband: {BAND} over seeds\ndots: evaluations"


def arm_colour(arm: str) -> str:
    """The arm's colour; ``slate@sft_d160`` (another start) shares ``slate``'s. Unknown arms: a hash of the name."""
    base = arm.split("@", 1)[0]
    return ARM_COLOURS.get(base) or _SPARE_COLOURS[zlib.crc32(base.encode()) % len(_SPARE_COLOURS)]


@dataclass(frozen=True)
class SeedAggregate:
    tokens: np.ndarray  # the shared grid
    mean: np.ndarray
    low: np.ndarray  # min over seeds at each grid point
    high: np.ndarray  # max over seeds
    seeds: int


def aggregate_seeds(curves: list[list[tuple[float, float]]]) -> SeedAggregate:
    """Mean and min–max over seeds of curves ``[(tokens, em), ...]`` on one token grid.

    Seeds are evaluated at slightly different token counts, so each curve is interpolated linearly onto the grid:
    every measured x of any seed, restricted to the span all seeds cover (latest first point to earliest last
    point), so that no seed is extrapolated.
    """
    curves = [sorted(c) for c in curves if c]
    if not curves:
        raise ValueError("no curve has a point")
    start, end = max(c[0][0] for c in curves), min(c[-1][0] for c in curves)
    if start > end:
        raise ValueError(f"the seeds' curves share no token span (latest start {start:g} > earliest end {end:g})")
    grid = np.array(sorted({x for c in curves for x, _ in c if start <= x <= end}))
    values = np.stack([np.interp(grid, [x for x, _ in c], [y for _, y in c]) for c in curves])
    return SeedAggregate(grid, values.mean(axis=0), values.min(axis=0), values.max(axis=0), len(curves))


def curve_panels(rows: list[dict]) -> list[str]:
    """``["all"]``, plus ``"1"``..``"4"`` (hops) when any curve point carries per-hop EM, plus ``"searches"`` when a
    row carries ``searches_curve`` (searches per question in the training rollouts, ``{"tokens", "searches"}`` per
    RL step)."""
    hops = {h for row in rows for point in row.get("curve", []) for h in point.get("em_by_hops", {})}
    return ["all", *sorted(hops, key=int), *(["searches"] if any(r.get("searches_curve") for r in rows) else [])]


def _series(row: dict, panel: str) -> list[tuple[float, float]]:
    if panel == "searches":
        return [(p["tokens"], p["searches"]) for p in row.get("searches_curve", [])]
    if panel == "all":
        return [(p["tokens"], p["em"]) for p in row["curve"]]
    return [(p["tokens"], p["em_by_hops"][panel]) for p in row["curve"] if panel in p.get("em_by_hops", {})]


def _base(row: dict) -> str:
    return row["arm"].partition("@")[0]


def _start(row: dict) -> str:
    return row["arm"].partition("@")[2]


def figure_rows(rows: list[dict], groups: dict[str, list[str]] | None = None) -> list[tuple[str, list[dict]]]:
    """The figure's rows of panels: one per (start checkpoint, group of arms) that has curves.

    ``slate@sft_d160`` trained from another start (``sft_d160``) gets its own row, as its EM is on another scale.
    ``groups`` names sets of base arm names (an arm may sit in several, e.g. a reference arm); the rest go to
    "other arms"; a group whose arms are all in rows above is left out. Without groups, each start has one row.
    """
    rows = [r for r in rows if r.get("curve")]
    named = groups or {}
    grouped = {arm for arms in named.values() for arm in arms}
    figure: list[tuple[str, list[dict]]] = []
    for start in dict.fromkeys(_start(r) for r in rows):
        start_rows = [r for r in rows if _start(r) == start]
        rest = [_base(r) for r in start_rows if _base(r) not in grouped]
        where = f"from {start}" if start else "from the --sft start"
        shown: set[str] = set()
        for name, arms in [*named.items(), ("other arms" if named else "", rest)]:
            members = [r for r in start_rows if _base(r) in arms]
            if {r["arm"] for r in members} - shown:  # a group holding only arms shown above adds nothing
                figure.append((f"{name}, {where}" if name else where, members))
                shown |= {r["arm"] for r in members}
    return figure


def plot_curves(rows: list[dict], path: Path, groups: dict[str, list[str]] | None = None) -> None:
    """Dev EM against policy tokens: a panel per hop count (columns) and per start and group of arms (rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rows = [r for r in rows if r.get("curve")]
    figure = figure_rows(rows, groups) or [("", [])]
    panels = curve_panels(rows)
    max_tokens = max((p["tokens"] for r in rows for p in [*r["curve"], *r.get("searches_curve", [])]),
                     default=1.0) or 1.0
    fig, axes = plt.subplots(len(figure), len(panels), figsize=(3.6 * len(panels) + 2.4, 2.9 * len(figure)),
                             squeeze=False, sharex=True)
    for row_index, (row_title, members) in enumerate(figure):
        for panel_index, panel in enumerate(panels):
            ax = axes[row_index][panel_index]
            for arm in dict.fromkeys(r["arm"] for r in members):
                seeds = [s for s in (_series(r, panel) for r in members if r["arm"] == arm) if s]
                if not seeds:
                    continue
                try:
                    agg = aggregate_seeds(seeds)
                except ValueError as error:
                    logger.warning("%s (%s): not plotted: %s", arm, panel, error)
                    continue
                colour = arm_colour(arm)
                label = f"{arm.partition('@')[0]} ({agg.seeds} seed{'s' if agg.seeds > 1 else ''})"
                # the measured evaluations as dots: the line between them is interpolated
                ax.scatter([x for s in seeds for x, _ in s], [y for s in seeds for _, y in s], color=colour,
                           s=12 if agg.seeds == 1 else 6, alpha=0.6, lw=0)
                ax.plot(agg.tokens, agg.mean, color=colour, lw=1.8, label=label)
                if agg.seeds > 1:
                    ax.fill_between(agg.tokens, agg.low, agg.high, color=colour, alpha=0.12, lw=0)
            title = {"all": "all questions", "searches": "searches per question (training rollouts)"}.get(
                panel, f"{panel}-hop questions")
            # the row's name once, on its first panel: the panels of a row share it
            ax.set_title(f"{title}: {row_title}" if row_title and panel_index == 0 else title, fontsize=9)
            ax.set_xlim(0, max_tokens * 1.02)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8, labelbottom=True)
            if panel_index == 0:
                ax.set_ylabel("dev EM (greedy)", fontsize=9)
            if row_index == len(figure) - 1:
                ax.set_xlabel("policy-generated tokens", fontsize=9)
        handles, labels = axes[row_index][0].get_legend_handles_labels()
        if handles:
            axes[row_index][-1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1),
                                       title=LEGEND_TITLE if row_index == 0 else None, title_fontsize=7,
                                       frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
