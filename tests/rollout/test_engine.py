from __future__ import annotations

import torch
from scripted_policy import FixedRetriever, ScriptedGenerator

from slate.config import RolloutConfig
from slate.data.records import QARecord
from slate.rollout.actions import render_information
from slate.rollout.engine import RolloutEngine, step_budget

RECORD = QARecord(id="q1", question="In which country is Dalvin?", golden_answers=("Orvania",))
CONFIG = RolloutConfig(max_steps=3, max_step_tokens=64, prompt_template="Question: {question}\n", batch_size=8)


def search_then_answer(text: str, branch: int) -> str:
    if "<information>" not in text:
        return "<think> I need the country of Dalvin. </think><search> Dalvin country </search>"
    return "<think> Dalvin is in Orvania. </think><answer> Orvania </answer>"


def test_search_then_answer_masks_and_boundaries(policy) -> None:
    generator = ScriptedGenerator(policy, search_then_answer)
    retriever = FixedRetriever()
    engine = RolloutEngine(policy, retriever, CONFIG, top_k=1, generator=generator)
    [episode] = engine.rollout([RECORD], copies=1)
    assert [s.action for s in episode.steps] == ["search", "answer"]
    assert episode.final_answer == "Orvania" and episode.is_valid and episode.num_searches == 1
    assert retriever.queries == ["Dalvin country"]
    search, answer = episode.steps
    assert policy.decode(search.feedback_ids) == render_information(retriever.search(["x"], 1)[0])
    ids, mask, old = episode.token_ids(), episode.loss_mask(), episode.old_logprobs()
    assert len(ids) == len(mask) == len(old)
    # trained tokens are exactly the two sampled steps, in order; the information block is masked out
    assert [t for t, m in zip(ids, mask, strict=True) if m] == search.token_ids + answer.token_ids
    assert sum(mask) == len(search.token_ids) + len(answer.token_ids)
    assert all(v == -0.5 for v, m in zip(old, mask, strict=True) if m) and all(v == 0 for v, m in
                                                                            zip(old, mask, strict=True) if not m)
    prompt_len = len(episode.prompt_ids)
    info_start = prompt_len + len(search.token_ids)
    assert ids[info_start:info_start + len(search.feedback_ids)] == search.feedback_ids
    assert not any(mask[info_start:info_start + len(search.feedback_ids)])


def test_budget_forces_one_answer_step(policy) -> None:
    def always_search(text: str, branch: int) -> str:
        if text.endswith("<answer>"):
            return " Orvania </answer>"
        return "<think> more </think><search> Dalvin </search>"

    engine = RolloutEngine(policy, FixedRetriever(), CONFIG, top_k=1, generator=ScriptedGenerator(policy,
                                                                                                 always_search))
    [episode] = engine.rollout([RECORD])
    assert len(episode.steps) == CONFIG.max_steps + 1
    forced = episode.steps[-1]
    assert forced.is_forced and forced.action == "answer" and forced.parsed.content == "Orvania"
    assert policy.decode(forced.injected_ids) == "<answer>"
    mask = episode.loss_mask()
    start = len(episode.token_ids()) - len(forced.token_ids) - len(forced.injected_ids)
    assert mask[start:start + len(forced.injected_ids)] == [False] * len(forced.injected_ids)
    assert engine.counters["rollout/forced_answers"] == 1


def test_step_budget_by_hand() -> None:
    two_hops = QARecord(id="q2", question="?", golden_answers=("x",), metadata={"hops": 2})
    # no slack: every question gets max_steps; slack s: hops + 1 (the answer) + s, capped by max_steps
    assert step_budget(two_hops, max_steps=9, budget_slack=None) == 9
    assert step_budget(two_hops, max_steps=9, budget_slack=0) == 3
    assert step_budget(two_hops, max_steps=9, budget_slack=2) == 5
    assert step_budget(two_hops, max_steps=4, budget_slack=2) == 4
    assert step_budget(RECORD, max_steps=9, budget_slack=0) == 9  # no hop count: the global budget


def test_a_tight_budget_forces_the_answer_after_hops_plus_slack_steps(policy) -> None:
    def always_search(text: str, branch: int) -> str:
        return " Orvania </answer>" if text.endswith("<answer>") else "<think> more </think><search> Dalvin </search>"

    one_hop = QARecord(id="q3", question="In which country is Dalvin?", golden_answers=("Orvania",),
                       metadata={"hops": 1})
    config = CONFIG.model_copy(update={"max_steps": 6, "budget_slack": 1})
    engine = RolloutEngine(policy, FixedRetriever(), config, top_k=1, generator=ScriptedGenerator(policy,
                                                                                                 always_search))
    loose, tight = engine.rollout([RECORD, one_hop])
    assert len(loose.steps) == 6 + 1  # no hop count: max_steps searches, then the forced answer
    assert tight.budget == 3 and len(tight.steps) == 3 + 1  # 1 hop + 1 + slack 1 = 3 steps, then forced
    assert tight.steps[-1].is_forced and not tight.steps[-2].is_forced


def test_invalid_step_gets_a_masked_note_and_is_counted(policy) -> None:
    def invalid_then_answer(text: str, branch: int) -> str:
        if "format" not in text:
            return "<think> hmm </think> no action here"
        return "<think> ok </think><answer> Orvania </answer>"

    engine = RolloutEngine(policy, FixedRetriever(), CONFIG, generator=ScriptedGenerator(policy, invalid_then_answer))
    [episode] = engine.rollout([RECORD])
    assert [s.action for s in episode.steps] == ["invalid", "answer"]
    assert policy.decode(episode.steps[0].feedback_ids) == CONFIG.invalid_note
    assert not episode.is_valid  # an invalid step makes the trajectory invalid even though it answered
    assert engine.counters["rollout/invalid_actions"] == 1


def test_dead_retriever_gives_empty_information_not_a_crash(policy) -> None:
    engine = RolloutEngine(policy, FixedRetriever(fail_times=10), CONFIG, max_retries=2,
                           generator=ScriptedGenerator(policy, search_then_answer))
    [episode] = engine.rollout([RECORD])
    search = episode.steps[0]
    assert search.retrieval_failed and search.hits == []
    assert policy.decode(search.feedback_ids) == render_information([])
    assert engine.counters["rollout/retrieval_failures"] == 1
    assert engine.counters["rollout/retrieval_retries"] == 3


def test_k_copies_share_one_first_prefill(policy) -> None:
    generator = ScriptedGenerator(policy, search_then_answer)
    engine = RolloutEngine(policy, FixedRetriever(), CONFIG, generator=generator)
    episodes = engine.rollout([RECORD, RECORD], copies=3)
    assert len(episodes) == 6
    assert generator.calls[0] == (2, 3)  # first step: one prefix per question, 3 branches each
    assert all(len(e.steps) == 2 for e in episodes)
    assert len({id(e.steps[0]) for e in episodes}) == 6  # each copy owns its own first step


def test_policy_errors_are_clear(tmp_path, policy) -> None:
    import pytest

    from slate.config import ModelConfig
    from slate.errors import PolicyError
    from slate.rollout.policy import check_tags, load_policy

    with pytest.raises(PolicyError, match="not a checkpoint directory"):
        load_policy(ModelConfig(source="tiny"), tmp_path)
    from transformers import PreTrainedTokenizerFast

    check_tags(policy.tokenizer, "tiny")  # the tiny tokenizer passes
    with pytest.raises(PolicyError, match="single tokens"):
        check_tags(PreTrainedTokenizerFast(tokenizer_object=_bpe_without_tags()), "plain")
    long_question = "word " * 2000
    with pytest.raises(PolicyError, match="longer than the context"):
        policy.prompt_ids(long_question, "Q: {question}")


def _bpe_without_tags():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(["plain text only"] * 5, trainers.BpeTrainer(vocab_size=300, show_progress=False))
    return tokenizer


def test_carrying_the_kv_cache_across_steps_changes_no_trajectory(policy) -> None:
    # the in-process sampler on the random tiny model: its steps are mostly invalid, each answered by a note, so
    # every trajectory runs the full budget and each step's prefix extends the last one's
    def run(carry: bool, greedy: bool):
        config = CONFIG.model_copy(update={"carry_kv_cache": carry, "max_step_tokens": 24})
        engine = RolloutEngine(policy, FixedRetriever(), config, top_k=1, seed=7)
        episodes = engine.rollout([RECORD, RECORD], copies=2, greedy=greedy)
        return engine, episodes

    for greedy in (True, False):
        carrying, with_carry = run(True, greedy)
        plain, without = run(False, greedy)
        assert carrying.carries_kv_cache and not plain.carries_kv_cache
        assert carrying.counters["rollout/carried_tokens"] > 0 and plain.counters["rollout/carried_tokens"] == 0
        for a, b in zip(with_carry, without, strict=True):
            assert len(a.steps) >= 2 and a.token_ids() == b.token_ids()
            torch.testing.assert_close(torch.tensor(a.old_logprobs()), torch.tensor(b.old_logprobs()),
                                       atol=1e-5, rtol=0)


def test_a_backend_swapped_in_after_construction_is_used_without_carrying(policy) -> None:
    # the server backends replace engine.generate on a built engine; that sampler must get every call
    engine = RolloutEngine(policy, FixedRetriever(), CONFIG)
    assert engine.carries_kv_cache
    generator = ScriptedGenerator(policy, search_then_answer)
    engine.generate = generator
    assert not engine.carries_kv_cache
    [episode] = engine.rollout([RECORD], copies=1)
    assert [s.action for s in episode.steps] == ["search", "answer"] and len(generator.calls) == 2
    assert engine.counters["rollout/carried_tokens"] == 0
