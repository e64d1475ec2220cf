from __future__ import annotations

import torch

from slate.config import TinyModelConfig
from slate.logprobs import pad_batch, token_logprobs
from slate.rollout.actions import STOP_STRINGS
from slate.rollout.generate import SamplingParams, StopCondition, sample_branches
from slate.rollout.policy import build_tiny_policy

TEXTS = ["Who founded Velmora Labs? <think> a </think><search> b </search><answer> c </answer>"] * 10


def _policy():
    return build_tiny_policy(TEXTS, TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                                    max_positions=256, vocab_size=300), seed=3)


def _stop(policy):
    return StopCondition(STOP_STRINGS, policy.encode, policy.decode, policy.eos_token_id)


def test_branching_equals_naive_sampling_for_one_seed() -> None:
    policy = _policy()
    prefixes = [policy.encode("Who founded Velmora Labs? <think>"), policy.encode("a b c <search>")]
    params = SamplingParams(max_new_tokens=12, temperature=1.0)
    shared = sample_branches(policy.model, prefixes, 4, params, _stop(policy), policy.pad_token_id,
                             torch.Generator().manual_seed(0))
    # naive: four copies of each prefix in the batch, every copy prefilled (benchmarks/branching.py)
    copies = sample_branches(policy.model, [p for p in prefixes for _ in range(4)], 1, params, _stop(policy),
                             policy.pad_token_id, torch.Generator().manual_seed(0))
    naive = [[group[0] for group in copies[i * 4:(i + 1) * 4]] for i in range(len(prefixes))]
    for shared_group, naive_group in zip(shared, naive, strict=True):
        for a, b in zip(shared_group, naive_group, strict=True):
            assert a.token_ids == b.token_ids
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=0)
    # siblings of one prefix are not copies of each other
    assert len({tuple(c.token_ids) for c in shared[0]}) > 1


def test_sampling_logprobs_match_a_full_forward() -> None:
    policy = _policy()
    prefixes = [policy.encode("Who founded"), policy.encode("Velmora Labs? <think> a </think>")]
    params = SamplingParams(max_new_tokens=10, temperature=0.8)
    groups = sample_branches(policy.model, prefixes, 2, params, _stop(policy), policy.pad_token_id,
                             torch.Generator().manual_seed(1))
    sequences, masks, expected = [], [], []
    for prefix, group in zip(prefixes, groups, strict=True):
        for continuation in group:
            sequences.append(prefix + continuation.token_ids)
            masks.append([False] * len(prefix) + [True] * len(continuation.token_ids))
            expected.append(continuation.logprobs)
    input_ids, attention_mask, target_mask = pad_batch(sequences, masks, policy.pad_token_id)
    with torch.no_grad():
        out = token_logprobs(policy.model, input_ids, attention_mask, target_mask, temperature=0.8)
    for row, values in enumerate(expected):
        got = out.logprobs[row][target_mask[row]]
        torch.testing.assert_close(got, torch.tensor(values), atol=1e-4, rtol=0)


def test_stop_condition_by_id_and_by_text() -> None:
    policy = _policy()
    stop = _stop(policy)
    close = policy.encode("</answer>")[0]
    assert stop.check([5, 6, close]) == "stop"
    assert stop.check([5, policy.eos_token_id]) == "eos"
    assert stop.check([5, 6]) is None
    # a tokenizer that splits the tag into pieces is matched on the decoded tail
    pieces = StopCondition(["</search>"], lambda s: list(s.encode()), lambda ids: bytes(ids).decode(), eos_token_id=0)
    assert pieces.needs_text and pieces.check(list(b"query </search>")) == "stop"
    assert pieces.check(list(b"query </sear")) is None


def test_every_row_ends_at_its_first_stop_or_at_the_cap() -> None:
    policy = _policy()
    stop = _stop(policy)
    groups = sample_branches(policy.model, [policy.encode("a b"), policy.encode("c")], 6,
                             SamplingParams(max_new_tokens=7), stop, policy.pad_token_id,
                             torch.Generator().manual_seed(5))
    for continuation in (c for group in groups for c in group):
        assert 1 <= len(continuation.token_ids) <= 7
        for index in range(len(continuation.token_ids) - 1):
            assert stop.check(continuation.token_ids[: index + 1]) is None  # nothing stopped earlier
        if continuation.finish_reason == "length":
            assert len(continuation.token_ids) == 7
        else:
            assert stop.check(continuation.token_ids) == continuation.finish_reason


def test_inverse_cdf_draws_follow_the_distribution() -> None:
    from slate.rollout.generate import SamplingParams, _pick_tokens

    probs = torch.tensor([0.5, 0.0, 0.3, 0.2])  # token 1 has probability 0
    logits = probs.clamp(min=1e-30).log().expand(40_000, -1)
    generator = torch.Generator().manual_seed(0)
    tokens, logprobs = _pick_tokens(logits, SamplingParams(max_new_tokens=1), generator)
    counts = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert counts[1] == 0  # never a zero-probability token
    torch.testing.assert_close(counts, probs, atol=0.01, rtol=0)  # 40k draws: 3 sigma is about 0.0075
    torch.testing.assert_close(logprobs, probs.clamp(min=1e-30).log()[tokens])
    # nucleus 0.75 keeps 0.5 and 0.3 (the first tokens whose cumulative mass reaches 0.75), renormalised
    tokens, _ = _pick_tokens(logits, SamplingParams(max_new_tokens=1, top_p=0.75), generator)
    counts = torch.bincount(tokens, minlength=4).float() / len(tokens)
    torch.testing.assert_close(counts, torch.tensor([0.625, 0.0, 0.375, 0.0]), atol=0.01, rtol=0)


def _carried_second_step(policy, params, seed=5):
    """Step 1 from three prefixes with carries kept, then step 2 from each (extended by an environment reply)."""
    prefixes = [policy.encode("Who founded"), policy.encode("Velmora Labs? <think> a </think>"), policy.encode("a")]
    firsts = sample_branches(policy.model, prefixes, 1, params, _stop(policy), policy.pad_token_id,
                             torch.Generator().manual_seed(seed), return_carry=True)
    replies = [policy.encode(" <information> x y </information>"), policy.encode(" b"), policy.encode(" c a")]
    seconds = [p + c.token_ids + r for p, [c], r in zip(prefixes, firsts, replies, strict=True)]
    return prefixes, firsts, seconds, [c.carry for [c] in firsts]


def test_a_carried_cache_holds_the_fed_tokens_of_each_row() -> None:
    policy = _policy()
    # a long cap so that rows stop at different steps and finished rows leave the batch mid-decode
    params = SamplingParams(max_new_tokens=40, temperature=1.0)
    prefixes, firsts, _, carries = _carried_second_step(policy, params, seed=4)
    # with this seed the rows stop after 3, 24 and 28 tokens: the first leaves the batch while the others decode
    assert [len(c.token_ids) for [c] in firsts] == [3, 24, 28]
    for prefix, [continuation], carry in zip(prefixes, firsts, carries, strict=True):
        sequence = prefix + continuation.token_ids
        # a row's last token is fed only if the batch decodes on after it stopped; tokens fed after that are junk
        assert len(carry.ids) in (len(sequence) - 1, len(sequence))
        assert carry.ids == tuple(sequence[:len(carry.ids)])
        for keys, values in carry.layers:
            assert keys.shape[1] == values.shape[1] == len(carry.ids)
        # every layer's carried keys and values equal those of a fresh prefill of the same ids
        fresh = sample_branches(policy.model, [[*carry.ids, 0]], 1,
                                SamplingParams(max_new_tokens=1, greedy=True), _stop(policy), policy.pad_token_id,
                                return_carry=True)[0][0].carry
        for (keys, values), (fresh_keys, fresh_values) in zip(carry.layers, fresh.layers, strict=True):
            torch.testing.assert_close(keys, fresh_keys[:, :len(carry.ids)], atol=1e-5, rtol=0)
            torch.testing.assert_close(values, fresh_values[:, :len(carry.ids)], atol=1e-5, rtol=0)


def test_sampling_from_a_carried_cache_equals_a_full_prefill() -> None:
    policy = _policy()
    params = SamplingParams(max_new_tokens=12, temperature=0.8)
    _, _, seconds, carries = _carried_second_step(policy, params)
    assert all(0 < len(c.ids) < len(s) for c, s in zip(carries, seconds, strict=True))
    # the same draws with and without the carry (one seed), and log-probs equal to a teacher-forced forward
    carried = sample_branches(policy.model, seconds, 2, params, _stop(policy), policy.pad_token_id,
                              torch.Generator().manual_seed(2), carried=carries)
    full = sample_branches(policy.model, seconds, 2, params, _stop(policy), policy.pad_token_id,
                           torch.Generator().manual_seed(2))
    sequences, masks, expected = [], [], []
    for prefix, group, full_group in zip(seconds, carried, full, strict=True):
        for continuation, reference in zip(group, full_group, strict=True):
            assert continuation.token_ids == reference.token_ids
            torch.testing.assert_close(torch.tensor(continuation.logprobs), torch.tensor(reference.logprobs),
                                       atol=1e-5, rtol=0)
            sequences.append(prefix + continuation.token_ids)
            masks.append([False] * len(prefix) + [True] * len(continuation.token_ids))
            expected.append(continuation.logprobs)
    input_ids, attention_mask, target_mask = pad_batch(sequences, masks, policy.pad_token_id)
    with torch.no_grad():
        out = token_logprobs(policy.model, input_ids, attention_mask, target_mask, temperature=0.8)
    for row, values in enumerate(expected):
        torch.testing.assert_close(out.logprobs[row][target_mask[row]], torch.tensor(values), atol=1e-4, rtol=0)


def test_a_carry_that_is_not_a_prefix_is_ignored() -> None:
    policy = _policy()
    params = SamplingParams(max_new_tokens=8, greedy=True)
    _, _, seconds, carries = _carried_second_step(policy, params)
    other = [seconds[1], seconds[2], seconds[0]]  # each carry now belongs to another sequence
    mixed = sample_branches(policy.model, other, 1, params, _stop(policy), policy.pad_token_id, carried=carries)
    plain = sample_branches(policy.model, other, 1, params, _stop(policy), policy.pad_token_id)
    assert [g[0].token_ids for g in mixed] == [g[0].token_ids for g in plain]


def test_a_lora_wrapped_model_is_given_its_cache_under_the_base_models_name() -> None:
    import inspect
    import warnings

    from peft import LoraConfig, get_peft_model

    from slate.rollout.generate import _cache_kwarg

    policy = _policy()
    base_name = "cache" if "cache" in inspect.signature(policy.model.forward).parameters else "past_key_values"
    wrapped = get_peft_model(policy.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    assert _cache_kwarg(wrapped) == base_name == _cache_kwarg(wrapped.get_base_model())
    prefixes = [policy.encode("Who founded Velmora Labs? <think>")]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers 5.x: `past_key_values` is deprecated
        groups = sample_branches(wrapped, prefixes, 3, SamplingParams(max_new_tokens=6, temperature=1.0),
                                 _stop(policy), policy.pad_token_id, torch.Generator().manual_seed(0))
    assert len(groups[0]) == 3 and all(c.token_ids for c in groups[0])
