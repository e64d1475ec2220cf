"""Samplers: which candidates share a group, and where each training sample's advantage comes from.

- ``FullTrajectorySampler`` (Search-R1, StepSearch, judge-without-truncation): k complete trajectories per
  question; a group is one question; the reward strategy fills step rewards and the advantage of a token is the
  return-to-go of group-normalised step rewards (``process_advantages``), which for a single outcome reward is GRPO.
- ``TruncatedStepSampler`` (SLATE): for t = 1..B, k one-step candidates from the shared prefix; a group is one
  (question, step) prefix; A = group-normalised step reward among the k siblings; every candidate becomes a sample
  carrying its A on its own tokens; the prefix is extended with one candidate drawn from softmax(A / η) (or the best
  one), retrieving if it searched; the episode stops after an answer.

The advantages are computed here rather than in the trainer because SLATE needs A to choose the next prefix; the
full-trajectory sampler does the same so that every sampler hands the trainer finished ``Sample``s
(``slate/samples.py``). A sampler is given the rollout engine at each call: it decides what to sample and how to
score it, the engine runs the policy and the retriever.
"""

from __future__ import annotations

import time
from collections import Counter

import torch

from slate.algorithms.advantages import (
    bonus_decided,
    group_advantages,
    process_advantages,
    selection_probabilities,
)
from slate.data.records import QARecord
from slate.rewards.base import RewardStrategy, StepReward
from slate.rollout.engine import Candidate, RolloutEngine
from slate.rollout.episode import Episode, StepToScore
from slate.samples import Sample, SampledBatch


class FullTrajectorySampler:
    def __init__(self, reward: RewardStrategy, group_size: int, adv_eps: float = 1e-6,
                 adv_std_floor: float = 0.0) -> None:
        self.reward = reward
        self.group_size = group_size
        self.adv_eps = adv_eps
        self.adv_std_floor = adv_std_floor
        self._counts: Counter[str] = Counter()
        self._reward_s = 0.0

    def sample(self, engine: RolloutEngine, records: list[QARecord]) -> SampledBatch:
        k = self.group_size
        episodes = engine.rollout(records, copies=k)
        start = time.perf_counter()
        self.reward.score_episodes(episodes)
        self._reward_s += time.perf_counter() - start
        samples: list[Sample] = []
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
            self._counts["groups"] += 1
            self._counts["groups/zero_signal"] += int(present.numel() == 0 or bool((present == present[0]).all()))
            step_advantages = process_advantages(rewards, has_reward, self.adv_eps, self.adv_std_floor)  # (k, S)
            for i, episode in enumerate(group):
                mask = episode.loss_mask()
                per_token = [float(step_advantages[i, s]) if m and s >= 0 else 0.0
                             for s, m in zip(episode.step_index_of_tokens(), mask, strict=True)]
                samples.append(Sample(episode.token_ids(), mask, episode.old_logprobs(), per_token, record.id,
                                      policy_version=oldest_version(episode)))
        return SampledBatch(samples=samples, episodes=episodes)

    def generators(self) -> dict[str, torch.Generator]:
        return {}  # it draws nothing: the engine samples the trajectories

    def metrics(self) -> dict[str, float]:
        counts, reward_s = self._counts, self._reward_s
        self._counts, self._reward_s = Counter(), 0.0
        return {"adv/zero_signal_groups": counts["groups/zero_signal"] / max(1, counts["groups"]),
                "time/reward_s": reward_s, **self.reward.metrics()}


class TruncatedStepSampler:
    def __init__(self, reward: StepReward, group_size: int, selection_temperature: float,
                 greedy_selection: bool = False, adv_eps: float = 1e-6, seed: int = 0,
                 adv_std_floor: float = 0.0, retrieve_candidates: bool = False) -> None:
        self.reward = reward
        # a reward that judges a search by what it retrieved (the information gain) sees every candidate's passages;
        # a judge scores the query itself, and only the chosen candidate is searched
        self.retrieve_candidates = retrieve_candidates
        self.group_size = group_size
        self.selection_temperature = selection_temperature
        self.greedy_selection = greedy_selection
        self.adv_eps = adv_eps
        self.adv_std_floor = adv_std_floor
        self.generator = torch.Generator().manual_seed(seed)
        self._counts: Counter[str] = Counter()
        self._reward_s = 0.0

    def generators(self) -> dict[str, torch.Generator]:
        return {"sampler": self.generator}  # the draws of the next prefix: saved with every checkpoint

    def choose(self, advantages: torch.Tensor) -> int:
        """The candidate that extends the prefix: argmax A, or a draw from softmax(A / η)."""
        if self.greedy_selection:
            return int(advantages.argmax())
        probs = selection_probabilities(advantages, self.selection_temperature)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def sample(self, engine: RolloutEngine, records: list[QARecord]) -> SampledBatch:
        k = self.group_size
        episodes = engine.new_episodes(records, copies=1)
        samples: list[Sample] = []
        while active := [e for e in episodes if not engine.is_done(e)]:
            # propose: k one-step candidates from each active prefix (one shared prefill per prefix)
            proposals = engine.propose(active, k)
            if self.retrieve_candidates:  # one batch for every search candidate; execute() will not search again
                engine.retrieve([c.step for group in proposals for c in group])
            # score: one reward per candidate, every group of the step in one batch (one judge call)
            start = time.perf_counter()
            rewards = self.reward.score_steps([StepToScore(c.episode, c.step, len(c.episode.steps) + 1)
                                               for group in proposals for c in group])
            self._reward_s += time.perf_counter() - start
            chosen: list[Candidate] = []
            for group_index, group in enumerate(proposals):
                group_rewards = rewards[group_index * k:(group_index + 1) * k]
                if any(r is None for r in group_rewards):  # unscored (a forced answer): no training signal
                    self._counts["groups/unscored"] += 1
                    chosen.append(group[0])
                    continue
                reward_tensor = torch.tensor(group_rewards, dtype=torch.float32)
                self._count_group(reward_tensor, group)
                # A: the candidates' rewards normalised among the k siblings of this prefix
                advantages = group_advantages(reward_tensor[None], self.adv_eps, self.adv_std_floor)[0]
                # record: every candidate is a sample carrying its A on its own tokens
                episode = group[0].episode
                prefix = episode.token_ids()
                for index, candidate in enumerate(group):
                    samples.append(_candidate_sample(prefix, candidate, float(advantages[index]),
                                                     f"{episode.record.id}/t{len(episode.steps) + 1}",
                                                     tree_id=episode.record.id))
                # choose: the next prefix ~ softmax(A / η)
                pick = self.choose(advantages)
                self._counts["selection/picked_best"] += int(group_rewards[pick] == max(group_rewards))
                chosen.append(group[pick])
            # execute: append the chosen steps, retrieving for the searches
            engine.execute(chosen)
        return SampledBatch(samples=samples, episodes=episodes)

    def _count_group(self, rewards: torch.Tensor, group: list[Candidate]) -> None:
        """Diagnostics of one scored group: no signal, and the early-answer tie (advantage signs that only the bonus
        λ(B − t)/B decided, or flipped)."""
        self._counts["groups/scored"] += 1
        self._counts["groups/zero_signal"] += int(bool((rewards == rewards[0]).all()))
        bonuses = torch.tensor([c.step.scores.get("early_answer_bonus", 0.0) for c in group])
        only, flipped = bonus_decided(rewards, bonuses)
        self._counts["groups/bonus_only"] += int(only)
        self._counts["groups/bonus_flipped"] += int(flipped)
        self._counts["candidates/answers"] += sum(c.step.action == "answer" for c in group)

    def metrics(self) -> dict[str, float]:
        counts, reward_s = self._counts, self._reward_s
        self._counts, self._reward_s = Counter(), 0.0
        scored = max(1, counts["groups/scored"])
        return {"adv/zero_signal_groups": counts["groups/zero_signal"] / scored,
                "slate/groups": float(counts["groups/scored"]),
                "slate/picked_best_rate": counts["selection/picked_best"] / scored,
                "slate/unscored_groups": float(counts["groups/unscored"]), "time/reward_s": reward_s,
                "slate/bonus_only_groups": counts["groups/bonus_only"] / scored,
                "slate/bonus_flipped_groups": counts["groups/bonus_flipped"] / scored,
                "slate/answer_candidate_share": counts["candidates/answers"] / (scored * self.group_size),
                **self.reward.metrics()}


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
