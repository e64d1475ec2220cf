from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, Qwen2Config

from slate.config import TinyModelConfig
from slate.rollout import generate
from slate.rollout.actions import STOP_STRINGS
from slate.rollout.generate import SamplingParams, StopCondition, sample_branches
from slate.rollout.kv_cache import HEADROOM, GrowingCache, GrowingLayer, growing_cache_for
from slate.rollout.policy import build_tiny_policy

TEXTS = ["Who founded Velmora Labs? <think> a </think><search> b </search><answer> c </answer>"] * 10


def _policy():
    return build_tiny_policy(TEXTS, TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                                    max_positions=512, vocab_size=300), seed=3)


def test_growing_layer_holds_what_concatenation_holds() -> None:
    torch.manual_seed(0)
    grown, concatenated = GrowingLayer(), torch.empty(3, 2, 0, 4)
    for step, new in enumerate([5, 1, 1, HEADROOM + 7, 1]):  # the fourth write outgrows the first buffer
        chunk = torch.randn(3, 2, new, 4)
        keys, values = grown.update(chunk, -chunk)
        concatenated = torch.cat([concatenated, chunk], dim=-2)
        assert torch.equal(keys, concatenated) and torch.equal(values, -concatenated), step
        assert grown.get_seq_length() == concatenated.shape[-2]
    rows = torch.tensor([2, 0])
    grown.batch_select_indices(rows)
    assert torch.equal(grown.keys, concatenated[rows])
    grown.batch_repeat_interleave(3)
    assert torch.equal(grown.values, -concatenated[rows].repeat_interleave(3, dim=0))
    keys, _ = grown.update(torch.ones(6, 2, 1, 4), torch.ones(6, 2, 1, 4))  # writes after a selection stay in place
    assert torch.equal(keys[:, :, :-1], concatenated[rows].repeat_interleave(3, dim=0))
    assert torch.equal(keys[:, :, -1], torch.ones(6, 2, 4))


def test_sampling_with_the_growing_cache_equals_the_dynamic_cache(monkeypatch) -> None:
    policy = _policy()
    prefixes = [policy.encode("Who founded Velmora Labs? <think>"), policy.encode("a b c <search>")]
    params = SamplingParams(max_new_tokens=40, temperature=1.0)
    stop = StopCondition(STOP_STRINGS, policy.encode, policy.decode, policy.eos_token_id)

    def sample() -> list:
        return sample_branches(policy.model, prefixes, 5, params, stop, policy.pad_token_id,
                               torch.Generator().manual_seed(0))

    assert isinstance(growing_cache_for(policy.model), GrowingCache)
    grown = sample()
    monkeypatch.setattr(generate, "growing_cache_for", lambda model: DynamicCache())
    dynamic = sample()
    for grown_group, dynamic_group in zip(grown, dynamic, strict=True):
        for a, b in zip(grown_group, dynamic_group, strict=True):
            assert a.token_ids == b.token_ids and a.logprobs == b.logprobs  # bit for bit
    assert len({len(c.token_ids) for group in grown for c in group}) > 1  # rows finished at different steps


@pytest.mark.parametrize(("use_sliding_window", "expected"), [(False, True), (True, False)])
def test_growing_cache_only_for_full_attention(use_sliding_window: bool, expected: bool) -> None:
    config = Qwen2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, vocab_size=50, use_sliding_window=use_sliding_window,
                         sliding_window=8, max_window_layers=0)
    model = type("M", (), {"config": config})()
    assert (growing_cache_for(model) is not None) is expected
