"""The SLATE reward with a group judge: k siblings of one prefix judged in one request per dimension, and the
prefix budget (``max_context_chars``) applied to what the judge sees."""

from __future__ import annotations

import logging

import pytest
from judge_chat_server import ScriptedChatServer, keyword_judge, user_prompt

from slate.data.records import QARecord
from slate.judge.items import context_cut, render_context
from slate.judge.openai_backend import OpenAIJudge
from slate.retrieval.base import Hit
from slate.rewards.judged import JudgedStepReward
from slate.rollout.actions import parse_step
from slate.rollout.episode import Episode, Step, StepToScore

RECORD = QARecord(id="q", question="Where was the founder of Velmora Labs born?", golden_answers=("Port Dalvin",))
LONG = "Velmora Labs was founded by Kesh Fenn. " + "x" * 400  # 439 characters
PREFIX_HITS = [Hit("d1", "Velmora Labs", LONG, 1.0), Hit("d2", "Other", "short", 0.5)]


def _step(text: str, hits: list[Hit] | None = None) -> Step:
    return Step(text=text, parsed=parse_step(text), token_ids=[1], logprobs=[0.0], hits=hits or [])


def _siblings() -> list[StepToScore]:
    prefix = Episode(record=RECORD, prompt_ids=[0], steps=[
        _step("<think> I need the founder. </think><search> Velmora Labs founder </search>", PREFIX_HITS)])
    candidates = [
        "<think> GOOD: Kesh Fenn founded it. </think><search> GOOD Kesh Fenn birthplace </search>",
        "<think> hmm </think><search> GOOD born </search>",
        "<think> GOOD guess </think><answer> Port Dalvin </answer>",
        "<think> no action",  # invalid: -2 without a judge call
    ]
    return [StepToScore(prefix, _step(text), 2) for text in candidates]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLATE_TEST_JUDGE_KEY", "test-key")


def test_siblings_are_judged_together_per_dimension(chat_server: ScriptedChatServer) -> None:
    chat_server.responder = keyword_judge
    judge = OpenAIJudge(model="m", base_url=chat_server.base_url, api_key_env="SLATE_TEST_JUDGE_KEY", mode="group",
                        max_retries=0, timeout_s=5.0)
    rewards = JudgedStepReward(judge, max_steps=4).score_steps(_siblings())
    # think: +1, -1, +1; query: +1, +1; answer: -1 ("Port Dalvin" has no GOOD). t = 2, B = 4:
    # search r = think + query; answer r = think + answer + 0.1 * (4 - 2) / 4 = 1 - 1 + 0.05; invalid -2.
    assert rewards == pytest.approx([2.0, 0.0, 0.05, -2.0])
    prompts = [user_prompt(b) for b in chat_server.bodies]
    # one request for the 3 thinks, one for the 2 queries, the lone answer as an item
    assert sorted(p.count("<<<BEGIN_CANDIDATE_") for p in prompts) == [0, 3, 4]  # a query candidate has 2 fences
    assert all(p.count(LONG) == 1 for p in prompts if "TRAJECTORY_SO_FAR" in p)  # the shared prefix sent once
    assert judge.metrics()["judge/group_calls"] == 2


def test_prefix_budget_cuts_passages_only_and_is_logged(chat_server: ScriptedChatServer,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    targets = _siblings()
    prefix = targets[0].episode
    cut = render_context(prefix, 1, max_passage_chars=20)
    assert "Doc 1(Title: Velmora Labs) Velmora Labs was fou\n" in cut  # the first 20 characters
    assert "Doc 2(Title: Other) short" in cut  # shorter than the budget: unchanged
    assert "<search> Velmora Labs founder </search>" in cut  # the policy's own text is never cut
    assert render_context(prefix, 1) == render_context(prefix, 1, max_passage_chars=10_000)
    assert context_cut(prefix, 1, 20) == (1, len(LONG) - 20)
    chat_server.responder = keyword_judge
    judge = OpenAIJudge(model="m", base_url=chat_server.base_url, api_key_env="SLATE_TEST_JUDGE_KEY",
                        max_retries=0, timeout_s=5.0)
    reward = JudgedStepReward(judge, max_steps=4, max_context_chars=20)
    with caplog.at_level(logging.INFO, logger="slate.rewards.judged"):
        reward.score_steps(targets)
    assert all(LONG not in user_prompt(b) and "x" * 30 not in user_prompt(b) for b in chat_server.bodies)
    # four siblings share one prefix: its one long passage is counted once, not four times
    assert (reward.counters["judge/passages_cut"], reward.counters["judge/context_chars_cut"]) == (1, len(LONG) - 20)
    assert "cut 1 retrieved passages" in caplog.text
