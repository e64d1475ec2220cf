"""Per-token log-probs of a batch of sequences, computing the LM head only where a token is trained on.

Only a fraction of a trajectory's tokens are policy tokens (retrieved passages dominate), so projecting every
hidden state onto the vocabulary wastes most of the head's FLOPs and memory. We run the decoder, gather the hidden
states that predict trained tokens, and apply the head to those alone. Models whose head does more than a linear
map (logit soft-capping, logit scaling) must set ``full_head=True``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel


@dataclass
class TokenLogprobs:
    logprobs: torch.Tensor  # (B, L): log p(x_t | x_<t) where target_mask[b, t], 0 elsewhere
    entropy: torch.Tensor | None  # (B, L): entropy of the predictive distribution at trained tokens, 0 elsewhere


def pad_batch(sequences: list[list[int]], masks: list[list[bool]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """Right-pad to (B, L): input_ids, attention_mask, target_mask (the loss mask; padding is never a target)."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    target_mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, (ids, mask) in enumerate(zip(sequences, masks, strict=True)):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        target_mask[row, : len(mask)] = torch.tensor(mask, dtype=torch.bool)
    target_mask[:, 0] = False  # the first token has no prediction
    return input_ids, attention_mask, target_mask


def token_logprobs(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   target_mask: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False,
                   full_head: bool = False) -> TokenLogprobs:
    """log-probs under softmax(logits / temperature), the same distribution the rollout sampled from."""
    if full_head:
        logits_all = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]  # (B, L-1, V)
        predicts = target_mask[:, 1:]  # (B, L-1): position t-1 predicts token t
        logits = logits_all[predicts]
    else:
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        predicts = target_mask[:, 1:]
        logits = model.get_output_embeddings()(hidden[:, :-1][predicts])  # (M, V), M = trained tokens
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    targets = input_ids[:, 1:][predicts]
    picked = logp.gather(-1, targets[:, None]).squeeze(-1)  # (M,)
    out = torch.zeros(input_ids.shape, dtype=picked.dtype, device=picked.device)
    out[:, 1:][predicts] = picked
    entropy = None
    if with_entropy:
        entropy = torch.zeros_like(out)
        entropy[:, 1:][predicts] = -(logp.exp() * logp).sum(-1).detach()
    return TokenLogprobs(logprobs=out, entropy=entropy)
