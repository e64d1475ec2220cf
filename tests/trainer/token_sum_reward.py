"""A reward for trainer tests on a random policy: a deterministic function of the sampled tokens."""

from __future__ import annotations


class TokenSumReward:
    """A random policy never answers right, so every real reward would be flat and nothing would train. This one
    is a deterministic function of the sampled tokens, which gives every group a spread of rewards."""

    def score_steps(self, targets):
        for target in targets:
            target.step.reward = float(sum(target.step.token_ids) % 5)
        return [t.step.reward for t in targets]

    def score_episodes(self, episodes):
        for episode in episodes:
            for step in episode.steps:
                step.reward = float(sum(step.token_ids) % 5)

    def metrics(self):
        return {}
