"""Search-R1's outcome reward: exact match of the final answer against any golden answer, 0 without an answer.

The reward sits on the last step; earlier steps carry none, so the group-normalised advantage of the whole
trajectory is the normalised outcome (GRPO).
"""

from __future__ import annotations

from slate.eval.metrics import exact_match
from slate.rollout.episode import Episode


class OutcomeEM:
    def score_episodes(self, episodes: list[Episode]) -> None:
        for episode in episodes:
            for step in episode.steps:
                step.reward = None
            if episode.steps:
                episode.steps[-1].reward = exact_match(episode.final_answer, episode.record.golden_answers)

    def metrics(self) -> dict[str, float]:
        return {}
