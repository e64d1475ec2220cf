"""Gradient checkpointing drops the KV cache inside each layer, so the shared-prefix forward runs whole sequences
then: the same log-probs and gradients as the cached path, with checkpointing on or off."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from slate.logprobs import enable_checkpointing, grouped_token_logprobs, pad_batch


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2))


def test_shared_prefix_forward_under_gradient_checkpointing_matches_the_cached_path() -> None:
    prefix = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    continuations = [[12, 13, 14, 15], [16, 17], [18, 19, 20]]
    cont_ids, _, cont_mask = pad_batch(continuations, [[True] * len(c) for c in continuations], pad_id=0)
    cont_mask[:, 0] = True  # the first continuation token is predicted by the prefix
    cached_model, checkpointed = _model().train(), _model().train()
    enable_checkpointing(checkpointed)
    cached = grouped_token_logprobs(cached_model, prefix, cont_ids, cont_mask, with_entropy=True)
    recomputed = grouped_token_logprobs(checkpointed, prefix, cont_ids, cont_mask, with_entropy=True)
    assert recomputed.logprobs.shape == cont_ids.shape and recomputed.entropy.shape == cont_ids.shape
    torch.testing.assert_close(recomputed.logprobs, cached.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(recomputed.entropy, cached.entropy, atol=1e-5, rtol=0)
    grads_cached = torch.autograd.grad(cached.logprobs.sum(), list(cached_model.parameters()))
    grads_checkpointed = torch.autograd.grad(recomputed.logprobs.sum(), list(checkpointed.parameters()))
    for a, b in zip(grads_cached, grads_checkpointed, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_groups_of_different_prefixes_under_gradient_checkpointing_match_the_cached_path() -> None:
    prefix_ids, _, _ = pad_batch([[5, 6, 7, 8, 9], [21, 22, 23]], [[False] * 5, [False] * 3], pad_id=0)
    prefix_lens, group_of = torch.tensor([5, 3]), torch.tensor([0, 0, 1])
    continuations = [[12, 13, 14], [16, 17], [18, 19, 20]]
    cont_ids, _, cont_mask = pad_batch(continuations, [[True] * len(c) for c in continuations], pad_id=0)
    cont_mask[:, 0] = True
    cached_model, checkpointed = _model().train(), _model().train()
    enable_checkpointing(checkpointed)
    kwargs = {"with_entropy": True, "prefix_lens": prefix_lens, "group_of": group_of}
    cached = grouped_token_logprobs(cached_model, prefix_ids, cont_ids, cont_mask, **kwargs)
    recomputed = grouped_token_logprobs(checkpointed, prefix_ids, cont_ids, cont_mask, **kwargs)
    torch.testing.assert_close(recomputed.logprobs, cached.logprobs, atol=1e-5, rtol=0)
    torch.testing.assert_close(recomputed.entropy, cached.entropy, atol=1e-5, rtol=0)
