from __future__ import annotations

import pytest

from slate.data.records import QARecord
from slate.errors import JudgeError
from slate.judge.oracle import OracleJudge
from slate.judge.types import JudgeItem, JudgeVerdict
from slate.retrieval.base import Hit
from slate.rewards.judged import INVALID_STEP_REWARD, ExactMatchStepReward, JudgedStepReward, judged_step_reward
from slate.rollout.actions import parse_step
from slate.rollout.episode import Episode, Step, StepToScore

CHAIN = [
    {"sub_question": "Who founded Velmora Labs?", "entity": "Velmora Labs", "relation": "founded_by",
     "answer": "Kesh Fenn", "doc_id": "d1"},
    {"sub_question": "Where was Kesh Fenn born?", "entity": "Kesh Fenn", "relation": "born_in",
     "answer": "Port Dalvin", "doc_id": "d2"},
]
RECORD = QARecord(id="q", question="Where was the founder of Velmora Labs born?", golden_answers=("Port Dalvin",),
                  metadata={"hops": 2, "chain": CHAIN})


def _step(text: str, hits: list[Hit] | None = None, forced: bool = False) -> Step:
    return Step(text=text, parsed=parse_step(text), token_ids=[1], logprobs=[0.0], hits=hits or [],
                is_forced=forced)


def test_step_reward_by_hand() -> None:
    # search: think + query = 1 + 0
    assert judged_step_reward("search", 1, 0, step_index=2, max_steps=4, early_answer_bonus=0.1) == 1.0
    # answer at t=1 of B=4: 1 + 1 + 0.1 * 3/4 = 2.075
    assert judged_step_reward("answer", 1, 1, 1, 4, 0.1) == pytest.approx(2.075)
    # answer at t=B: no bonus; beyond B (forced): no negative bonus
    assert judged_step_reward("answer", -1, 1, 4, 4, 0.1) == 0.0
    assert judged_step_reward("answer", 0, 1, 5, 4, 0.1) == 1.0
    assert judged_step_reward("invalid", 1, 1, 1, 4, 0.1) == INVALID_STEP_REWARD


def test_oracle_judged_rewards_on_a_hand_episode() -> None:
    reward = JudgedStepReward(OracleJudge(), max_steps=4, early_answer_bonus=0.1)
    first = _step("<think> I need the founder of Velmora Labs. </think><search> Who founded Velmora Labs? </search>",
                  hits=[Hit("d1", "Velmora Labs", "Founded by Kesh Fenn.", 1.0)])
    episode = Episode(record=RECORD, prompt_ids=[0], steps=[first])
    good = _step("<think> Kesh Fenn founded it. I need the birthplace of Kesh Fenn. </think>"
                 "<search> Where was Kesh Fenn born? </search>")
    repeat = _step("<think> I need the founder of Velmora Labs. </think><search> Who founded Velmora Labs? </search>")
    guess = _step("<think> Kesh Fenn was born in Port Dalvin. </think><answer> Port Dalvin </answer>")
    wrong = _step("<think> hmm </think><answer> Velmora </answer>")
    broken = _step("<think> no action")
    rewards = reward.score_steps([StepToScore(episode, s, 2) for s in (good, repeat, guess, wrong, broken)])
    # good: think names the next hop's entity (+1), query names it (+1) -> 2
    # repeat: think re-targets a solved hop (-1), query repeats an earlier query (-1) -> -2
    # guess: think names an unsolved hop's answer (-1), answer exact (+1), bonus 0.1*(4-2)/4 = 0.05 -> 0.05
    # wrong: think vague (0), answer wrong (-1), bonus 0.05 -> -0.95
    assert rewards == pytest.approx([2.0, -2.0, 0.05, -0.95, INVALID_STEP_REWARD])
    assert good.scores == {"think_score": 1.0, "query_score": 1.0}
    assert guess.reward == pytest.approx(0.05)
    assert guess.scores["early_answer_bonus"] == pytest.approx(0.05)  # 0.1 * (4 - 2) / 4, kept apart for the sampler


def test_the_early_answer_bonus_uses_the_episodes_own_budget() -> None:
    # a tight budget (rollout.budget_slack) gives the 2-hop question B = 5 instead of max_steps = 13:
    # an answer at t = 3 gets 0.1 * (5 - 3) / 5 = 0.04, not 0.1 * (13 - 3) / 13
    reward = JudgedStepReward(OracleJudge(), max_steps=13, early_answer_bonus=0.1)
    answer = _step("<think> So the answer is Port Dalvin. </think><answer> Port Dalvin </answer>")
    episode = Episode(record=RECORD, prompt_ids=[0], budget=5)
    reward.score_steps([StepToScore(episode, answer, 3)])
    assert answer.scores["early_answer_bonus"] == pytest.approx(0.04)


def test_forced_answers_are_not_scored_by_default() -> None:
    forced = _step("<answer> Port Dalvin </answer>", forced=True)
    episode = Episode(record=RECORD, prompt_ids=[0])
    assert JudgedStepReward(OracleJudge(), 4).score_steps([StepToScore(episode, forced, 5)]) == [None]
    scored = JudgedStepReward(OracleJudge(), 4, score_forced_answer=True)
    # empty think: vague (0); exact answer (+1); t = 5 > B = 4 gives no bonus rather than a negative one
    assert scored.score_steps([StepToScore(episode, forced, 5)]) == [1.0]


class DeadJudge:
    name = "dead"

    def score(self, items: list[JudgeItem]) -> list[JudgeVerdict]:
        return [JudgeVerdict(score=0, explanation="timeout", failed=True) for _ in items]

    def metrics(self) -> dict[str, float]:
        return {}


def test_a_dead_judge_stops_the_run_instead_of_training_on_zeros() -> None:
    episode = Episode(record=RECORD, prompt_ids=[0])
    step = _step("<think> x </think><search> y </search>")
    with pytest.raises(JudgeError, match="judge unavailable"):
        JudgedStepReward(DeadJudge(), 4, max_failure_share=0.5).score_steps([StepToScore(episode, step, 1)])


def test_exact_match_step_reward() -> None:
    episode = Episode(record=RECORD, prompt_ids=[0])
    steps = [_step("<think> a </think><answer> port dalvin </answer>"), _step("<think> a </think><search> b </search>"),
             _step("<think> a </think><answer> Kesh </answer>"), _step("junk")]
    assert ExactMatchStepReward().score_steps([StepToScore(episode, s, 1) for s in steps]) == [1.0, 0.0, 0.0, -1.0]
