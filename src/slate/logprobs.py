"""Per-token log-probs of a batch of sequences under a model, the LM head applied only where a token is scored.

Used by the update (policy and reference log-probs), SFT, and rewards that score text with a model (the information
gain).

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


def _cache_of(output) -> object:
    """Recent transformers call the returned KV cache ``cache``; older ones ``past_key_values``."""
    return output["cache"] if "cache" in output else output["past_key_values"]


HEAD_CHUNK_ROWS = 512  # hidden states projected onto the vocabulary at a time (512 × 5,243 floats stay in cache)


def _row_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                  with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(target) (M,) of each row of ``logits`` (M, V), and the entropy of each row (detached) if asked."""
    logits = logits.float()
    if temperature != 1.0:  # x / 1.0 is x: skipping it spares a pass over (M, V), forward and backward
        logits = logits / temperature
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, targets[:, None]).squeeze(-1)
    if not with_entropy:
        return picked, None
    with torch.no_grad():  # a logged statistic: no autograd graph over (M, V)
        entropy = -(logp.exp() * logp).sum(-1)
    return picked, entropy


def _head_logprobs(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, temperature: float,
                   with_entropy: bool, float32_head: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``_row_logprobs`` of ``head(hidden)``, ``HEAD_CHUNK_ROWS`` rows at a time: the (M, V) logits and their
    log-softmax never exist whole, which made the head's forward + backward 1.6× faster on the 2-core CPU (4,000
    rows: 533 → 328 ms; docs/performance.md). Each row's numbers are its own, so only memory traffic changes.
    ``float32_head``: the projection onto the vocabulary runs in float32 even under bfloat16 autocast; bf16 logits
    (3 significant digits) would put errors of a few hundredths into every log-prob and so into the PPO ratio. A
    head whose weights are not float32 (a model loaded in bfloat16) runs as it is: casting them would cost more."""
    def project(rows: torch.Tensor) -> torch.Tensor:
        if not float32_head or head.weight.dtype != torch.float32:
            return head(rows)
        with torch.autocast(rows.device.type, enabled=False):
            return head(rows.float())

    parts = [_row_logprobs(project(hidden[i:i + HEAD_CHUNK_ROWS]), targets[i:i + HEAD_CHUNK_ROWS], temperature,
                           with_entropy) for i in range(0, len(hidden), HEAD_CHUNK_ROWS)]
    if not parts:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return empty, (empty if with_entropy else None)
    return torch.cat([p for p, _ in parts]), (torch.cat([e for _, e in parts]) if with_entropy else None)


def _scatter(picked: torch.Tensor, entropy: torch.Tensor | None, where: torch.Tensor) -> TokenLogprobs:
    """Per-row values (M,) at the M True positions of ``where`` (B, L); 0 elsewhere."""
    out = torch.zeros(where.shape, dtype=picked.dtype, device=picked.device)
    out[where] = picked
    full_entropy = None
    if entropy is not None:
        full_entropy = torch.zeros_like(out)
        full_entropy[where] = entropy
    return TokenLogprobs(logprobs=out, entropy=full_entropy)


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Activation (gradient) checkpointing, non-reentrant: it works with frozen embeddings (LoRA) without forcing the
    inputs to require grad. transformers v5 renamed the method; v4 has only the old name."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _is_checkpointing(model: PreTrainedModel) -> bool:
    """Whether activation (gradient) checkpointing is on; transformers renamed the property in v5."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        value = getattr(model, name, None)
        if value is not None:
            return bool(value)
    return False


def grouped_token_logprobs(model: PreTrainedModel, prefix_ids: torch.Tensor, input_ids: torch.Tensor,
                           target_mask: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False,
                           prefix_lens: torch.Tensor | None = None,
                           group_of: torch.Tensor | None = None,
                           row_prefix_lens: torch.Tensor | None = None,
                           float32_head: bool = False) -> TokenLogprobs:
    """Log-probs of the continuations of G shared prefixes, running each prefix once, all groups in one pass.

    prefix_ids: (G, P), right-padded; prefix_lens: (G,) real lengths (default: all P). input_ids: (N, C), the N
    continuations, right-padded; target_mask: (N, C); group_of: (N,) the prefix each continuation extends (default:
    one group, G = 1). row_prefix_lens: (N,) how much of its prefix each continuation follows (default: all of it,
    ``prefix_lens[group_of]``): SLATE's steps of one question have nested prefixes, so one prefix — the longest —
    serves all of them, each step's candidates continuing from its own length (tree packing). Returns (N, C).
    Each prefix's KV cache is gathered once per continuation inside the autograd graph, so the gradient through a
    prefix is the sum over its siblings — exactly what N separate forward passes over prefix + continuation give,
    for about 1/k of the prefix compute (SLATE's k candidates share everything but their last step). Prefix padding
    is masked out of the continuations' attention; positions continue from each prefix's own length, so a padded
    group computes the same numbers as that group alone.
    """
    groups, width = prefix_ids.shape
    n, cont_width = input_ids.shape
    device = input_ids.device
    if prefix_lens is None:
        prefix_lens = torch.full((groups,), width, dtype=torch.long, device=device)
    if group_of is None:
        group_of = torch.zeros(n, dtype=torch.long, device=device)
    if row_prefix_lens is None:
        row_prefix_lens = prefix_lens[group_of]
    positions = row_prefix_lens[:, None] + torch.arange(cont_width, device=device)[None]  # (N, C)
    if model.training and torch.is_grad_enabled() and _is_checkpointing(model):
        # Gradient checkpointing drops the KV cache inside each layer, so the prefix cannot be shared: run the N
        # whole sequences instead (same log-probs, k times the prefix compute; memory is what checkpointing buys).
        lens, owners = row_prefix_lens.tolist(), group_of.tolist()
        rows = [prefix_ids[g, :lens[i]].tolist() + input_ids[i].tolist() for i, g in enumerate(owners)]
        masks = [[False] * lens[i] + target_mask[i].tolist() for i, g in enumerate(owners)]
        full_ids, full_attention, full_mask = (t.to(device) for t in pad_batch(rows, masks, pad_id=0))
        out = token_logprobs(model, full_ids, full_attention, full_mask, temperature, with_entropy,
                             float32_head=float32_head)
        return TokenLogprobs(out.logprobs.gather(1, positions),
                             out.entropy.gather(1, positions) if out.entropy is not None else None)
    decoder = model.get_decoder()
    padded = bool((row_prefix_lens < width).any())
    # right padding under a causal mask: no real token attends to a pad, so the prefix needs no padding mask
    prefix_out = decoder(input_ids=prefix_ids, use_cache=True)
    cache = _cache_of(prefix_out)
    # each continuation's copy of its prefix's keys and values. reorder_cache is index_select per layer; the
    # cache's batch_select_indices (advanced indexing) gives the same tensors, but its backward, an accumulating
    # index_put_, took 4x as long on the CPU (160 rows of a 300-token prefix: 30 vs 7 ms, forward + backward)
    cache.reorder_cache(group_of)
    cache_kwarg = "cache" if "cache" in prefix_out else "past_key_values"
    attention = None
    if padded:  # a continuation sees its own part of its prefix, not the padding or a later step's tokens
        seen = (torch.arange(width, device=device)[None] < row_prefix_lens[:, None]).long()  # (N, P)
        attention = torch.cat([seen, seen.new_ones((n, cont_width))], dim=1)
    continuation = decoder(input_ids=input_ids, position_ids=positions, attention_mask=attention, use_cache=False,
                           **{cache_kwarg: cache})
    # a prefix's last real state predicts its continuations' first token; state t of a continuation predicts t + 1
    last_prefix = prefix_out.last_hidden_state[group_of, row_prefix_lens - 1]  # (N, H)
    hidden = torch.cat([last_prefix[:, None], continuation.last_hidden_state[:, :-1]], dim=1)  # (N, C, H)
    # M = trained tokens
    picked, entropy = _head_logprobs(model.get_output_embeddings(), hidden[target_mask], input_ids[target_mask],
                                     temperature, with_entropy, float32_head)
    return _scatter(picked, entropy, target_mask)


def token_logprobs(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   target_mask: torch.Tensor, temperature: float = 1.0, with_entropy: bool = False,
                   full_head: bool = False, float32_head: bool = False) -> TokenLogprobs:
    """log-probs under softmax(logits / temperature), the same distribution the rollout sampled from."""
    predicts = target_mask[:, 1:]  # (B, L-1): the state at t-1 predicts token t
    if full_head:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1][predicts]
    else:
        # Right padding under a causal mask: no real token ever attends to a pad, so the padding mask is redundant,
        # and leaving it out lets scaled_dot_product_attention take its fused causal kernel.
        right_padded = bool((attention_mask[:, :-1] >= attention_mask[:, 1:]).all())
        # no KV cache: nothing decodes after a scoring pass (and under gradient checkpointing transformers refuses one)
        hidden = model.get_decoder()(input_ids=input_ids, attention_mask=None if right_padded else attention_mask,
                                     use_cache=False).last_hidden_state
    where = torch.zeros_like(target_mask)
    where[:, 1:] = predicts  # the first token has no prediction
    targets = input_ids[:, 1:][predicts]  # M = trained tokens
    if full_head:
        return _scatter(*_row_logprobs(logits, targets, temperature, with_entropy), where)
    return _scatter(*_head_logprobs(model.get_output_embeddings(), hidden[:, :-1][predicts], targets, temperature,
                                    with_entropy, float32_head), where)
