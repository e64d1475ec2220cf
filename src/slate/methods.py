"""The methods: each is a sampler × a reward strategy; everything after them (advantages, loss, update) is shared.

``METHODS`` is the one place that knows a method by its name: every other module asks it what a method needs
(``method_of(config).needs_judge``), never compares ``trainer.method`` to a string.

| method      | sampler                                 | reward                                          |
|-------------|-----------------------------------------|-------------------------------------------------|
| searchr1    | k full trajectories per question        | EM of the final answer (GRPO)                   |
| stepsearch  | k full trajectories per question        | info gain − redundancy per search, F1 + key     |
| slate       | k one-step siblings of a shared prefix  | judged: think + query, or think + answer + bonus|
| slate_full  | k full trajectories (no truncation)     | the same judged step rewards                    |
| slate_em    | k one-step siblings (truncation)        | EM on answer steps only                         |
| igpo        | k full trajectories per question        | information gain per search (IGPO), EM answers  |
| slate_ig    | k one-step siblings of a shared prefix  | the same information gain, no judge             |

A new method, or an ablation, is one line of ``METHODS``: a sampler kind, a reward factory and what it needs. A
reward factory takes a ``BuildContext`` (the config, the training questions, and whatever the method declared it
needs: the judge, the corpus, the policy and the frozen reference for a reward that scores steps with a model) and
returns the reward strategy (``rewards/``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from slate.config import RunConfig
from slate.data.records import Passage, QARecord, read_corpus
from slate.errors import ConfigError, DataError
from slate.judge import build_judge
from slate.judge.types import Judge
from slate.rewards.base import RewardStrategy, StepReward
from slate.rewards.infogain import GoldAnswerScorer, InfoGainReward, scoring_model
from slate.rewards.judged import ExactMatchStepReward, JudgedStepReward
from slate.rewards.outcome import OutcomeEM
from slate.rewards.stepsearch import StepSearchReward, gold_evidence
from slate.rollout.samplers import FullTrajectorySampler, TruncatedStepSampler
from slate.samples import Sampler

if TYPE_CHECKING:
    import torch

    from slate.rollout.policy import Policy


@dataclass
class BuildContext:
    """What a reward factory may use. ``build_sampler`` fills in what the method declares it needs (the judge, the
    corpus); the trainer passes the models it has loaded."""

    config: RunConfig
    records: list[QARecord] = field(default_factory=list)  # the training questions, to check gold evidence on
    world_dir: Path | None = None  # where the world's corpus is, when retrieval.corpus is unset
    judge: Judge | None = None
    corpus: list[Passage] | None = None
    policy: Policy | None = None  # the policy being trained
    reference: torch.nn.Module | None = None  # the frozen reference (None with LoRA: the policy, adapter off)


Reward = RewardStrategy | StepReward


@dataclass(frozen=True)
class Method:
    """A sampler kind × a reward factory, and what the reward needs to be built and to run."""

    sampler: Literal["full", "truncated"]  # k full trajectories per question, or k one-step siblings per prefix
    reward: Callable[[BuildContext], Reward]
    needs_judge: bool = False  # judge.* builds a judge (the oracle needs gold chains: metadata.chain)
    needs_corpus: bool = False  # the passages' text (the retrieval corpus)
    needs_gold: bool = False  # gold passages and sub-questions on every training question
    needs_scorer: bool = False  # a model that scores steps: the frozen reference (or the policy)
    retrieves_candidates: bool = False  # truncated: the reward needs each candidate's passages before it scores

    @property
    def is_truncated(self) -> bool:
        return self.sampler == "truncated"


def judged_reward(config: RunConfig, judge: Judge) -> JudgedStepReward:
    # no failure check per batch: the trainer checks judge.max_failure_share on counts summed over processes
    return JudgedStepReward(judge, config.rollout.max_steps, config.reward.early_answer_bonus,
                            config.reward.score_forced_answer, None, config.judge.failure_hint,
                            config.judge.max_context_chars)


def _outcome_em(context: BuildContext) -> OutcomeEM:
    return OutcomeEM()


def _stepsearch(context: BuildContext) -> StepSearchReward:
    assert context.corpus is not None  # needs_corpus: build_sampler read it
    reward = StepSearchReward(context.corpus, context.config.reward.stepsearch_gain_coef,
                              context.config.reward.stepsearch_key_coef)
    reward.check_records(context.records)  # gold ids missing from the corpus: fail now, not at step 1000
    return reward


def _judged(context: BuildContext) -> JudgedStepReward:
    assert context.judge is not None  # needs_judge: build_sampler built it
    return judged_reward(context.config, context.judge)


def _em_per_step(context: BuildContext) -> ExactMatchStepReward:
    return ExactMatchStepReward(context.config.reward.score_forced_answer)


def _infogain(context: BuildContext) -> InfoGainReward:
    """The information gain on the gold answer, scored by the frozen reference (with LoRA: the policy with its adapter
    off; without a KL reference: a frozen copy of the start) or by the policy itself (``reward.infogain.model``)."""
    config, policy = context.config, context.policy
    options = config.reward.infogain
    assert policy is not None  # needs_scorer: build_sampler checked
    if options.model == "policy":
        model, base_only = policy.model, False
    elif context.reference is not None:
        model, base_only = context.reference, False
    elif config.trainer.lora_rank > 0:
        model, base_only = policy.model, True
    else:  # kl_coef 0 and all weights trained: no reference was kept, so keep the start frozen for scoring
        model, base_only = copy.deepcopy(policy.model).eval().requires_grad_(False), False
    scorer = GoldAnswerScorer(policy, scoring_model(model, base_only), options.measure, options.batch_tokens)
    corpus = load_corpus(context) if options.baseline == "random_docs" else None
    reward = InfoGainReward(scorer, config.rollout.max_information_tokens, options.baseline, options.scale,
                            options.clip, options.outcome_coef, corpus, config.retrieval.top_k, config.trainer.seed)
    reward.check_records(context.records)  # a question without a golden answer: fail now, not at step 1000
    return reward


METHODS: dict[str, Method] = {
    "searchr1": Method("full", _outcome_em),
    "stepsearch": Method("full", _stepsearch, needs_corpus=True, needs_gold=True),
    "slate": Method("truncated", _judged, needs_judge=True),
    "slate_full": Method("full", _judged, needs_judge=True),
    "slate_em": Method("truncated", _em_per_step),
    "igpo": Method("full", _infogain, needs_scorer=True),
    "slate_ig": Method("truncated", _infogain, needs_scorer=True, retrieves_candidates=True),
}


def method_of(config: RunConfig) -> Method:
    try:
        return METHODS[config.trainer.method]
    except KeyError:
        raise ConfigError(f"trainer.method={config.trainer.method!r} is not an RL method; choose one of "
                          f"{', '.join(METHODS)}.") from None


def sampler_for(config: RunConfig, reward: Reward) -> Sampler:
    """The method's sampler around ``reward`` (any reward of the right shape: a test's, an ablation's)."""
    k, ac, method = config.rollout.group_size, config.algorithm, method_of(config)
    if method.is_truncated:
        return TruncatedStepSampler(reward, k, ac.selection_temperature, ac.greedy_selection, ac.adv_eps,
                                    config.trainer.seed, ac.adv_std_floor, method.retrieves_candidates)
    return FullTrajectorySampler(reward, k, ac.adv_eps, ac.adv_std_floor)


def build_sampler(config: RunConfig, context: BuildContext | None = None) -> Sampler:
    """The configured method's sampler and reward, with what the method needs built into ``context``."""
    context = context or BuildContext(config)
    method = method_of(config)
    if method.needs_judge and context.judge is None:
        context.judge = build_judge(config.judge)
    if method.needs_corpus:
        load_corpus(context)
    if method.needs_scorer and context.policy is None and context.reference is None:
        raise ConfigError(f"trainer.method={config.trainer.method} scores steps with a model: pass the policy or "
                          "the frozen reference in the BuildContext.")
    return sampler_for(config, method.reward(context))


def load_corpus(context: BuildContext) -> list[Passage]:
    """The retrieval corpus's passages (``retrieval.corpus``, else the world's), read once into ``context``."""
    if context.corpus is None:
        config = context.config
        path = config.retrieval.corpus or (context.world_dir / "corpus.jsonl" if context.world_dir else None)
        if path is None:
            raise ConfigError(f"trainer.method={config.trainer.method} needs the passages' text: set "
                              "retrieval.corpus, or train on a built world (--world).")
        context.corpus = read_corpus(path)
    return context.corpus


def check_gold_evidence(config: RunConfig, records: list[QARecord]) -> None:
    """Refuse at start-up a method or judge that needs gold evidence the data does not carry.

    StepSearch scores searches against gold passages and sub-questions; the oracle judge reads gold chains (the
    synthetic world's ``metadata.chain``). Real QA files (NQ, HotpotQA in FlashRAG form) carry neither.
    """
    method = method_of(config)
    without = [name for name, m in METHODS.items() if not m.needs_gold and not m.needs_judge]
    without_gold = (f"{', '.join(without)} need none, nor do methods with an LLM judge (judge.backend=openai "
                    "or hf)")
    for record in records:
        where = f"question {record.id!r} of {record.dataset or 'the data'}"
        if method.needs_gold:
            try:
                gold_evidence(record)
            except DataError:
                raise ConfigError(f"trainer.method={config.trainer.method} needs gold evidence "
                                  f"(metadata.gold_doc_ids + metadata.sub_questions, or metadata.chain) and {where} "
                                  f"has none; {without_gold}.") from None
        elif method.needs_judge and config.judge.backend == "oracle" and not record.chain:
            raise ConfigError(f"judge.backend=oracle needs gold chains (metadata.chain, as in the synthetic world) "
                              f"and {where} has none; use judge.backend=openai or hf (an LLM judge), or a method "
                              f"without a judge ({', '.join(without)}).")
