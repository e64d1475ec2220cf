"""Sampling with prefix branching: prefill each shared prefix once, then decode k continuations from its KV cache.

``sample_branches(model, prefixes, k, …)`` returns, for every prefix, k continuations with the exact sampled token
ids and their log-probs under the sampling distribution (softmax(logits / temperature)). Naive sampling repeats
each prefix k times and prefills all copies; here the prefix is prefilled once and its cache is repeated k times
(``DynamicCache.batch_repeat_interleave``), which is what makes SLATE's k candidates per step cheap.
Finished rows are dropped from the batch as they stop, so a long-winded sibling does not keep the others waiting.

A full trajectory grows by one step and its environment reply at a time, so its next prefix starts with everything
the model has already seen. With ``return_carry=True`` each continuation keeps the keys and values of the tokens
fed to the model (``CarriedCache``); passing it back as ``carried`` for the next, longer prefix prefills only the new
tokens. The cached tensors are the ones a prefill of the whole prefix computes, up to float rounding
(``tests/rollout/test_generate.py`` checks log-probs against a full forward and greedy tokens against no carry).

The interface is plain token ids in, token ids out, so a server backend (vLLM, SGLang with prefix caching) can
implement the same ``Generator`` protocol.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from transformers import PreTrainedModel

from slate.rollout.kv_cache import growing_cache_for

FinishReason = Literal["stop", "eos", "length"]


@dataclass(frozen=True)
class CarriedCache:
    """The keys and values one sequence left in the KV cache: ``ids`` are the tokens they belong to, in order, and
    ``layers`` holds one (keys, values) pair per decoder layer, each (heads, len(ids), head_dim)."""

    ids: tuple[int, ...]
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]


@dataclass
class Continuation:
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    policy_version: int | None = None  # the weights that sampled it, where a server backend can tell
    carry: CarriedCache | None = None  # with return_carry: the prefix and the fed tokens' keys and values


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False


class StopCondition:
    """Stops a row when its text ends an action. Single-token tags are matched by id (fast path); otherwise the
    decoded tail of the row is searched for the stop strings (tags split into several BPE pieces)."""

    def __init__(self, stop_strings: Sequence[str], encode: Callable[[str], list[int]],
                 decode: Callable[[list[int]], str], eos_token_id: int) -> None:
        self.stop_strings = tuple(stop_strings)
        self.decode = decode
        self.eos_token_id = eos_token_id
        encoded = [encode(s) for s in self.stop_strings]
        self.stop_ids = {ids[0] for ids in encoded if len(ids) == 1}
        self.needs_text = any(len(ids) != 1 for ids in encoded)
        self.tail = max(len(ids) for ids in encoded) + 2 if encoded else 0

    def check(self, ids: list[int]) -> FinishReason | None:
        last = ids[-1]
        if last == self.eos_token_id:
            return "eos"
        if last in self.stop_ids:
            return "stop"
        if self.needs_text:
            tail = self.decode(ids[-self.tail:])
            if any(s in tail for s in self.stop_strings):
                return "stop"
        return None


class Generator(Protocol):
    def __call__(self, prefixes: list[list[int]], num_branches: int, params: SamplingParams,
                 stop: StopCondition) -> list[list[Continuation]]: ...


def _cache_kwarg(model: PreTrainedModel) -> str:
    """Recent transformers name the KV-cache argument ``cache``; older ones ``past_key_values``. A PEFT wrapper's
    forward takes ``**kwargs`` and hands them on, so the name is read off the model it wraps (``past_key_values`` is
    deprecated in transformers 5.x and goes in 5.40)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _left_pad(prefixes: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prefixes)
    input_ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for row, prefix in enumerate(prefixes):
        input_ids[row, width - len(prefix):] = torch.tensor(prefix, dtype=torch.long)
        attention_mask[row, width - len(prefix):] = 1
    return input_ids, attention_mask


def _pick_tokens(logits: torch.Tensor, params: SamplingParams,
                 generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens (N,) and their log-probs under softmax(logits / temperature), the distribution PPO's ratio uses.

    A draw is the inverse CDF at one uniform number per row: the first token whose cumulative probability exceeds
    u · total. That is exactly a categorical draw (a token of probability 0 is never picked), and on a CPU it is
    several times faster than ``torch.multinomial`` over a vocabulary (16 vs 93 ms for 40 × 8,000; see
    docs/performance.md).
    """
    logprobs = torch.log_softmax(logits.float() / params.temperature, dim=-1)  # (N, V)
    if params.greedy:
        tokens = logprobs.argmax(dim=-1)
    else:
        probs = logprobs.exp()
        order = None
        if params.top_p < 1.0:
            probs, order = probs.sort(dim=-1, descending=True)
            outside = probs.cumsum(dim=-1) - probs > params.top_p
            probs = probs.masked_fill(outside, 0.0)
        cdf = probs.cumsum(dim=-1)
        u = torch.rand((len(cdf), 1), generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
        if order is not None:
            tokens = order.gather(-1, tokens[:, None]).squeeze(-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def _usable_carry(carry: CarriedCache | None, prefix: list[int]) -> int:
    """How many leading tokens of ``prefix`` the carried cache covers (0 when it is not a prefix of it). At least one
    token is always left to prefill, since sampling needs the logits after the last one."""
    if carry is None or len(carry.ids) >= len(prefix) or tuple(prefix[:len(carry.ids)]) != carry.ids:
        return 0
    return len(carry.ids)


def _prefilled_cache(carried: list[CarriedCache | None], lengths: list[int], device: torch.device,
                     fresh_cache) -> tuple[object, torch.Tensor]:
    """A cache holding each row's carried keys and values, left-padded to a common length, and its attention mask."""
    width = max(lengths)
    mask = torch.zeros((len(lengths), width), dtype=torch.long, device=device)
    if width == 0:
        return fresh_cache, mask
    template = next(c for c, n in zip(carried, lengths, strict=True) if n)
    for layer_index, (keys, values) in enumerate(template.layers):
        heads, _, key_dim = keys.shape
        batch_keys = keys.new_zeros((len(lengths), heads, width, key_dim))
        batch_values = values.new_zeros((len(lengths), heads, width, values.shape[-1]))
        for row, (carry, n) in enumerate(zip(carried, lengths, strict=True)):
            if n:
                batch_keys[row, :, width - n:] = carry.layers[layer_index][0]
                batch_values[row, :, width - n:] = carry.layers[layer_index][1]
        fresh_cache.update(batch_keys.to(device), batch_values.to(device), layer_index)
    for row, n in enumerate(lengths):
        mask[row, width - n:] = 1
    return fresh_cache, mask


def _take_carry(cache, row: int, valid_columns: torch.Tensor, ids: list[int]) -> CarriedCache:
    """Copy one batch row's valid columns out of every layer of the cache."""
    return CarriedCache(ids=tuple(ids), layers=tuple((layer.keys[row][:, valid_columns].clone(),
                                                      layer.values[row][:, valid_columns].clone())
                                                     for layer in cache.layers))


@torch.no_grad()
def sample_branches(model: PreTrainedModel, prefixes: list[list[int]], num_branches: int, params: SamplingParams,
                    stop: StopCondition, pad_id: int, generator: torch.Generator | None = None,
                    share_prefill: bool = True, carried: Sequence[CarriedCache | None] | None = None,
                    return_carry: bool = False) -> list[list[Continuation]]:
    """k continuations of each prefix. ``share_prefill=False`` is the naive baseline (each copy prefilled).

    ``carried[i]``, the cache a previous call returned for a sequence that ``prefixes[i]`` extends, skips the
    prefill of those tokens; ``return_carry`` keeps each continuation's own (needs a model ``GrowingCache`` covers).
    """
    device = next(model.parameters()).device
    cache_kwarg = _cache_kwarg(model)
    fresh_cache = growing_cache_for(model)  # decoding writes one slot per token instead of copying the cache
    if fresh_cache is None and (carried is not None or return_carry):
        raise ValueError("carrying a KV cache needs a model whose layers are all full attention")
    if not share_prefill and carried is not None:
        raise ValueError("carried caches need the shared prefill")
    carried = list(carried) if carried is not None else [None] * len(prefixes)
    if len(carried) != len(prefixes):
        raise ValueError(f"{len(carried)} carried caches for {len(prefixes)} prefixes")
    if share_prefill:
        lengths = [_usable_carry(c, p) for c, p in zip(carried, prefixes, strict=True)]
        if fresh_cache is not None:
            fresh_cache, carried_mask = _prefilled_cache(carried, lengths, device, fresh_cache)
        else:
            carried_mask = torch.zeros((len(prefixes), 0), dtype=torch.long, device=device)
        row_prefixes = prefixes
        input_ids, chunk_mask = _left_pad([p[n:] for p, n in zip(prefixes, lengths, strict=True)], pad_id)
    else:
        lengths = [0] * len(prefixes) * num_branches
        carried_mask = torch.zeros((len(lengths), 0), dtype=torch.long, device=device)
        row_prefixes = [p for p in prefixes for _ in range(num_branches)]
        input_ids, chunk_mask = _left_pad(row_prefixes, pad_id)
    input_ids, chunk_mask = input_ids.to(device), chunk_mask.to(device)
    offsets = torch.tensor(lengths, dtype=torch.long, device=device)[:, None]
    position_ids = offsets + (chunk_mask.cumsum(-1) - 1).clamp(min=0)
    attention_mask = torch.cat([carried_mask, chunk_mask], dim=1)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1, **({cache_kwarg: fresh_cache} if fresh_cache is not None else {}))
    cache, logits = out[cache_kwarg], out.logits[:, -1]  # logits: (P, V) or (P*k, V)
    next_position = position_ids[:, -1] + 1
    if share_prefill and num_branches > 1:
        cache.batch_repeat_interleave(num_branches)
        logits = logits.repeat_interleave(num_branches, dim=0)  # (P*k, V), rows grouped by prefix
        attention_mask = attention_mask.repeat_interleave(num_branches, dim=0)
        next_position = next_position.repeat_interleave(num_branches, dim=0)
        row_prefixes = [p for p in prefixes for _ in range(num_branches)]

    results = [Continuation() for _ in range(len(prefixes) * num_branches)]
    active = torch.arange(len(results), device=device)  # which result each batch row writes to
    alive = [True] * len(results)  # finished rows stay in the batch until it is worth compacting (below)
    fed = 0  # decode forwards so far: every row still in the batch has had its first `fed` tokens fed

    def keep_carry(rows: list[int]) -> None:
        # the cache holds a row's prefix, its first `fed` sampled tokens, and then (after it stopped) junk
        prefilled = attention_mask.shape[1] - fed
        for row in rows:
            index = int(active[row])
            result = results[index]
            n = min(fed, len(result.token_ids))
            valid = attention_mask[row].bool()
            valid[prefilled + n:] = False  # tokens fed after the row stopped
            result.carry = _take_carry(cache, row, valid, row_prefixes[index] + result.token_ids[:n])

    for _ in range(params.max_new_tokens):
        tokens, token_logprobs = _pick_tokens(logits, params, generator)
        for row, (result_index, token, logprob) in enumerate(zip(active.tolist(), tokens.tolist(),
                                                                token_logprobs.tolist(), strict=True)):
            if not alive[row]:
                continue
            result = results[result_index]
            result.token_ids.append(token)
            result.logprobs.append(logprob)
            reason = stop.check(result.token_ids)
            if reason is not None:
                result.finish_reason = reason
                alive[row] = False
        live = sum(alive)
        if live == 0:
            break
        # Dropping finished rows copies every layer's KV cache, so it waits until a quarter of the rows are done;
        # until then they decode along (their tokens are discarded), which costs less than a copy per finish.
        if 4 * (len(alive) - live) >= len(alive):
            if return_carry:
                keep_carry([i for i, a in enumerate(alive) if not a])
            rows = torch.tensor([i for i, a in enumerate(alive) if a], device=device)
            cache.batch_select_indices(rows)
            active, tokens = active[rows], tokens[rows]
            attention_mask, next_position = attention_mask[rows], next_position[rows]
            alive = [True] * live
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=1)
        out = model(input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=next_position[:, None],
                    use_cache=True, **{cache_kwarg: cache})
        cache, logits = out[cache_kwarg], out.logits[:, -1]
        next_position = next_position + 1
        fed += 1
    if return_carry:
        keep_carry(list(range(len(active))))
    return [results[i * num_branches:(i + 1) * num_branches] for i in range(len(prefixes))]
