"""SLATE's step reward from a decomposed ternary judge (paper section 3.3).

    search step:  r_t = think_score + query_score
    answer step:  r_t = think_score + answer_score + λ · (B − t) / B        (t counted from 1)

each score in {−1, 0, +1}. λ = ``early_answer_bonus`` (paper: 0.1) rewards answering early; B is the episode's own
budget where the question has one (``rollout.budget_slack``), else ``max_steps``. Departures, all
documented in the README:
- An invalid step (no parsable action) has nothing to judge: it gets −1 for both of its parts, r = −2, without a
  judge call, so a malformed step is never better than a bad but well-formed one.
- An answer forced at the budget is not scored by default (as in the paper); ``score_forced_answer`` scores it
  with a bonus of 0 (t > B would make λ(B − t)/B negative).

``JudgedStepReward`` serves both samplers: ``score_steps`` scores candidate steps in one batch (SLATE's truncated
sampler, ablation "judge over full trajectories" through ``score_episodes``). The k siblings of a prefix reach the
judge in that one batch with the same trajectory text, candidate i's items before candidate i + 1's, so a judge in
``judge.mode=group`` scores them in one request per dimension, numbered in the sampler's order (judge/group.py).
With ``max_context_chars`` (``judge.max_context_chars``), each retrieved passage in the judge's view of the
trajectory is cut to its first N characters, as the SLATE release does with 300; the policy's own text is not cut.

``ExactMatchStepReward`` is the ablation "truncation with only an exact-match answer reward": answer steps score EM,
searches 0, invalid −1.
"""

from __future__ import annotations

import logging
from collections import Counter

from slate.eval.metrics import exact_match
from slate.judge.failures import check_failures
from slate.judge.items import context_cut, judge_items
from slate.judge.types import Judge, JudgeItem, JudgeVerdict
from slate.rollout.episode import Episode, StepToScore

logger = logging.getLogger(__name__)
INVALID_STEP_REWARD = -2.0


def judged_step_reward(action: str, think_score: float, action_score: float, step_index: int, max_steps: int,
                       early_answer_bonus: float) -> float:
    """r_t from the judge's scores; ``step_index`` t counts from 1. ``action_score`` is r_query or r_answer."""
    if action == "search":
        return think_score + action_score
    if action == "answer":
        return think_score + action_score + answer_bonus(step_index, max_steps, early_answer_bonus)
    return INVALID_STEP_REWARD


def answer_bonus(step_index: int, max_steps: int, early_answer_bonus: float) -> float:
    """λ · (B − t) / B, the early-answer part of an answer step's reward (0 at or past the budget)."""
    return early_answer_bonus * max(0, max_steps - step_index) / max_steps


class JudgedStepReward:
    def __init__(self, judge: Judge, max_steps: int, early_answer_bonus: float = 0.1,
                 score_forced_answer: bool = False, max_failure_share: float | None = None, failure_hint: str = "",
                 max_context_chars: int | None = None) -> None:
        self.judge = judge
        self.max_context_chars = max_context_chars
        self.max_steps = max_steps
        self.early_answer_bonus = early_answer_bonus
        self.score_forced_answer = score_forced_answer
        self.max_failure_share = max_failure_share
        self.failure_hint = failure_hint
        self.counters: Counter[str] = Counter()
        self._cut_announced = False  # the first cut is logged at info level, later ones at debug

    def score_steps(self, targets: list[StepToScore]) -> list[float | None]:
        """One reward per target (None: not scored, e.g. a forced answer); writes ``Step.scores`` and rewards."""
        rewards: list[float | None] = [None] * len(targets)
        items: list[JudgeItem] = []
        owners: list[int] = []
        prefixes: dict[tuple[int, int], StepToScore] = {}  # one target per shared prefix
        for index, target in enumerate(targets):
            step = target.step
            if step.is_forced and not self.score_forced_answer:
                continue
            if step.action == "invalid" or (step.is_forced and step.action != "answer"):
                rewards[index] = INVALID_STEP_REWARD
                step.scores = {"think_score": -1.0, "action_score": -1.0}
                continue
            new = judge_items(target, self.max_context_chars)
            items += new
            owners += [index] * len(new)
            prefixes.setdefault((id(target.episode), target.step_index), target)
        self._count_context_cut(list(prefixes.values()))
        verdicts: list[JudgeVerdict] = self.judge.score(items) if items else []
        self.counters["judge/verdicts"] += len(verdicts)  # the trainer checks the failed share, summed over ranks
        if verdicts and self.max_failure_share is not None:  # a caller that checks each batch on its own
            check_failures(verdicts, self.max_failure_share, where=f"step {targets[0].step_index}",
                           hint=self.failure_hint or "check the judge backend")
        by_owner: dict[int, list[JudgeVerdict]] = {}
        for owner, verdict in zip(owners, verdicts, strict=True):
            by_owner.setdefault(owner, []).append(verdict)
        for index, (think, action) in by_owner.items():
            target = targets[index]
            step = target.step
            budget = target.episode.budget if target.episode.budget is not None else self.max_steps
            kind = "query_score" if step.action == "search" else "answer_score"
            step.scores = {"think_score": float(think.score), kind: float(action.score)}
            if step.action == "answer":  # kept apart so the sampler can tell which ties only the bonus broke
                step.scores["early_answer_bonus"] = answer_bonus(target.step_index, budget,
                                                                 self.early_answer_bonus)
            self.counters["judge/failed_verdicts"] += int(think.failed) + int(action.failed)
            rewards[index] = judged_step_reward(step.action, think.score, action.score, target.step_index,
                                                budget, self.early_answer_bonus)
        for target, reward in zip(targets, rewards, strict=True):
            target.step.reward = reward
        return rewards

    def _count_context_cut(self, prefixes: list[StepToScore]) -> None:
        """Count, once per shared prefix (not per sibling), the passages ``max_context_chars`` cut; log it."""
        if self.max_context_chars is None or not prefixes:
            return
        cuts = [context_cut(t.episode, t.step_index - 1, self.max_context_chars) for t in prefixes]
        passages, chars = sum(c[0] for c in cuts), sum(c[1] for c in cuts)
        if passages:
            log = logger.debug if self._cut_announced else logger.info
            self._cut_announced = True
            log("judge.max_context_chars=%d: cut %d retrieved passages in the judge's context (%d characters left "
                "out) at step %d.", self.max_context_chars, passages, chars, prefixes[0].step_index)
        self.counters["judge/passages_cut"] += passages
        self.counters["judge/context_chars_cut"] += chars

    def score_episodes(self, episodes: list[Episode]) -> None:
        """The same step rewards over complete trajectories (ablation: judge rewards without truncation)."""
        targets = [StepToScore(_prefix_view(episode, i), step, i + 1)
                   for episode in episodes for i, step in enumerate(episode.steps)]
        self.score_steps(targets)

    def metrics(self) -> dict[str, float]:
        """The reward's counters (failed verdicts, passages cut from the judge's context) and its judge's, since the
        last call."""
        counts, self.counters = self.counters, Counter()
        return {"judge/failed_verdicts": 0.0, "judge/verdicts": 0.0,
                **{key: float(value) for key, value in counts.items()}, **self.judge.metrics()}


def _prefix_view(episode: Episode, upto: int) -> Episode:
    """The episode as it was before step ``upto`` (0-based), sharing step objects: what the judge may see."""
    return Episode(record=episode.record, prompt_ids=episode.prompt_ids, steps=episode.steps[:upto])


class ExactMatchStepReward:
    """Ablation: truncated sampling with only an outcome signal: answer = EM (0/1), search = 0, invalid = −1."""

    def __init__(self, score_forced_answer: bool = False) -> None:
        self.score_forced_answer = score_forced_answer

    def score_steps(self, targets: list[StepToScore]) -> list[float | None]:
        rewards: list[float | None] = []
        for target in targets:
            step = target.step
            if step.is_forced and not self.score_forced_answer:
                reward = None
            elif step.action == "answer":
                reward = exact_match(step.parsed.content, target.episode.record.golden_answers)
            elif step.action == "search":
                reward = 0.0
            else:
                reward = -1.0
            step.reward = reward
            rewards.append(reward)
        return rewards

    def score_episodes(self, episodes: list[Episode]) -> None:
        self.score_steps([StepToScore(_prefix_view(e, i), s, i + 1) for e in episodes for i, s in enumerate(e.steps)])

    def metrics(self) -> dict[str, float]:
        return {}
