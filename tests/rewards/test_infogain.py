"""The information-gain reward (IGPO, IG-Search): hand-valued gains from a model whose probabilities are set by hand,
the random-documents baseline, shared-prefix batching against one-by-one scoring, and both samplers agreeing."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPast

from slate.config import TinyModelConfig
from slate.data.records import Passage, QARecord
from slate.errors import ConfigError, SlateError
from slate.retrieval.base import Hit
from slate.rewards.infogain import (
    GoldAnswerScorer,
    InfoGainReward,
    ValueRequest,
    information_gain,
    scoring_model,
)
from slate.rollout.actions import parse_step, render_information
from slate.rollout.engine import information_ids
from slate.rollout.episode import Episode, Step, StepToScore
from slate.rollout.policy import Policy, build_tiny_policy

TEXTS = ["Kesh Fenn was born in Port Dalvin. Velmora Labs is a software company. What is the birthplace of Kesh Fenn? "
         "Who founded Velmora Labs? Kesh Fenn founded it. Doc 1(Title: Kesh Fenn) Port Dalvin is a city.",
         "I need the birthplace of Kesh Fenn. So the answer is Port Dalvin. Orvania is a country."] * 30
RECORD = QARecord(id="q7", question="What is the birthplace of the founder of Velmora Labs?",
                  golden_answers=("Port Dalvin",), metadata={"hops": 2})
GOLD_PASSAGE = Hit("d2", "Kesh Fenn", "Kesh Fenn was born in Port Dalvin.", 1.0)
USELESS_PASSAGE = Hit("d9", "Velmora Labs", "Velmora Labs is a software company.", 1.0)
BETA = 5.0


@pytest.fixture(scope="module")
def tiny() -> Policy:
    return build_tiny_policy(TEXTS, TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                                    max_positions=512, vocab_size=600), seed=0)


# -- a policy whose next-token probabilities are set by hand -----------------------------------------------------------
class _TriggerCache:
    """The hand decoder's "KV cache": which prefix positions hold the trigger token."""

    def __init__(self, seen: torch.Tensor) -> None:
        self.seen = seen

    def reorder_cache(self, index: torch.Tensor) -> None:
        self.seen = self.seen[index]


class _TriggerDecoder(torch.nn.Module):
    """h_t = [1, c_t] with c_t = 1 once the trigger token has appeared at or before t (in what t may attend to)."""

    def __init__(self, trigger: int) -> None:
        super().__init__()
        self.trigger = trigger

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=False, past_key_values=None,
                **_) -> BaseModelOutputWithPast:
        seen = input_ids == self.trigger
        carry = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        if past_key_values is not None:
            prefix_seen = past_key_values.seen
            if attention_mask is not None:
                prefix_seen = prefix_seen & attention_mask[:, : prefix_seen.shape[1]].bool()
            carry = prefix_seen.any(1)
        c = (seen.cumsum(1) > 0) | carry[:, None]
        hidden = torch.stack([torch.ones_like(c, dtype=torch.float32), c.float()], dim=-1)
        return BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=_TriggerCache(seen) if use_cache
                                       else None)


class HandModel(torch.nn.Module):
    """logits = W h: every token 0 before the trigger; after it, BETA for the gold answer's tokens, 0 otherwise. So
    log p(gold token) = -log V before the trigger and BETA - log(V - |S| + |S| e^BETA) after it (S = gold ids)."""

    def __init__(self, vocab: int, trigger: int, boosted: set[int]) -> None:
        super().__init__()
        self.decoder = _TriggerDecoder(trigger)
        self.head = torch.nn.Linear(2, vocab, bias=False)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[sorted(boosted), 1] = BETA
        self.config = SimpleNamespace(max_position_embeddings=512)

    def get_decoder(self) -> torch.nn.Module:
        return self.decoder

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.head


def _hand_reward(tiny: Policy, **options) -> tuple[InfoGainReward, Policy, float, float]:
    trigger = tiny.encode(" born")
    assert len(trigger) == 1  # one token, so "the trigger appeared" is one id
    gold = tiny.encode(" Port Dalvin")
    hand = Policy(model=HandModel(len(tiny.tokenizer), trigger[0], set(gold)), tokenizer=tiny.tokenizer, name="hand")
    scorer = GoldAnswerScorer(hand, scoring_model(hand.model, base_only=False), measure=options.pop("measure",
                                                                                                      "logprob"))
    reward = InfoGainReward(scorer, max_information_tokens=200, **options)
    vocab, boosted = len(tiny.tokenizer), len(set(gold))
    before = -math.log(vocab)
    after = BETA - math.log(vocab - boosted + boosted * math.exp(BETA))
    return reward, hand, before, after


def _search(policy: Policy, query: str, hits: list[Hit] | None) -> Step:
    text = f"<think> I need the birthplace of Kesh Fenn. </think>\n<search> {query} </search>"
    step = Step(text=text, parsed=parse_step(text), token_ids=policy.encode(text), logprobs=[0.0] * 3)
    if hits is not None:
        step.hits = hits
        step.feedback_ids = information_ids(policy, hits, 200)
    return step


def _answer(policy: Policy, answer: str) -> Step:
    text = f"<think> So the answer is {answer}. </think>\n<answer> {answer} </answer>"
    return Step(text=text, parsed=parse_step(text), token_ids=policy.encode(text), logprobs=[0.0])


def test_information_gain_by_hand() -> None:
    assert information_gain(-1.0, -3.0) == 2.0
    assert information_gain(-1.0, -3.0, scale=0.2) == pytest.approx(0.4)
    assert information_gain(-1.0, -9.0, scale=0.2, clip=1.0) == 1.0  # 1.6 clipped
    assert information_gain(-9.0, -1.0, scale=0.2, clip=1.0) == -1.0


def test_a_search_that_retrieves_the_gold_passage_gains_exactly_what_the_hand_model_says(tiny: Policy) -> None:
    reward, hand, before, after = _hand_reward(tiny)
    prompt = hand.encode(RECORD.question)
    episode = Episode(record=RECORD, prompt_ids=prompt)
    useful = _search(hand, "Kesh Fenn birthplace", [GOLD_PASSAGE])
    useless = _search(hand, "Velmora Labs", [USELESS_PASSAGE])
    right, wrong = _answer(hand, "Port Dalvin"), _answer(hand, "Orvania")
    rewards = reward.score_steps([StepToScore(episode, s, 1) for s in (useful, useless, right, wrong)])
    # V before = mean log p(" Port Dalvin" | prompt, <answer>) = -log V; after the gold passage its "born" lifts every
    # gold token to BETA - log(V - |S| + |S| e^BETA); the useless passage holds no trigger: gain exactly 0
    assert rewards[0] == pytest.approx(after - before, abs=1e-5)
    assert rewards[1] == pytest.approx(0.0, abs=1e-6)
    assert rewards[2:] == [1.0, 0.0]  # answers: outcome_coef * EM
    assert useful.reward == rewards[0]
    metrics = reward.metrics()
    assert metrics["reward/infogain_forward_tokens"] > 0 and metrics["reward/infogain_scored"] == 2
    assert set(reward.metrics().values()) == {0.0}  # read and reset


def test_the_prob_measure_is_the_difference_of_probabilities(tiny: Policy) -> None:
    reward, hand, before, after = _hand_reward(tiny, measure="prob")
    episode = Episode(record=RECORD, prompt_ids=hand.encode(RECORD.question))
    [gain] = reward.score_steps([StepToScore(episode, _search(hand, "Kesh Fenn", [GOLD_PASSAGE]), 1)])
    assert gain == pytest.approx(math.exp(after) - math.exp(before), abs=1e-6)


def test_random_documents_baseline_is_seeded_by_the_step_and_scores_by_hand(tiny: Policy) -> None:
    corpus = [Passage(f"r{i}", f"Place {i}\nPlace {i} is a city in Orvania.") for i in range(40)]
    reward, hand, before, after = _hand_reward(tiny, baseline="random_docs", corpus=corpus, seed=3)
    episode = Episode(record=RECORD, prompt_ids=hand.encode(RECORD.question))
    step = _search(hand, "Kesh Fenn birthplace", [GOLD_PASSAGE, USELESS_PASSAGE])
    target = StepToScore(episode, step, 1)
    # the baseline context: the same step with two random passages (as many as it retrieved), none with "born"
    [gain] = reward.score_steps([target])
    assert gain == pytest.approx(after - before, abs=1e-5)
    drawn = reward._random_information(target)
    assert drawn == reward._random_information(target)  # the same step draws the same passages
    assert hand.decode(drawn).count("Doc ") == 2 and "Place" in hand.decode(drawn)
    other_seed, *_ = _hand_reward(tiny, baseline="random_docs", corpus=corpus, seed=4)
    assert other_seed._random_information(target) != drawn
    with pytest.raises(ConfigError, match="random passages"):
        _hand_reward(tiny, baseline="random_docs")


def test_siblings_scored_in_one_pass_equal_one_by_one_scoring(tiny: Policy) -> None:
    # a real (random) tiny transformer: the shared-prefix pass against each context scored alone, in full
    scorer = GoldAnswerScorer(tiny, scoring_model(tiny.model, base_only=False))
    prefix = tiny.encode(RECORD.question + " I need the birthplace of Kesh Fenn.")
    golds = ("Port Dalvin", "Dalvin")
    extras = [tiny.encode(render_information(hits)) for hits in ([GOLD_PASSAGE], [USELESS_PASSAGE], [])]
    together = scorer.values([ValueRequest(prefix, len(prefix), extra, golds) for extra in extras]
                             + [ValueRequest(prefix, 5, extras[0], golds)])  # a row that sees only 5 prefix tokens
    alone = []
    for extra, length in [(e, len(prefix)) for e in extras] + [(extras[0], 5)]:
        own = list(prefix[:length])  # a prefix object of its own: no sharing
        alone += scorer.values([ValueRequest(own, length, extra, golds)])
    small_batches = GoldAnswerScorer(tiny, scoring_model(tiny.model, base_only=False), batch_tokens=64)
    split = small_batches.values([ValueRequest(prefix, len(prefix), extra, golds) for extra in extras])
    assert together == pytest.approx(alone, abs=1e-5)
    assert split == pytest.approx(alone[:3], abs=1e-5)
    # the best golden answer counts: the value is the larger of the two aliases' values
    one_each = [scorer.values([ValueRequest(prefix, len(prefix), extras[0], (g,))])[0] for g in golds]
    assert together[0] == pytest.approx(max(one_each), abs=1e-6)


def test_truncated_and_full_samplers_give_the_same_step_rewards(tiny: Policy) -> None:
    for baseline, corpus in (("before", None), ("random_docs", [Passage(f"r{i}", f"R{i}\nR{i} is here.")
                                                                for i in range(9)])):
        scorer = GoldAnswerScorer(tiny, scoring_model(tiny.model, base_only=False))
        reward = InfoGainReward(scorer, max_information_tokens=200, baseline=baseline,
                                corpus=corpus, scale=1.0, clip=None)
        steps = [_search(tiny, "Velmora Labs founder", [USELESS_PASSAGE]),
                 _search(tiny, "Kesh Fenn birthplace", [GOLD_PASSAGE]), _answer(tiny, "Port Dalvin")]
        episode = Episode(record=RECORD, prompt_ids=tiny.encode(RECORD.question), steps=copy.deepcopy(steps))
        reward.score_episodes([episode])
        full = [s.reward for s in episode.steps]
        truncated = []
        for index, step in enumerate(steps):
            prefix = Episode(record=RECORD, prompt_ids=tiny.encode(RECORD.question), steps=copy.deepcopy(steps[:index]))
            truncated += reward.score_steps([StepToScore(prefix, copy.deepcopy(step), index + 1)])
        assert full == pytest.approx(truncated, abs=1e-5)
        assert full[2] == 1.0 and full[1] != 0.0


def test_a_gold_answer_that_does_not_fit_the_context_is_skipped_and_counted(tiny: Policy) -> None:
    scorer = GoldAnswerScorer(tiny, scoring_model(tiny.model, base_only=False))
    reward = InfoGainReward(scorer, max_information_tokens=200)
    long_record = QARecord(id="q8", question="?", golden_answers=(" ".join(["Port Dalvin"] * 400),))
    episode = Episode(record=long_record, prompt_ids=tiny.encode("What is it?"))
    [value] = reward.score_steps([StepToScore(episode, _search(tiny, "Kesh", [GOLD_PASSAGE]), 1)])
    assert value is None  # no reward rather than a silent 0
    assert reward.metrics()["reward/infogain_skipped"] == 2  # the candidate's context and the "before" context


def test_questions_without_a_golden_answer_are_refused_at_start_up(tiny: Policy) -> None:
    reward = InfoGainReward(GoldAnswerScorer(tiny, scoring_model(tiny.model, base_only=False)),
                            max_information_tokens=200)
    reward.check_records([RECORD])
    empty = QARecord(id="nq-17", question="who?", golden_answers=("",), dataset="nq")
    with pytest.raises(ConfigError, match="question 'nq-17' of nq has no golden answer"):
        reward.check_records([RECORD, empty])


def test_a_search_candidate_without_its_passages_is_an_error_not_a_zero(tiny: Policy) -> None:
    reward = InfoGainReward(GoldAnswerScorer(tiny, scoring_model(tiny.model, base_only=False)),
                            max_information_tokens=200)
    episode = Episode(record=RECORD, prompt_ids=tiny.encode(RECORD.question))
    with pytest.raises(SlateError, match="retrieve_candidates=True"):
        reward.score_steps([StepToScore(episode, _search(tiny, "Kesh", None), 1)])
