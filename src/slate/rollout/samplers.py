"""Samplers: which candidates share a group, and what each training sample carries.

- ``FullTrajectorySampler`` (Search-R1, StepSearch, judge-without-truncation): k complete trajectories per
  question; a group is one question; the reward strategy fills step rewards and the advantage of a token is the
  return-to-go of group-normalised step rewards (``process_advantages``), which for a single outcome reward is GRPO.
- ``TruncatedStepSampler`` (SLATE): for t = 1..B, k one-step candidates from the shared prefix; a group is one
  (question, step) prefix; A = group-normalised step reward among the k siblings; every candidate becomes a sample
  carrying its A on its own tokens; the prefix is extended with one candidate drawn from softmax(A / η) (or the best
  one), retrieving if it searched; the episode stops after an answer.

A ``Sample`` is a token sequence with its loss mask, the sampling log-probs and a per-token advantage.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import torch

from slate.algorithms.advantages import (
    bonus_decided,
    group_advantages,
    process_advantages,
    selection_probabilities,
)
from slate.data.records import QARecord
from slate.rewards.base import RewardStrategy
from slate.rewards.judged import StepToScore
from slate.rollout.engine import Candidate, RolloutEngine
from slate.rollout.episode import Episode

logger = logging.getLogger(__name__)


@dataclass
class Sample:
    token_ids: list[int]
    loss_mask: list[bool]
    old_logprobs: list[float]
    advantages: list[float]  # per token; 0 where loss_mask is False
    group_id: str
    prefix_len: int = 0  # leading tokens shared by every sample of the group (never trained): computed once
    # samples whose prefixes nest (SLATE: the steps of one question, each prefix extending the one before) share one
    # prefix forward in the update, the longest (tree packing, trainer/batching.py); None: the group stands alone
    tree_id: str | None = None
    ref_logprobs: list[float] | None = None  # the frozen reference's log-probs, filled once per RL step
    # the oldest policy version among the steps it trains on; None if any of them came from an unknown version
    policy_version: int | None = None

    @property
    def num_policy_tokens(self) -> int:
        return sum(self.loss_mask)


@dataclass
class SampledBatch:
    samples: list[Sample]
    episodes: list[Episode]  # the trajectories (for SLATE: the extended prefixes, one per question)
    metrics: dict[str, float] = field(default_factory=dict)


class StepReward(Protocol):
    def score_steps(self, targets: list[StepToScore]) -> list[float | None]: ...


class Sampler(Protocol):
    def sample(self, records: list[QARecord]) -> SampledBatch: ...


class FullTrajectorySampler:
    def __init__(self, engine: RolloutEngine, reward: RewardStrategy, group_size: int, adv_eps: float = 1e-6,
                 adv_std_floor: float = 0.0) -> None:
        self.engine = engine
        self.reward = reward
        self.group_size = group_size
        self.adv_eps = adv_eps
        self.adv_std_floor = adv_std_floor

    def sample(self, records: list[QARecord]) -> SampledBatch:
        k = self.group_size
        episodes = self.engine.rollout(records, copies=k)
        start = time.perf_counter()
        self.reward.score_episodes(episodes)
        reward_s = time.perf_counter() - start
        samples: list[Sample] = []
        degenerate = 0
        for group_index, record in enumerate(records):
            group = episodes[group_index * k:(group_index + 1) * k]
            width = max(len(e.steps) for e in group)
            rewards = torch.zeros(k, width)
            has_reward = torch.zeros(k, width, dtype=torch.bool)
            for i, episode in enumerate(group):
                for j, step in enumerate(episode.steps):
                    if step.reward is not None:
                        rewards[i, j], has_reward[i, j] = step.reward, True
            present = rewards[has_reward]
            degenerate += int(present.numel() == 0 or bool((present == present[0]).all()))
            step_advantages = process_advantages(rewards, has_reward, self.adv_eps, self.adv_std_floor)  # (k, S)
            for i, episode in enumerate(group):
                mask = episode.loss_mask()
                per_token = [float(step_advantages[i, s]) if m and s >= 0 else 0.0
                             for s, m in zip(episode.step_index_of_tokens(), mask, strict=True)]
                samples.append(Sample(episode.token_ids(), mask, episode.old_logprobs(), per_token, record.id,
                                      policy_version=oldest_version(episode)))
        metrics = {"adv/zero_signal_groups": degenerate / max(1, len(records)), "time/reward_s": reward_s}
        return SampledBatch(samples=samples, episodes=episodes, metrics=metrics)


class TruncatedStepSampler:
    def __init__(self, engine: RolloutEngine, reward: StepReward, group_size: int, selection_temperature: float,
                 greedy_selection: bool = False, adv_eps: float = 1e-6, seed: int = 0,
                 adv_std_floor: float = 0.0) -> None:
        self.engine = engine
        self.reward = reward
        self.group_size = group_size
        self.selection_temperature = selection_temperature
        self.greedy_selection = greedy_selection
        self.adv_eps = adv_eps
        self.adv_std_floor = adv_std_floor
        self.generator = torch.Generator().manual_seed(seed)

    def choose(self, advantages: torch.Tensor) -> int:
        """The candidate that extends the prefix: argmax A, or a draw from softmax(A / η)."""
        if self.greedy_selection:
            return int(advantages.argmax())
        probs = selection_probabilities(advantages, self.selection_temperature)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def sample(self, records: list[QARecord]) -> SampledBatch:
        k = self.group_size
        episodes = self.engine.new_episodes(records, copies=1)
        samples: list[Sample] = []
        counters: Counter[str] = Counter()
        reward_s = 0.0
        while True:
            active = [e for e in episodes if not self.engine.is_done(e)]
            if not active:
                break
            proposals = self.engine.propose(active, k)
            targets = [StepToScore(c.episode, c.step, len(c.episode.steps) + 1) for group in proposals for c in group]
            start = time.perf_counter()
            rewards = self.reward.score_steps(targets)
            reward_s += time.perf_counter() - start
            chosen: list[Candidate] = []
            for group_index, group in enumerate(proposals):
                group_rewards = rewards[group_index * k:(group_index + 1) * k]
                if any(r is None for r in group_rewards):  # unscored (a forced answer): no training signal
                    counters["groups/unscored"] += 1
                    chosen.append(group[0])
                    continue
                counters["groups/scored"] += 1
                reward_tensor = torch.tensor(group_rewards, dtype=torch.float32)
                counters["groups/zero_signal"] += int(bool((reward_tensor == reward_tensor[0]).all()))
                bonuses = torch.tensor([c.step.scores.get("early_answer_bonus", 0.0) for c in group])
                only, flipped = bonus_decided(reward_tensor, bonuses)
                counters["groups/bonus_only"] += int(only)
                counters["groups/bonus_flipped"] += int(flipped)
                counters["candidates/answers"] += sum(c.step.action == "answer" for c in group)
                advantages = group_advantages(reward_tensor[None], self.adv_eps, self.adv_std_floor)[0]
                episode = group[0].episode
                prefix = episode.token_ids()
                for index, candidate in enumerate(group):
                    samples.append(_candidate_sample(prefix, candidate, float(advantages[index]),
                                                     f"{episode.record.id}/t{len(episode.steps) + 1}",
                                                     tree_id=episode.record.id))
                pick = self.choose(advantages)
                counters["selection/picked_best"] += int(group_rewards[pick] == max(group_rewards))
                chosen.append(group[pick])
            self.engine.execute(chosen)
        scored = max(1, counters["groups/scored"])
        metrics = {"adv/zero_signal_groups": counters["groups/zero_signal"] / scored,
                   "slate/groups": float(counters["groups/scored"]),
                   "slate/picked_best_rate": counters["selection/picked_best"] / scored,
                   "slate/unscored_groups": float(counters["groups/unscored"]), "time/reward_s": reward_s,
                   # the early-answer tie: groups whose advantage signs only the bonus λ(B − t)/B decided
                   "slate/bonus_only_groups": counters["groups/bonus_only"] / scored,
                   "slate/bonus_flipped_groups": counters["groups/bonus_flipped"] / scored,
                   "slate/answer_candidate_share": counters["candidates/answers"] / (scored * k)}
        return SampledBatch(samples=samples, episodes=episodes, metrics=metrics)


def _candidate_sample(prefix: list[int], candidate: Candidate, advantage: float, group_id: str,
                      tree_id: str | None = None) -> Sample:
    """prefix (mask 0) + injected (mask 0) + the candidate's sampled tokens (mask 1, carrying A)."""
    step = candidate.step
    context = prefix + step.injected_ids
    return Sample(
        token_ids=context + step.token_ids,
        loss_mask=[False] * len(context) + [True] * len(step.token_ids),
        old_logprobs=[0.0] * len(context) + list(step.logprobs),
        advantages=[0.0] * len(context) + [advantage] * len(step.token_ids),
        group_id=group_id,
        prefix_len=len(context),
        policy_version=step.policy_version,
        tree_id=tree_id,
    )


def oldest_version(episode: Episode) -> int | None:
    """The oldest policy version among the episode's sampled steps; None if any step's version is unknown."""
    versions = [step.policy_version for step in episode.steps if step.token_ids]
    if not versions or any(v is None for v in versions):
        return None
    return min(v for v in versions if v is not None)
