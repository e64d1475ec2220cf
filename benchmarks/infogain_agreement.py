"""How far the information-gain reward agrees with the oracle judge, on the same SLATE candidates.

SLATE's truncated sampler (``slate_ig``: every search candidate retrieved before it is scored) runs from a policy
without training; at every step each group of k siblings is scored twice, by ``InfoGainReward`` (what ``slate_ig``
trains on) and by the oracle judge (``slate``'s reward: ternary think / query / answer scores from the gold chain).
The chosen candidate follows the information gain, as in a ``slate_ig`` run. Printed, and written to ``--out``:

- Spearman's rank correlation between a search candidate's information gain and the oracle's query score, pooled
  over every search candidate, and per hop of the question;
- the share of sibling groups whose best candidate is the same: the candidate with the highest information-gain
  reward (search or answer) is among those with the highest oracle step reward (think + action + early-answer bonus),
  over groups where the oracle's rewards are not all equal (a group with one best is counted as agreeing only if both
  rewards pick it, ties in the information gain are broken by the lowest index);
- the same share among the search candidates of a group alone (gain vs query score), where at least two searches
  were proposed and their query scores differ;
- the information gain of search candidates by oracle query score (−1 / 0 / +1): mean and count.

    python benchmarks/infogain_agreement.py --init results/start_policy --world runs/world --questions 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from scipy.stats import spearmanr

from slate.config import load_config
from slate.data.records import read_qa_jsonl
from slate.judge.oracle import OracleJudge
from slate.methods import judged_reward
from slate.retrieval.factory import build_retriever
from slate.rollout.episode import StepToScore
from slate.trainer.loop import Trainer


class BothRewards:
    """The information gain for the sampler, the oracle judge's reward kept beside it on every candidate."""

    def __init__(self, infogain, oracle) -> None:
        self.infogain, self.oracle = infogain, oracle
        self.groups: list[list[dict]] = []
        self.group_size = 0

    def score_steps(self, targets: list[StepToScore]) -> list[float | None]:
        judged = self.oracle.score_steps(targets)
        query_scores = [t.step.scores.get("query_score") for t in targets]
        gains = self.infogain.score_steps(targets)  # sets step.reward: the sampler follows the information gain
        for start in range(0, len(targets), self.group_size):
            self.groups.append([{"action": t.step.action, "hops": t.episode.record.hops,
                                 "step": t.step_index, "infogain": g, "oracle": j, "query_score": q}
                                for t, g, j, q in zip(targets[start:start + self.group_size],
                                                      gains[start:start + self.group_size],
                                                      judged[start:start + self.group_size],
                                                      query_scores[start:start + self.group_size], strict=True)])
        return gains

    def metrics(self) -> dict[str, float]:
        return {**self.oracle.metrics(), **self.infogain.metrics()}


def told_apart(group: list[dict], key: str, other: str) -> list[dict] | None:
    """The candidates both rewards scored, or None when there are fewer than two or ``other`` scores them alike."""
    scored = [c for c in group if c[key] is not None and c[other] is not None]
    return scored if len(scored) >= 2 and len({c[other] for c in scored}) > 1 else None


def best_agrees(group: list[dict], key: str, other: str) -> bool | None:
    """Is ``key``'s best candidate among ``other``'s best? None when ``other`` does not tell the candidates apart."""
    if (scored := told_apart(group, key, other)) is None:
        return None
    pick = max(scored, key=lambda c: c[key])  # the first of equals, as argmax would
    return pick[other] == max(c[other] for c in scored)


def chance_of_best(group: list[dict], other: str) -> float | None:
    """The share ``best_agrees`` would have if the pick were drawn at random among the scored candidates."""
    if (scored := told_apart(group, "infogain", other)) is None:
        return None
    best = max(c[other] for c in scored)
    return sum(c[other] == best for c in scored) / len(scored)


def summarise(groups: list[list[dict]]) -> dict:
    searches = [c for g in groups for c in g if c["action"] == "search" and c["infogain"] is not None
                and c["query_score"] is not None]
    by_hops: dict[int, list[dict]] = defaultdict(list)
    for c in searches:
        by_hops[c["hops"]].append(c)

    def rho(cands: list[dict]) -> float | None:
        if len(cands) < 3 or len({c["query_score"] for c in cands}) < 2 or len({c["infogain"] for c in cands}) < 2:
            return None
        return float(spearmanr([c["infogain"] for c in cands], [c["query_score"] for c in cands]).statistic)

    whole = [best_agrees(g, "infogain", "oracle") for g in groups]
    among_searches = [best_agrees([c for c in g if c["action"] == "search"], "infogain", "query_score")
                      for g in groups]
    best_by_hops = {}
    for hops in sorted({g[0]["hops"] for g in groups if g}):
        mine = [g for g in groups if g and g[0]["hops"] == hops]
        searches_of = [[c for c in g if c["action"] == "search"] for g in mine]
        best_by_hops[str(hops)] = {
            "best_same_share": share([best_agrees(g, "infogain", "oracle") for g in mine]),
            "by_chance": mean_of([chance_of_best(g, "oracle") for g in mine]),
            "best_same_share_searches": share([best_agrees(g, "infogain", "query_score") for g in searches_of]),
            "searches_by_chance": mean_of([chance_of_best(g, "query_score") for g in searches_of])}
    gain_by_score = {str(s): {"mean": statistics.fmean(x) if x else None, "n": len(x)}
                     for s in (-1, 0, 1) for x in [[c["infogain"] for c in searches if c["query_score"] == s]]}
    return {
        "groups": len(groups), "search_candidates": len(searches),
        "spearman_gain_vs_query_score": rho(searches),
        "spearman_by_hops": {str(h): rho(cs) for h, cs in sorted(by_hops.items())},
        "best_same_share": share(whole), "groups_compared": sum(v is not None for v in whole),
        "best_same_share_by_chance": mean_of([chance_of_best(g, "oracle") for g in groups]),
        "best_same_share_searches": share(among_searches),
        "groups_compared_searches": sum(v is not None for v in among_searches),
        "best_same_share_searches_by_chance": mean_of(
            [chance_of_best([c for c in g if c["action"] == "search"], "query_score") for g in groups]),
        "best_same_by_hops": best_by_hops, "gain_by_query_score": gain_by_score,
    }


def mean_of(values: list[float | None]) -> float | None:
    told = [v for v in values if v is not None]
    return statistics.fmean(told) if told else None


def share(flags: list[bool | None]) -> float | None:
    told = [f for f in flags if f is not None]
    return sum(told) / len(told) if told else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/slate_ig-tiny.yaml"))
    parser.add_argument("--init", type=Path, required=True, help="The policy sampled from (not trained).")
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--questions", type=int, default=64, help="Training questions, from the file's start.")
    parser.add_argument("--batch", type=int, default=16, help="Questions sampled together.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="Write the summary and every group as JSON.")
    parser.add_argument("overrides", nargs="*", help="Config overrides (key=value).")
    args = parser.parse_args()

    config = load_config([args.config], [f"world.dir={args.world}", f"trainer.seed={args.seed}", *args.overrides])
    if config.trainer.method != "slate_ig":
        raise SystemExit(f"--config must train slate_ig (it trains {config.trainer.method})")
    records = read_qa_jsonl(args.world / "train.jsonl")[: args.questions]
    scratch = tempfile.TemporaryDirectory(prefix="infogain_agreement_")  # the trainer's run directory: nothing trains
    trainer = Trainer(config, records, build_retriever(config.retrieval, args.world), args.init, Path(scratch.name),
                      args.world)
    both = BothRewards(trainer.sampler.reward, judged_reward(config, OracleJudge(seed=args.seed)))
    both.group_size = config.rollout.group_size
    trainer.sampler.reward = both
    start = time.perf_counter()
    with torch.no_grad():
        for first in range(0, len(records), args.batch):
            trainer.sampler.sample(trainer.engine, records[first:first + args.batch])
    summary = {"init": str(args.init), "world": str(args.world), "questions": len(records), "seed": args.seed,
               "k": config.rollout.group_size, "baseline": config.reward.infogain.baseline,
               "measure": config.reward.infogain.measure, "seconds": round(time.perf_counter() - start, 1),
               "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), **summarise(both.groups)}
    print(json.dumps(summary, indent=1))
    if args.out:  # every group too, a line each, so the summary can be recomputed (summarise)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1) + "\n")
        args.out.with_suffix(".groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in both.groups))


if __name__ == "__main__":
    main()
