from __future__ import annotations

import math

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from slate import logprobs as forward
from slate.logprobs import grouped_token_logprobs, pad_batch, token_logprobs


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2))


def test_selective_head_matches_the_full_head() -> None:
    model = _model()
    ids = [[3, 4, 5, 6, 7], [8, 9, 10]]
    masks = [[False, False, True, True, True], [False, True, True]]
    input_ids, attention_mask, target_mask = pad_batch(ids, masks, pad_id=0)
    fast = token_logprobs(model, input_ids, attention_mask, target_mask, temperature=0.7, with_entropy=True)
    full = token_logprobs(model, input_ids, attention_mask, target_mask, temperature=0.7, with_entropy=True,
                          full_head=True)
    torch.testing.assert_close(fast.logprobs, full.logprobs, atol=1e-5, rtol=0)
    # by hand for one token: log softmax(logits / 0.7)[x_t] at the position that predicts it
    logits = model(input_ids=input_ids).logits[0, 2] / 0.7
    torch.testing.assert_close(fast.logprobs[0, 3], torch.log_softmax(logits, -1)[6], atol=1e-5, rtol=0)
    assert fast.logprobs[1, 3].item() == 0.0 and not target_mask[1, 3]  # padding is never a target


def test_head_in_chunks_equals_the_head_at_once(monkeypatch) -> None:
    model = _model()
    ids = [[3, 4, 5, 6, 7, 9, 11], [8, 9, 10, 12]]
    masks = [[False, True, True, True, True, True, True], [False, True, True, True]]
    input_ids, attention_mask, target_mask = pad_batch(ids, masks, pad_id=0)

    def run() -> tuple[torch.Tensor, ...]:
        model.zero_grad()
        out = token_logprobs(model, input_ids, attention_mask, target_mask, temperature=0.9, with_entropy=True)
        out.logprobs.sum().backward()
        return out.logprobs.detach(), out.entropy, model.lm_head.weight.grad.clone()

    whole = run()
    monkeypatch.setattr(forward, "HEAD_CHUNK_ROWS", 2)  # 9 trained tokens: chunks of 2, 2, 2, 2, 1
    chunked = run()
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_shared_prefix_forward_equals_separate_forwards_values_and_gradients() -> None:
    model = _model()
    prefix = [5, 6, 7, 8, 9, 10, 11]
    continuations = [[12, 13, 14, 15], [16, 17], [18, 19, 20]]
    sequences = [prefix + c for c in continuations]
    masks = [[False] * len(prefix) + [True] * len(c) for c in continuations]
    input_ids, attention_mask, target_mask = pad_batch(sequences, masks, pad_id=0)
    separate = token_logprobs(model, input_ids, attention_mask, target_mask)
    grad_separate = torch.autograd.grad(separate.logprobs.sum(), list(model.parameters()))

    cont_ids, _, cont_mask = pad_batch(continuations, [[True] * len(c) for c in continuations], pad_id=0)
    cont_mask[:, 0] = True  # the first continuation token is predicted by the prefix
    grouped = grouped_token_logprobs(model, torch.tensor([prefix]), cont_ids, cont_mask)
    grad_grouped = torch.autograd.grad(grouped.logprobs.sum(), list(model.parameters()))

    for row, continuation in enumerate(continuations):
        expected = separate.logprobs[row, len(prefix):len(prefix) + len(continuation)]
        torch.testing.assert_close(grouped.logprobs[row, : len(continuation)], expected, atol=1e-5, rtol=0)
    for a, b in zip(grad_separate, grad_grouped, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_row_logprobs_by_hand_at_temperature_one_and_two() -> None:
    # logits (0, ln 3): p = (1/4, 3/4); log p(1) = ln 3/4; entropy = -(1/4 ln 1/4 + 3/4 ln 3/4) = 0.562335
    logits = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)
    picked, entropy = forward._row_logprobs(logits, torch.tensor([1]), temperature=1.0, with_entropy=True)
    assert math.isclose(picked.item(), math.log(0.75), abs_tol=1e-6)
    assert math.isclose(entropy.item(), 0.562335, abs_tol=1e-6)
    assert picked.requires_grad and not entropy.requires_grad  # the entropy is logged, never trained on
    # at temperature 2 the logits halve: p(1) = sqrt 3 / (1 + sqrt 3) = 0.633975
    picked, none = forward._row_logprobs(logits, torch.tensor([1]), temperature=2.0, with_entropy=False)
    assert math.isclose(picked.item(), math.log(0.633975), abs_tol=1e-6) and none is None
    # d log p(1) / d logits = onehot(1) - p: (-1/4, 1/4) at temperature 1
    grad, = torch.autograd.grad(forward._row_logprobs(logits, torch.tensor([1]), 1.0, False)[0].sum(), logits)
    torch.testing.assert_close(grad, torch.tensor([[-0.25, 0.25]]))
