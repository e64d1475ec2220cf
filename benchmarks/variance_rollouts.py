"""The variance comparison of ``benchmarks/variance.py`` on real rollouts of a policy in the synthetic world.

Both samplers use the same dense rewards: SLATE's judged step rewards with the oracle judge. Full-trajectory
sampling draws k trajectories per question and scores every step; truncated sampling draws k siblings at every step
of one growing prefix (the prefix extended as SLATE does, softmax(A/η)). ``compare_rollout_variances`` then gives the
step-averaged variance ratio (full / truncated, mean baseline) for the summed-reward and return-to-go estimators.

    python benchmarks/variance_rollouts.py --policy runs/sft --world runs/world --questions 48 --seed 0
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from slate.config import load_config
from slate.data.records import read_qa_jsonl
from slate.eval.variance import compare_rollout_variances
from slate.judge.oracle import OracleJudge
from slate.methods import judged_reward
from slate.retrieval.bm25 import Bm25Retriever
from slate.rollout.engine import RolloutEngine
from slate.rollout.episode import StepToScore
from slate.rollout.policy import load_policy
from slate.rollout.samplers import TruncatedStepSampler


class RecordingReward:
    """Passes scores through and keeps each step's k sibling rewards, keyed by (question id, t)."""

    def __init__(self, inner, group_size: int) -> None:
        self.inner = inner
        self.group_size = group_size
        self.groups: dict[tuple[str, int], list[float | None]] = {}

    def score_steps(self, targets: list[StepToScore]) -> list[float | None]:
        rewards = self.inner.score_steps(targets)
        for start in range(0, len(targets), self.group_size):
            target = targets[start]
            self.groups[(target.episode.record.id, target.step_index)] = rewards[start:start + self.group_size]
        return rewards

    def metrics(self) -> dict[str, float]:
        return self.inner.metrics()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--world", type=Path, default=Path("runs/world"))
    parser.add_argument("--config", type=Path, default=Path("configs/slate-tiny.yaml"))
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = load_config(args.config, [f"world.dir={args.world}"])
    k, budget = config.rollout.group_size, config.rollout.max_steps
    retriever = Bm25Retriever.from_corpus_cached(args.world / "corpus.jsonl", args.world / "bm25_index")
    engine = RolloutEngine(load_policy(config.model, args.policy), retriever, config.rollout, config.retrieval.top_k,
                           seed=args.seed)
    records = read_qa_jsonl(args.world / "dev.jsonl")[: args.questions]
    reward = judged_reward(config, OracleJudge())

    episodes = engine.rollout(records, copies=k)
    reward.score_episodes(episodes)
    full = np.zeros((len(records), k, budget))  # steps after an episode ended, or unscored, earn 0
    for index, episode in enumerate(episodes):
        for t, step in enumerate(episode.steps[:budget]):
            full[index // k, index % k, t] = step.reward or 0.0

    recorder = RecordingReward(reward, k)
    TruncatedStepSampler(recorder, k, config.algorithm.selection_temperature, seed=args.seed).sample(engine, records)
    truncated = np.full((len(records), k, budget), np.nan)
    for row, record in enumerate(records):
        for t in range(1, budget + 1):
            group = recorder.groups.get((record.id, t))
            if group is not None and all(r is not None for r in group):
                truncated[row, :, t - 1] = group

    report = compare_rollout_variances(full, truncated, np.random.default_rng(args.seed))
    result = {
        "policy": str(args.policy), "questions": len(records), "k": k, "B": budget, "seed": args.seed,
        "summed_ratio": report.summed_ratio.value, "summed_ci": [report.summed_ratio.low, report.summed_ratio.high],
        "return_to_go_ratio": report.return_to_go_ratio.value,
        "return_to_go_ci": [report.return_to_go_ratio.low, report.return_to_go_ratio.high],
        "per_step_variance": {"summed": report.summed_variance.round(4).tolist(),
                              "return_to_go": report.return_to_go_variance.round(4).tolist(),
                              "truncated": np.round(report.truncated_variance, 4).tolist()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
