"""The reward-strategy contract: one scalar per step, written in place.

A strategy sets ``Step.reward`` on the steps it rewards and leaves ``None`` on the others (None means "no reward
here", not zero). Outcome rewards put one number on the final step; process rewards put one on every step.
Samplers (``rollout/samplers.py``) turn these into per-token advantages within each group.

Two shapes, one per sampler: ``RewardStrategy.score_episodes`` rewards complete trajectories (k per question);
``StepReward.score_steps`` rewards candidate steps in their context (SLATE's k siblings of a prefix) and returns the
rewards, None for a step it does not score. Both report their counters through ``metrics()``, reset on read.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from slate.rollout.episode import Episode, StepToScore


@runtime_checkable
class RewardStrategy(Protocol):
    def score_episodes(self, episodes: list[Episode]) -> None:
        """Write ``Step.reward`` (and optionally ``Step.scores``) for complete episodes."""
        ...

    def metrics(self) -> dict[str, float]:
        """Counters since the last call, namespaced (``judge/calls``), reset on read; {} when it counts nothing."""
        ...


@runtime_checkable
class StepReward(Protocol):
    def score_steps(self, targets: list[StepToScore]) -> list[float | None]:
        """One reward per target (None: not scored), also written to ``target.step.reward``."""
        ...

    def metrics(self) -> dict[str, float]:
        ...
