"""StepSearch reward, checked by hand on a five-passage corpus whose TF-IDF cosines are known by construction.

Every corpus word appears in exactly one passage, once, so every word has the same IDF and a passage's TF-IDF
vector is proportional to its 0/1 word counts. Two passages that share no word have cosine 0; a retrieved text
holding 2 of a gold passage's 4 words plus 2 words of another passage has cosine 2 / (2 · 2) = 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slate.data.records import Passage, QARecord
from slate.errors import DataError
from slate.retrieval.base import Hit, hit_from_contents
from slate.rewards.base import RewardStrategy
from slate.rewards.stepsearch import (
    StepSearchReward,
    best_cosines,
    gold_evidence,
    information_gain,
    redundancy,
    search_key_score,
)
from slate.rollout.actions import ParsedStep
from slate.rollout.episode import Episode, Step

PASSAGES = [
    Passage("d1", "Amber Basalt\nCedar Delta"),
    Passage("d2", "Ember Fjord\nGranite Harbor"),
    Passage("d3", "Iris Juniper\nKelp Lagoon"),
    Passage("d4", "Maple Nectar\nOnyx Pebble"),
    Passage("d5", "Quartz Raven\nSpruce Tundra"),
]
BY_ID = {p.id: p for p in PASSAGES}
SUB_QUESTIONS = ("Who founded Amber Basalt?", "Where is Ember Fjord located?")
CHAIN = [
    {"sub_question": SUB_QUESTIONS[0], "entity": "Amber Basalt", "relation": "founded_by", "answer": "Ember Fjord",
     "doc_id": "d1"},
    {"sub_question": SUB_QUESTIONS[1], "entity": "Ember Fjord", "relation": "located_in",
     "answer": "Port Granite Harbor", "doc_id": "d2"},
]


@pytest.fixture(scope="module")
def reward() -> StepSearchReward:
    return StepSearchReward(PASSAGES)


def record(metadata: dict | None = None, record_id: str = "q1", dataset: str = "toy") -> QARecord:
    return QARecord(id=record_id, question="Where is the company founded by Amber Basalt's founder located?",
                    golden_answers=("Port Granite Harbor",),
                    metadata={"hops": 2, "chain": CHAIN} if metadata is None else metadata, dataset=dataset)


def hit(doc_id: str) -> Hit:
    return hit_from_contents(doc_id, BY_ID[doc_id].contents, 1.0)


def search(query: str, hits: list[Hit]) -> Step:
    text = f"<think>look up</think><search>{query}</search>"
    return Step(text=text, parsed=ParsedStep("look up", "search", query, True), token_ids=[1, 2], logprobs=[0.0, 0.0],
                hits=hits)


def answer(content: str) -> Step:
    text = f"<think>done</think><answer>{content}</answer>"
    return Step(text=text, parsed=ParsedStep("done", "answer", content, True), token_ids=[3], logprobs=[0.0])


def invalid() -> Step:
    return Step(text="<think>hmm</think>", parsed=ParsedStep("hmm", "invalid", "", True), token_ids=[4],
                logprobs=[0.0])


def returns_to_go(episode: Episode) -> list[float]:
    rewards = [step.reward or 0.0 for step in episode.steps]
    return [sum(rewards[j:]) for j in range(len(rewards))]


# ---- pure functions ------------------------------------------------------------------------------------------


def test_information_gain_by_hand():
    # c = [[0.2, 0.0], [0.5, 0.1], [0.3, 0.4]] (3 steps, 2 gold passages)
    # G_0 = (0.2 + 0.0) / 2 = 0.1
    # G_1 = ((0.5 - 0.2) + (0.1 - 0.0)) / 2 = 0.2
    # G_2 = (max(0, 0.3 - 0.5) + (0.4 - 0.1)) / 2 = 0.15   (gold 0 found less well than before: no gain, no loss)
    gains = information_gain([[0.2, 0.0], [0.5, 0.1], [0.3, 0.4]])
    assert gains == pytest.approx([0.1, 0.2, 0.15], abs=1e-12)
    assert information_gain([]) == []
    assert information_gain(np.array([[1.0], [1.0]])) == [1.0, 0.0]  # finding the same passage again earns nothing


def test_information_gain_rejects_no_gold_passages():
    with pytest.raises(ValueError, match="gold passages >= 1"):
        information_gain(np.zeros((2, 0)))


def test_best_cosines_by_hand():
    # retrieved rows h0 = (1, 0, 0), h1 = (0.6, 0.8, 0); gold g0 = (0, 1, 0), g1 = (1, 0, 0), g2 = (0, 0, 1)
    # c(g0) = max(0, 0.8) = 0.8; c(g1) = max(1, 0.6) = 1; c(g2) = 0
    retrieved = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]])
    gold = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(best_cosines(retrieved, gold), [0.8, 1.0, 0.0])
    np.testing.assert_array_equal(best_cosines(np.zeros((0, 3)), gold), [0.0, 0.0, 0.0])  # nothing retrieved


def test_redundancy_share_by_hand():
    # step 1: b of {b, c} seen before -> 1/2; step 2: a, b, c of {a, b, c, d} seen -> 3/4
    assert redundancy([["a", "b"], ["b", "c"], ["a", "b", "c", "d"]]) == [0.0, 0.5, 0.75]
    assert redundancy([[], ["a"]]) == [0.0, 0.0]  # an empty step is not redundant
    assert redundancy([["a", "a"], ["a", "a"]]) == [0.0, 1.0]  # a repeat inside one step is not; a later one is
    assert redundancy([]) == []


def test_search_key_score_by_hand():
    # "amber basalt founder" vs "who founded amber basalt": common {amber, basalt} = 2,
    # P = 2/3, R = 2/4, F1 = 2 * (2/3)(1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    assert search_key_score(["amber basalt founder"], [[SUB_QUESTIONS[0]]]) == pytest.approx(4 / 7)
    # a second phrasing of the same hop matches exactly -> 1
    assert search_key_score(["amber basalt founder"], [[SUB_QUESTIONS[0], "Amber Basalt founder"]]) == 1.0
    # two hops, the query matches only the second one exactly: (0 + 1) / 2
    assert search_key_score(["Where is Ember Fjord located"], [[SUB_QUESTIONS[0]], [SUB_QUESTIONS[1]]]) == 0.5
    assert search_key_score([], [[SUB_QUESTIONS[0]]]) == 0.0  # no query, no key score
    with pytest.raises(ValueError, match="at least one phrasing"):
        search_key_score(["q"], [[]])


# ---- the strategy --------------------------------------------------------------------------------------------


def test_is_a_reward_strategy(reward: StepSearchReward):
    assert isinstance(reward, RewardStrategy)
    assert reward.metrics() == {"stepsearch/format_gated": 0.0}


@pytest.mark.parametrize("metadata", [
    None,  # the synthetic world's chain
    {"gold_doc_ids": ["d1", "d2"], "sub_questions": [SUB_QUESTIONS[0], [SUB_QUESTIONS[1]]]},  # a real dataset's form
])
def test_full_reward_of_two_searches_then_answer(reward: StepSearchReward, metadata: dict | None):
    half_d2 = Hit("web-half-d2", "Ember Fjord", "Kelp Lagoon", 0.5)  # 2 words of d2 + 2 of d3
    episode = Episode(record(metadata), prompt_ids=[0], steps=[
        search("amber basalt", [hit("d1"), hit("d3")]),
        search("where is ember fjord", [hit("d1"), half_d2]),
        answer("Granite Harbor"),
    ])
    reward.score_episodes([episode])
    first, second, last = episode.steps
    # step 0: c_0 = (cos(d1, d1), max(cos(d3, d2), cos(d1, d2))) = (1, 0); G_0 = (1 + 0) / 2 = 0.5; P_0 = 0
    #         r_0 = 0.6 * (0.5 - 0) = 0.3
    assert first.scores == pytest.approx({"information_gain": 0.5, "redundancy": 0.0})
    assert first.reward == pytest.approx(0.3)
    # step 1: c_1 = (1, 0.5); G_1 = (max(0, 1 - 1) + max(0, 0.5 - 0)) / 2 = 0.25; d1 seen before: P_1 = 1/2
    #         r_1 = 0.6 * (0.25 - 0.5) = -0.15
    assert second.scores == pytest.approx({"information_gain": 0.25, "redundancy": 0.5})
    assert second.reward == pytest.approx(-0.15)
    # answer: F1("granite harbor", "port granite harbor") = 2 * 1 * (2/3) / (1 + 2/3) = 0.8
    # key: hop 0 best is "amber basalt" vs "who founded amber basalt": P = 1, R = 1/2, F1 = 2/3
    #      hop 1 best is "where is ember fjord" vs "where is ember fjord located": P = 1, R = 4/5, F1 = 8/9
    #      K = (2/3 + 8/9) / 2 = 7/9
    # r = 0.8 + 0.618 * 7/9 = 1.2806667
    assert last.scores == pytest.approx({"answer_f1": 0.8, "search_key_score": 7 / 9})
    assert last.reward == pytest.approx(0.8 + 0.618 * 7 / 9)


def test_coefficients_are_constructor_arguments():
    reward = StepSearchReward(PASSAGES, step_reward_scale=1.0, search_key_weight=0.0, format_penalty=-2.0)
    answered = Episode(record(), [0], [search("amber basalt", [hit("d1")]), answer("Port Granite Harbor")])
    unanswered = Episode(record(), [0], [search("amber basalt", [hit("d1")])])
    reward.score_episodes([answered, unanswered])
    assert [s.reward for s in answered.steps] == pytest.approx([0.5, 1.0])  # G = 0.5, F1 = 1, key weight 0
    assert [s.reward for s in unanswered.steps] == [-2.0]


def test_gate_puts_the_penalty_on_the_last_step_only(reward: StepSearchReward):
    never_answers = Episode(record(), [0], [search("amber basalt", [hit("d1")]), search("ember", [hit("d2")])])
    ends_invalid = Episode(record(), [0], [search("amber basalt", [hit("d1")]), invalid()])
    for episode in (never_answers, ends_invalid):
        for step in episode.steps:
            step.reward = 5.0  # stale values from an earlier scoring are cleared
    reward.score_episodes([never_answers, ends_invalid, Episode(record(), [0], [])])
    assert [s.reward for s in never_answers.steps] == [None, -1.0]
    assert [s.reward for s in ends_invalid.steps] == [None, -1.0]
    assert returns_to_go(never_answers) == [-1.0, -1.0]  # every step's return-to-go is the penalty


def test_invalid_middle_step_is_not_gated(reward: StepSearchReward):
    # ends with a well-formed answer: searches and the answer are scored, the invalid step carries no reward
    episode = Episode(record(), [0], [search("amber basalt", [hit("d1")]), invalid(), answer("Port Granite Harbor")])
    reward.score_episodes([episode])
    assert episode.steps[0].reward == pytest.approx(0.6 * 0.5)
    assert episode.steps[1].reward is None
    # F1 = 1; key: hop 0 F1 = 2/3 (as above), hop 1 F1 = 0 -> K = 1/3
    assert episode.steps[2].reward == pytest.approx(1.0 + 0.618 / 3)


def test_failed_retrieval_step_scores_zero(reward: StepSearchReward):
    failed = search("amber basalt", [])
    failed.retrieval_failed = True
    episode = Episode(record(), [0], [failed, search("amber basalt", [hit("d1")]), answer("nothing")])
    reward.score_episodes([episode])
    # step 0 retrieved nothing: G = 0, P = 0; step 1 then earns the whole gain of d1: G = (1 + 0) / 2
    assert [episode.steps[0].reward, episode.steps[1].reward] == pytest.approx([0.0, 0.3])


# ---- data checks ---------------------------------------------------------------------------------------------


def test_check_records_names_dataset_record_and_fix(reward: StepSearchReward):
    good = record()
    bare = record(metadata={}, record_id="nq-7", dataset="nq")
    with pytest.raises(DataError) as info:
        reward.check_records([good, bare, record(metadata={}, record_id="nq-8", dataset="nq")])
    message = str(info.value)
    assert "'nq'" in message and "'nq-7'" in message and "nq-8" not in message
    assert "metadata.gold_doc_ids" in message and "Search-R1" in message
    reward.check_records([good])  # the chain is enough


def test_check_records_accepts_the_generic_form(reward: StepSearchReward):
    generic = record(metadata={"gold_doc_ids": ["d1", "d2", "d1"], "sub_questions": ["a b", ["c d", "e f"]]})
    reward.check_records([generic])
    evidence = gold_evidence(generic)
    assert evidence.doc_ids == ("d1", "d2")  # a repeated supporting passage counts once in the mean
    assert evidence.sub_questions == (("a b",), ("c d", "e f"))


def test_check_records_refuses_missing_sub_questions_and_bad_types(reward: StepSearchReward):
    with pytest.raises(DataError, match="no sub-questions"):
        reward.check_records([record(metadata={"gold_doc_ids": ["d1"]})])
    with pytest.raises(DataError, match="string or a list of strings"):
        reward.check_records([record(metadata={"gold_doc_ids": ["d1"], "sub_questions": [3]})])


def test_check_records_refuses_gold_id_not_in_corpus(reward: StepSearchReward):
    hop = {**CHAIN[0], "doc_id": "d99"}
    with pytest.raises(DataError, match=r"record 'q1'.*\['d99'\] are not in the corpus"):
        reward.check_records([record(metadata={"chain": [hop]})])


def test_scoring_a_record_without_gold_raises_not_zero(reward: StepSearchReward):
    episode = Episode(record(metadata={}, record_id="x-1", dataset="popqa"), [0], [answer("Port Granite Harbor")])
    with pytest.raises(DataError, match="'x-1'"):
        reward.score_episodes([episode])


def test_from_corpus_file(tmp_path: Path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": p.id, "contents": p.contents}) + "\n" for p in PASSAGES))
    reward = StepSearchReward.from_corpus(path, step_reward_scale=1.0)
    episode = Episode(record(), [0], [search("amber basalt", [hit("d1")]), answer("x")])
    reward.score_episodes([episode])
    assert episode.steps[0].reward == pytest.approx(0.5)
    with pytest.raises(DataError, match="corpus is empty"):
        StepSearchReward([])
