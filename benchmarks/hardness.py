"""Where step-level rewards pay off: the hardness study's start measurements and its report.

    # a start's properties under a setting (greedy dev EM by hops, sampled success, wrong decisions per failure)
    python benchmarks/hardness.py start --sft START --setting configs/hardness/hard.yaml \
        --out results/hardness/starts/hard-base.json
    # the same start under several budgets at once (choosing a setting's budget_slack from the start's properties)
    python benchmarks/hardness.py start --sft START --setting configs/hardness/hard.yaml --slacks 1 2 3 4 --out F.json
    # every comparison under results/hardness/<setting>-<size>/compare.json → report.json, report.md, the figure
    python benchmarks/hardness.py report --root results/hardness

A comparison per setting × policy size is one ``benchmarks/compare.py`` output directory (``--out
results/hardness/hard-base``); ``benchmarks/hardness.sh`` runs the whole grid in its order. The definitions of the
threshold, tokens to it and the AUC are in ``slate.eval.curves`` (fixed before the runs; docs/experiments.md).

A wrong decision is a step the oracle judge (what a perfect judge would say, from the gold chain) scores below +1 on
its action: a search that does not name the next hop's entity (vague, look-alike, repeated, off target), an answer
that is not an exact match, or an invalid step; answers forced at the budget are the budget's, not a decision, and
are not counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path

from slate.config import load_config
from slate.data.records import read_qa_jsonl
from slate.eval.curves import area_under_curve, ratio_interval, threshold, tokens_to_threshold
from slate.eval.evaluate import report
from slate.eval.metrics import exact_match
from slate.eval.tables import mean_ci
from slate.judge.oracle import OracleJudge
from slate.retrieval.bm25 import Bm25Retriever
from slate.rewards.judged import JudgedStepReward
from slate.rollout.engine import RolloutEngine
from slate.rollout.episode import Episode
from slate.rollout.policy import load_hf_policy
from slate.runtime import describe_cpu

logger = logging.getLogger("hardness")
SETTINGS_ORDER = ("default", "medium", "hard")
SIZES_ORDER = ("small", "base", "large")


def wrong_decisions(episode: Episode) -> int:
    """Steps whose action the oracle judge scores below +1 (scores written by ``JudgedStepReward``); forced answers
    are not decisions."""
    count = 0
    for step in episode.steps:
        if step.is_forced:
            continue
        action = step.scores.get("query_score", step.scores.get("answer_score", step.scores.get("action_score")))
        count += action is None or action < 1
    return count


def decision_stats(episodes: list[Episode]) -> dict[str, float]:
    """Mean wrong decisions per failed trajectory (and per successful one), and the share of failures."""
    JudgedStepReward(OracleJudge(), max_steps=99, score_forced_answer=False).score_episodes(episodes)
    failed = [e for e in episodes if not exact_match(e.final_answer, e.record.golden_answers)]
    solved = [e for e in episodes if e not in failed]
    return {"trajectories": len(episodes), "failed": len(failed),
            "wrong_decisions_per_failure": statistics.fmean(wrong_decisions(e) for e in failed) if failed else 0.0,
            "wrong_decisions_per_success": statistics.fmean(wrong_decisions(e) for e in solved) if solved else 0.0}


def measure_start(args: argparse.Namespace) -> None:
    slacks = args.slacks or [None]
    rows = {}
    for slack in slacks:
        overrides = [f"rollout.budget_slack={slack}"] if slack is not None else []
        config = load_config(["configs/searchr1-tiny.yaml", *args.setting], overrides)
        world = Path(args.world or config.world.dir)
        retriever = Bm25Retriever.from_corpus_cached(world / "corpus.jsonl", world / "bm25_index")
        engine = RolloutEngine(load_hf_policy(args.sft), retriever, config.rollout, config.retrieval.top_k,
                               seed=args.seed)
        dev = read_qa_jsonl(world / "dev.jsonl")
        began = time.perf_counter()
        greedy = []
        for start in range(0, len(dev), 64):
            greedy += engine.rollout(dev[start:start + 64], copies=1, greedy=True)
        greedy_result = report(greedy)
        hardest = max(int(h) for h in greedy_result["by_hops"])
        bucket = [r for r in dev if r.hops == hardest][: args.sampled_questions]
        sampled = []
        for start in range(0, len(bucket), 32):
            sampled += engine.rollout(bucket[start:start + 32], copies=args.samples)
        per_question = [sampled[i:i + args.samples] for i in range(0, len(sampled), args.samples)]
        successes = [[exact_match(e.final_answer, e.record.golden_answers) for e in group] for group in per_question]
        key = "default budget" if slack is None else f"budget_slack={slack}"
        rows[key] = {
            "budget_slack": slack, "dev_questions": len(dev), "greedy": {
                "em": greedy_result["em"], "by_hops": {h: r["em"] for h, r in greedy_result["by_hops"].items()},
                "searches": greedy_result["searches"], **decision_stats(greedy)},
            "hardest_bucket": hardest, "sampled": {
                "questions": len(bucket), "samples_per_question": args.samples,
                "temperature": config.rollout.temperature,
                "success_rate": statistics.fmean(s for group in successes for s in group),
                "questions_with_a_success": statistics.fmean(any(group) for group in successes),
                **decision_stats(sampled)},
            "seconds": round(time.perf_counter() - began, 1)}
        logger.info("%s: greedy EM %.3f by hops %s; %d-hop sampled success %.3f (%.2f of questions); wrong decisions "
                    "per failure: greedy %.2f, sampled %.2f", key, greedy_result["em"], rows[key]["greedy"]["by_hops"],
                    hardest, rows[key]["sampled"]["success_rate"], rows[key]["sampled"]["questions_with_a_success"],
                    rows[key]["greedy"]["wrong_decisions_per_failure"],
                    rows[key]["sampled"]["wrong_decisions_per_failure"])
    out = {"start": str(args.sft), "setting": [str(s) for s in args.setting], "measured": rows,
           "machine": {**describe_cpu(), "processor": platform.processor() or platform.machine()},
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "command": "python benchmarks/hardness.py start " + " ".join(args.argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: {"greedy": v["greedy"]["by_hops"], "sampled_success": v["sampled"]["success_rate"],
                          "wrong_per_failure": v["sampled"]["wrong_decisions_per_failure"]} for k, v in rows.items()},
                     indent=1))


# -- the report ---------------------------------------------------------------------------------------------------
def comparison_dirs(root: Path) -> list[tuple[str, str, Path]]:
    """(setting, size, directory) of every ``<setting>-<size>/compare.json`` under ``root``, in study order."""
    found = []
    for path in sorted(root.glob("*-*/compare.json")):
        setting, _, size = path.parent.name.partition("-")
        if setting in SETTINGS_ORDER and size in SIZES_ORDER:
            found.append((setting, size, path.parent))
    return sorted(found, key=lambda f: (SETTINGS_ORDER.index(f[0]), SIZES_ORDER.index(f[1])))


def curve_of(row: dict) -> list[tuple[float, float]]:
    return [(p["tokens"], p["em"]) for p in row["curve"]]


def study_rows(setting: str, size: str, rows: list[dict], budget: float) -> tuple[list[dict], dict]:
    """The report's rows of one comparison (one per arm × seed, sweep runs left out) and its threshold."""
    runs = [r for r in rows if r["arm"] != "start" and "sweep_lr" not in r and "superseded" not in r]
    start = next(r for r in rows if r["arm"] == "start")
    start_em = start["dev"]["em"]
    curved = [r for r in runs if len(r.get("curve", [])) > 1]
    finals: dict[str, list[float]] = {}
    for r in curved:
        finals.setdefault(r["arm"], []).append(r["curve"][-1]["em"])
    best_arm = max(finals, key=lambda arm: statistics.fmean(finals[arm])) if finals else None
    level = threshold(start_em, statistics.fmean(finals[best_arm])) if best_arm else None
    out = []
    for r in runs:
        row = {"setting": setting, "policy_size": r.get("policy_parameters"), "size": size, "arm": r["arm"],
               "seed": r["seed"], "policy_tokens": r["policy_tokens"], "curve": r.get("curve", []),
               "test": {"em": r["test"]["em"],
                        "by_hops": {h: v["em"] for h, v in r["test"].get("by_hops", {}).items()}},
               "wall_s": r["wall_s"], "machine": r.get("machine"),
               "optimizer_steps_per_rl_step": r.get("diagnostics", {}).get("optimizer_steps_per_rl_step")}
        if level is not None and len(row["curve"]) > 1:
            row["tokens_to_threshold"], row["reached_threshold"] = tokens_to_threshold(curve_of(r), level, budget)
            row["auc"] = area_under_curve(curve_of(r), budget)
        out.append(row)
    return out, {"start_dev_em": start_em, "best_arm": best_arm, "threshold": level,
                 "start_test": {"em": start["test"]["em"],
                                "by_hops": {h: v["em"] for h, v in start["test"].get("by_hops", {}).items()}}}


def write_report(args: argparse.Namespace) -> None:
    report_rows, thresholds, settings = [], {}, {}
    for setting, size, directory in comparison_dirs(args.root):
        rows = json.loads((directory / "compare.json").read_text())
        budget = max((r["config"]["trainer"]["token_budget"] for r in rows if "config" in r), default=None)
        if budget is None:
            continue
        mine, info = study_rows(setting, size, rows, budget)
        report_rows += mine
        thresholds[f"{setting}-{size}"] = {**info, "budget": budget}
        start_file = args.root / "starts" / f"{setting}-{size}.json"
        if start_file.is_file():
            settings[f"{setting}-{size}"] = json.loads(start_file.read_text())
    out = {"rows": report_rows, "thresholds": thresholds, "settings": settings,
           "definitions": "slate.eval.curves (threshold = start + 0.8 x best arm's gain; censored at the budget)"}
    (args.root / "report.json").write_text(json.dumps(out, indent=1) + "\n")
    (args.root / "report.md").write_text(report_markdown(report_rows, thresholds))
    plot_report(report_rows, thresholds, args.root / "hardness.png")
    print((args.root / "report.md").read_text())


def _cell(values: list[float], fmt: str = "{:.3f}") -> str:
    if not values:
        return "–"
    mean, half = mean_ci(values)
    return fmt.format(mean) + (f" ± {fmt.format(half)}" if half is not None else "")


def report_markdown(rows: list[dict], thresholds: dict[str, dict]) -> str:
    lines = ["# Where step-level rewards pay off", "",
             "Per setting × policy size: each arm's tokens to the threshold (start + 80% of the best arm's gain; runs "
             "that never reach it count as the budget, `reached` says how many did), the AUC (mean dev EM over the "
             "budget) and test EM, mean ± 95% t-interval over seeds.", ""]
    for key, info in thresholds.items():
        setting, size = key.split("-")
        mine = [r for r in rows if (r["setting"], r["size"]) == (setting, size)]
        lines += [f"## {key}", "", f"Start dev EM {info['start_dev_em']:.3f}, threshold "
                  f"{info['threshold']:.3f} (best arm {info['best_arm']}), budget {info['budget']:,} tokens.", "",
                  "| arm | seeds | tokens to threshold | reached | AUC | test EM |", "|---|---|---|---|---|---|"]
        for arm in dict.fromkeys(r["arm"] for r in mine):
            arm_rows = [r for r in mine if r["arm"] == arm]
            ttt = [r["tokens_to_threshold"] for r in arm_rows if "tokens_to_threshold" in r]
            lines.append(f"| {arm} | {len(arm_rows)} | {_cell(ttt, '{:,.0f}')} | "
                         f"{sum(r.get('reached_threshold', False) for r in arm_rows)}/{len(arm_rows)} | "
                         f"{_cell([r['auc'] for r in arm_rows if 'auc' in r])} | "
                         f"{_cell([r['test']['em'] for r in arm_rows])} |")
        ratio = slate_ratio(mine)
        if ratio is not None:
            value, low, high = ratio
            interval = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
            lines += ["", f"SLATE / Search-R1 tokens to threshold: {value:.2f}{interval}."]
        lines.append("")
    return "\n".join(lines) + "\n"


def slate_ratio(rows: list[dict]) -> tuple[float, float | None, float | None] | None:
    slate = [r["tokens_to_threshold"] for r in rows if r["arm"] == "slate" and "tokens_to_threshold" in r]
    searchr1 = [r["tokens_to_threshold"] for r in rows if r["arm"] == "searchr1" and "tokens_to_threshold" in r]
    if not slate or not searchr1 or min(searchr1) <= 0:
        return None
    return ratio_interval(slate, searchr1)


def plot_report(rows: list[dict], thresholds: dict[str, dict], path: Path) -> None:
    """Left: SLATE / Search-R1 tokens to threshold against the setting, one line per policy size. Right: the dense
    dev-EM curves of the hard setting at the base size, mean over seeds, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from slate.eval.plots import aggregate_seeds, arm_colour

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for size in SIZES_ORDER:
        xs, ys, lows, highs = [], [], [], []
        for index, setting in enumerate(SETTINGS_ORDER):
            ratio = slate_ratio([r for r in rows if (r["setting"], r["size"]) == (setting, size)])
            if ratio is None:
                continue
            xs.append(index)
            ys.append(ratio[0])
            lows.append(ratio[0] - (ratio[1] if ratio[1] is not None else ratio[0]))
            highs.append((ratio[2] if ratio[2] is not None else ratio[0]) - ratio[0])
        if xs:
            left.errorbar(xs, ys, yerr=[lows, highs], marker="o", capsize=4, label=f"policy {size}")
    left.axhline(1.0, color="grey", lw=0.8, ls="--")
    left.set_xticks(range(len(SETTINGS_ORDER)), SETTINGS_ORDER)
    left.set_ylabel("SLATE / Search-R1 tokens to threshold")
    left.set_title("below 1: SLATE reaches the threshold sooner")
    left.legend()
    hard = [r for r in rows if (r["setting"], r["size"]) == ("hard", "base") and len(r["curve"]) > 1]
    for arm in dict.fromkeys(r["arm"] for r in hard):
        curves = [[(p["tokens"], p["em"]) for p in r["curve"]] for r in hard if r["arm"] == arm]
        agg = aggregate_seeds(curves)
        right.plot(agg.tokens, agg.mean, label=arm, color=arm_colour(arm))
        right.fill_between(agg.tokens, agg.low, agg.high, color=arm_colour(arm), alpha=0.15)
    if "hard-base" in thresholds and thresholds["hard-base"]["threshold"] is not None:
        right.axhline(thresholds["hard-base"]["threshold"], color="grey", lw=0.8, ls=":")
    right.set_xlabel("policy tokens")
    right.set_ylabel("dev EM (greedy)")
    right.set_title("hard setting, base policy: dev EM against tokens")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    import sys

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="measure a start's properties under a setting")
    start.add_argument("--sft", type=Path, required=True)
    start.add_argument("--setting", type=Path, nargs="*", default=[])
    start.add_argument("--world", type=Path, default=None)
    start.add_argument("--slacks", type=int, nargs="*", default=None)
    start.add_argument("--samples", type=int, default=5, help="sampled trajectories per hardest-bucket question")
    start.add_argument("--sampled-questions", type=int, default=100)
    start.add_argument("--seed", type=int, default=0)
    start.add_argument("--out", type=Path, required=True)
    rep = commands.add_parser("report", help="aggregate the comparisons under --root")
    rep.add_argument("--root", type=Path, default=Path("results/hardness"))
    args = parser.parse_args()
    args.argv = sys.argv[2:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    measure_start(args) if args.command == "start" else write_report(args)


if __name__ == "__main__":
    main()
