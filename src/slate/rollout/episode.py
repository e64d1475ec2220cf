"""Episodes as token sequences: what the policy sampled, what the environment injected, and which tokens train.

An ``Episode`` is a prompt followed by steps. Each ``Step`` holds the exact token ids the policy sampled (never
re-tokenised from text), their sampling log-probs, and the ids the environment appended after it (an
``<information>`` block, a corrective note). ``loss_mask`` is True on sampled tokens only: prompt, retrieved and
injected tokens never train.

Reward strategies write ``Step.reward`` (one scalar per step) and, for judged rewards, ``Step.scores``
(``think_score``, ``query_score``, ``answer_score``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slate.data.records import QARecord
from slate.retrieval.base import Hit
from slate.rollout.actions import ParsedStep


@dataclass
class Step:
    text: str  # decoded sampled text of this step (think + action)
    parsed: ParsedStep
    token_ids: list[int]  # exactly what the policy sampled
    logprobs: list[float]  # sampling log-prob of each sampled token, same length as token_ids
    feedback_ids: list[int] = field(default_factory=list)  # environment tokens appended after the step (mask 0)
    injected_ids: list[int] = field(default_factory=list)  # environment tokens before the step, e.g. a forced <answer>
    hits: list[Hit] = field(default_factory=list)  # passages retrieved by this step's search
    is_forced: bool = False  # the answer step forced once the step budget was spent
    policy_version: int | None = None  # the policy version that sampled it (server backends; None in-process)
    retrieval_failed: bool = False  # the retriever failed after retries; the information block is empty
    reward: float | None = None
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def action(self) -> str:
        return self.parsed.action


@dataclass
class Episode:
    record: QARecord
    prompt_ids: list[int]
    steps: list[Step] = field(default_factory=list)
    is_truncated: bool = False  # stopped because the context could not hold another step
    budget: int | None = None  # B for this question (rollout.budget_slack); None: rollout.max_steps

    @property
    def final_answer(self) -> str | None:
        """The content of the last step if it is an answer; None when the episode never answered."""
        if self.steps and self.steps[-1].action == "answer":
            return self.steps[-1].parsed.content
        return None

    @property
    def is_valid(self) -> bool:
        """Every step parsed and the episode ended with an answer (the ``valid_rate`` of ``slate eval``)."""
        return bool(self.steps) and all(s.parsed.is_valid for s in self.steps) and self.final_answer is not None

    @property
    def queries(self) -> list[str]:
        return [s.parsed.content for s in self.steps if s.action == "search"]

    @property
    def num_searches(self) -> int:
        return len(self.queries)

    def token_ids(self) -> list[int]:
        ids = list(self.prompt_ids)
        for step in self.steps:
            ids += step.injected_ids + step.token_ids + step.feedback_ids
        return ids

    def loss_mask(self) -> list[bool]:
        mask = [False] * len(self.prompt_ids)
        for step in self.steps:
            mask += [False] * len(step.injected_ids) + [True] * len(step.token_ids) + [False] * len(step.feedback_ids)
        return mask

    def old_logprobs(self) -> list[float]:
        """Sampling log-probs aligned with ``token_ids()``; 0.0 where the mask is False."""
        values = [0.0] * len(self.prompt_ids)
        for step in self.steps:
            values += [0.0] * len(step.injected_ids) + step.logprobs + [0.0] * len(step.feedback_ids)
        return values

    def step_index_of_tokens(self) -> list[int]:
        """For each token, the index of the step it belongs to (-1 for the prompt); injected text and feedback
        belong to their step."""
        index = [-1] * len(self.prompt_ids)
        for i, step in enumerate(self.steps):
            index += [i] * (len(step.injected_ids) + len(step.token_ids) + len(step.feedback_ids))
        return index

    def retrieved_ids(self, before_step: int | None = None) -> list[str]:
        """Ids of passages retrieved by steps before ``before_step`` (all steps when None), in order, repeats kept."""
        steps = self.steps if before_step is None else self.steps[:before_step]
        return [hit.id for step in steps for hit in step.hits]


@dataclass(frozen=True)
class StepToScore:
    """A step in its context, as a reward strategy scores it: ``episode`` holds the steps before it (the shared
    prefix), ``step`` is the candidate (not yet appended), ``step_index`` its t, from 1."""

    episode: Episode
    step: Step
    step_index: int
