from __future__ import annotations

import math

import torch
from scripted_policy import FixedRetriever, ScriptedGenerator

from slate.algorithms.advantages import group_advantages, selection_probabilities
from slate.config import RolloutConfig
from slate.data.records import QARecord
from slate.rewards.outcome import OutcomeEM
from slate.rollout.engine import RolloutEngine
from slate.rollout.episode import StepToScore
from slate.rollout.samplers import FullTrajectorySampler, TruncatedStepSampler

RECORD = QARecord(id="q1", question="In which country is Dalvin?", golden_answers=("Orvania",))
CONFIG = RolloutConfig(max_steps=3, max_step_tokens=64, prompt_template="Question: {question}\n", batch_size=8,
                       group_size=4)


def test_full_trajectories_carry_the_group_normalised_outcome(policy) -> None:
    def script(text: str, branch: int) -> str:  # branch 0 and 2 answer right, 1 and 3 wrong
        if "<information>" not in text:
            return f"<think> plan {branch} </think><search> Dalvin {branch} </search>"
        right = "Orvania" in text.split("<search>")[1] and int(text.split("plan ")[1][0]) % 2 == 0
        return f"<think> done </think><answer> {'Orvania' if right else 'Kesh'} </answer>"

    engine = RolloutEngine(policy, FixedRetriever(), CONFIG, generator=ScriptedGenerator(policy, script))
    sampler = FullTrajectorySampler(OutcomeEM(), group_size=4)
    batch = sampler.sample(engine, [RECORD])
    ems = [1.0 if e.final_answer == "Orvania" else 0.0 for e in batch.episodes]
    assert ems == [1.0, 0.0, 1.0, 0.0]
    expected = group_advantages(torch.tensor([ems]))[0]  # ±0.866
    for sample, advantage in zip(batch.samples, expected.tolist(), strict=True):
        trained = [a for a, m in zip(sample.advantages, sample.loss_mask, strict=True) if m]
        untrained = [a for a, m in zip(sample.advantages, sample.loss_mask, strict=True) if not m]
        assert trained and all(math.isclose(a, advantage, abs_tol=1e-6) for a in trained)
        assert all(a == 0.0 for a in untrained)
        assert sample.group_id == "q1"
    assert sampler.metrics()["adv/zero_signal_groups"] == 0.0


class ScriptedStepReward:
    """Search candidates score by the number in their query; answers score 3."""

    def score_steps(self, targets: list[StepToScore]) -> list[float | None]:
        rewards = []
        for target in targets:
            step = target.step
            reward = 3.0 if step.action == "answer" else float(step.parsed.content.split()[-1])
            step.reward = reward
            rewards.append(reward)
        return rewards

    def metrics(self) -> dict[str, float]:
        return {}


def test_truncated_sampler_bookkeeping(policy) -> None:
    def script(text: str, branch: int) -> str:
        searches = text.count("<information>")
        if searches >= 1:
            return "<think> done </think><answer> Orvania </answer>"
        return f"<think> try </think><search> Dalvin {branch} </search>"

    engine = RolloutEngine(policy, FixedRetriever(), CONFIG, generator=ScriptedGenerator(policy, script))
    sampler = TruncatedStepSampler(ScriptedStepReward(), group_size=4, selection_temperature=0.7,
                                   greedy_selection=True)
    batch = sampler.sample(engine, [RECORD])
    # step 1: 4 search siblings scored 0, 1, 2, 3; step 2: 4 answer siblings, all 3 (zero signal)
    assert len(batch.samples) == 8
    first, second = batch.samples[:4], batch.samples[4:]
    expected = group_advantages(torch.tensor([[0.0, 1.0, 2.0, 3.0]]))[0].tolist()
    prompt_len = len(batch.episodes[0].prompt_ids)
    for sample, advantage in zip(first, expected, strict=True):
        assert sample.group_id == "q1/t1"
        assert sample.loss_mask[:prompt_len] == [False] * prompt_len  # the shared prefix never trains
        trained = [a for a, m in zip(sample.advantages, sample.loss_mask, strict=True) if m]
        assert trained and all(math.isclose(a, advantage, abs_tol=1e-6) for a in trained)
    assert all(all(a == 0.0 for a in s.advantages) for s in second)
    assert all(s.group_id == "q1/t2" for s in second)
    # greedy selection kept the best search (query "Dalvin 3"), and the second group's prefix contains it
    [episode] = batch.episodes
    assert episode.steps[0].parsed.content == "Dalvin 3" and episode.final_answer == "Orvania"
    assert second[0].token_ids[: len(episode.token_ids()) - len(episode.steps[1].token_ids)] == \
        episode.token_ids()[: len(episode.token_ids()) - len(episode.steps[1].token_ids)]
    metrics = sampler.metrics()
    assert metrics["adv/zero_signal_groups"] == 0.5
    assert metrics["slate/bonus_only_groups"] == 0.0  # this reward writes no bonus
    assert metrics["slate/answer_candidate_share"] == 0.5  # 4 answers among 8 scored candidates
    assert sampler.metrics()["slate/groups"] == 0.0  # read and reset


class TiedJudgeWithBonus:
    """Every candidate scores 1 from the 'judge'; answers add an early-answer bonus of 0.05, as SLATE's reward."""

    def score_steps(self, targets: list[StepToScore]) -> list[float | None]:
        for target in targets:
            target.step.scores = {"think_score": 1.0, "action_score": 0.0}
            if target.step.action == "answer":
                target.step.scores["early_answer_bonus"] = 0.05
            target.step.reward = 1.0 + target.step.scores.get("early_answer_bonus", 0.0)
        return [t.step.reward for t in targets]

    def metrics(self) -> dict[str, float]:
        return {}


def test_truncated_sampler_counts_groups_only_the_bonus_decided(policy) -> None:
    def script(text: str, branch: int) -> str:  # step 1: two of four answer; the others search
        if branch % 2 or "<information>" in text:
            return "<think> done </think><answer> Orvania </answer>"
        return f"<think> try </think><search> Dalvin {branch} </search>"

    engine = RolloutEngine(policy, FixedRetriever(), CONFIG, generator=ScriptedGenerator(policy, script))
    sampler = TruncatedStepSampler(TiedJudgeWithBonus(), group_size=4, selection_temperature=0.7,
                                   greedy_selection=True)
    batch = sampler.sample(engine, [RECORD])
    # one group: the judge tied all four, the bonus alone made the answers' advantages positive (greedy picks one)
    assert len(batch.samples) == 4 and batch.episodes[0].final_answer == "Orvania"
    metrics = sampler.metrics()
    assert metrics["slate/bonus_only_groups"] == 1.0
    assert metrics["slate/bonus_flipped_groups"] == 1.0
    assert metrics["slate/answer_candidate_share"] == 0.5
    trained = [next(a for a, m in zip(s.advantages, s.loss_mask, strict=True) if m) for s in batch.samples]
    assert [a > 0 for a in trained] == [False, True, False, True]


def test_selection_frequencies_follow_softmax_of_advantages() -> None:
    sampler = TruncatedStepSampler(ScriptedStepReward(), group_size=4, selection_temperature=0.7, seed=0)
    advantages = group_advantages(torch.tensor([[0.0, 1.0, 2.0, 3.0]]))[0]
    draws = 20_000
    counts = torch.bincount(torch.tensor([sampler.choose(advantages) for _ in range(draws)]), minlength=4)
    expected = selection_probabilities(advantages, 0.7)
    # binomial standard error at p ~ 0.5 and n = 20000 is ~0.0035; allow 4 of them
    torch.testing.assert_close(counts / draws, expected, atol=0.015, rtol=0)
