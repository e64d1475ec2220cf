"""The reward-strategy contract: fill one scalar per step, in place.

A strategy sets ``Step.reward`` on the steps it rewards and leaves ``None`` on the others (None means "no reward
here", not zero). Outcome rewards put one number on the final step; process rewards put one on every step.
``algorithms.advantages`` turns these into per-token advantages within each group.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from slate.rollout.episode import Episode


@runtime_checkable
class RewardStrategy(Protocol):
    name: str

    def score_episodes(self, episodes: list[Episode]) -> None:
        """Write ``Step.reward`` (and optionally ``Step.scores``) for complete episodes."""
        ...
