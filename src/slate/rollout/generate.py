"""Sampling with prefix branching: prefill each shared prefix once, then decode k continuations from its KV cache.

``sample_branches(model, prefixes, k, …)`` returns, for every prefix, k continuations with the exact sampled token
ids and their log-probs under the sampling distribution (softmax(logits / temperature)), in four stages:
1) prefill each prefix once (only what its carried cache lacks, below), 2) repeat its row of the KV cache k times
(``batch_repeat_interleave``), which is what makes SLATE's k candidates per step cheap, 3) decode, dropping finished
rows from the batch so a long-winded sibling does not keep the others waiting, 4) hand back each continuation's
cache. Naive sampling (k copies of each prefix in the batch, every copy prefilled) is ``sample_branches`` of the
repeated prefixes with k = 1; ``benchmarks/branching.py`` measures one against the other.

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
from typing import Any, Literal, Protocol

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


@dataclass
class _Rows:
    """The decode batch: one row per continuation still being decoded.

    ``cache`` holds each row's prefix (left-padded) and the sampled tokens fed so far; ``attention_mask`` (rows,
    columns) covers the same columns. ``result_of[row]`` is the index of the continuation the row writes to, and
    ``fed`` the decode forwards so far: every row has had its first ``fed`` sampled tokens fed to the model."""

    cache: Any
    logits: torch.Tensor  # (rows, V): the next token's logits
    attention_mask: torch.Tensor
    next_position: torch.Tensor  # (rows,)
    result_of: torch.Tensor  # (rows,)
    fed: int = 0


@torch.no_grad()
def sample_branches(model: PreTrainedModel, prefixes: list[list[int]], num_branches: int, params: SamplingParams,
                    stop: StopCondition, pad_id: int, generator: torch.Generator | None = None,
                    carried: Sequence[CarriedCache | None] | None = None,
                    return_carry: bool = False) -> list[list[Continuation]]:
    """k = ``num_branches`` continuations of each prefix, the prefix prefilled once.

    ``carried[i]``, the cache a previous call returned for a sequence that ``prefixes[i]`` extends, skips the
    prefill of those tokens; ``return_carry`` keeps each continuation's own (needs a model ``GrowingCache`` covers).
    """
    cache_kwarg = _cache_kwarg(model)
    fresh_cache = growing_cache_for(model)  # decoding writes one slot per token instead of copying the cache
    if fresh_cache is None and (carried is not None or return_carry):
        raise ValueError("carrying a KV cache needs a model whose layers are all full attention")
    carried = list(carried) if carried is not None else [None] * len(prefixes)
    if len(carried) != len(prefixes):
        raise ValueError(f"{len(carried)} carried caches for {len(prefixes)} prefixes")
    # 1) Prefill what the carried caches lack: one row per prefix
    rows = _prefill(model, prefixes, carried, pad_id, fresh_cache, cache_kwarg)
    # 2) Repeat each prefix's row k times: rows grouped by prefix, P·k of them
    if num_branches > 1:
        _branch(rows, num_branches)
    row_prefixes = [p for p in prefixes for _ in range(num_branches)]
    # 3) Decode, dropping finished rows; 4) hand back each continuation's cache
    results = [Continuation() for _ in row_prefixes]
    _decode(model, rows, results, row_prefixes, params, stop, generator, cache_kwarg, return_carry)
    return [results[i * num_branches:(i + 1) * num_branches] for i in range(len(prefixes))]


def _prefill(model: PreTrainedModel, prefixes: list[list[int]], carried: list[CarriedCache | None], pad_id: int,
             fresh_cache: Any, cache_kwarg: str) -> _Rows:
    """One forward over each prefix's tokens past its carried cache (left-padded), the carried keys and values in
    the cache before them: the logits of every prefix's next token."""
    device = next(model.parameters()).device
    lengths = [_usable_carry(c, p) for c, p in zip(carried, prefixes, strict=True)]
    if fresh_cache is not None:
        fresh_cache, carried_mask = _prefilled_cache(carried, lengths, device, fresh_cache)
    else:
        carried_mask = torch.zeros((len(prefixes), 0), dtype=torch.long, device=device)
    input_ids, chunk_mask = _left_pad([p[n:] for p, n in zip(prefixes, lengths, strict=True)], pad_id)
    input_ids, chunk_mask = input_ids.to(device), chunk_mask.to(device)
    offsets = torch.tensor(lengths, dtype=torch.long, device=device)[:, None]
    position_ids = offsets + (chunk_mask.cumsum(-1) - 1).clamp(min=0)
    attention_mask = torch.cat([carried_mask, chunk_mask], dim=1)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                logits_to_keep=1, **({cache_kwarg: fresh_cache} if fresh_cache is not None else {}))
    return _Rows(cache=out[cache_kwarg], logits=out.logits[:, -1], attention_mask=attention_mask,
                 next_position=position_ids[:, -1] + 1, result_of=torch.arange(len(prefixes), device=device))


def _branch(rows: _Rows, k: int) -> None:
    """Each row k times in place, the copies next to each other: (P, …) → (P·k, …)."""
    rows.cache.batch_repeat_interleave(k)
    rows.logits = rows.logits.repeat_interleave(k, dim=0)
    rows.attention_mask = rows.attention_mask.repeat_interleave(k, dim=0)
    rows.next_position = rows.next_position.repeat_interleave(k, dim=0)
    rows.result_of = torch.arange(len(rows.result_of) * k, device=rows.result_of.device)


def _decode(model: PreTrainedModel, rows: _Rows, results: list[Continuation], row_prefixes: list[list[int]],
            params: SamplingParams, stop: StopCondition, generator: torch.Generator | None, cache_kwarg: str,
            return_carry: bool) -> None:
    """Sample up to ``max_new_tokens`` per row into ``results`` until each stops; with ``return_carry`` each result
    keeps its cache (``_keep_carries``) when its row leaves the batch or decoding ends."""
    alive = [True] * len(results)  # finished rows stay in the batch until it is worth compacting (below)
    for _ in range(params.max_new_tokens):
        tokens, token_logprobs = _pick_tokens(rows.logits, params, generator)
        for row, (index, token, logprob) in enumerate(zip(rows.result_of.tolist(), tokens.tolist(),
                                                         token_logprobs.tolist(), strict=True)):
            if not alive[row]:
                continue
            result = results[index]
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
                _keep_carries(rows, [i for i, a in enumerate(alive) if not a], results, row_prefixes)
            kept = torch.tensor([i for i, a in enumerate(alive) if a], device=rows.logits.device)
            rows.cache.batch_select_indices(kept)
            rows.result_of, tokens = rows.result_of[kept], tokens[kept]
            rows.attention_mask, rows.next_position = rows.attention_mask[kept], rows.next_position[kept]
            alive = [True] * live
        rows.attention_mask = torch.cat([rows.attention_mask, rows.attention_mask.new_ones((len(tokens), 1))], dim=1)
        out = model(input_ids=tokens[:, None], attention_mask=rows.attention_mask,
                    position_ids=rows.next_position[:, None], use_cache=True, **{cache_kwarg: rows.cache})
        rows.cache, rows.logits = out[cache_kwarg], out.logits[:, -1]
        rows.next_position = rows.next_position + 1
        rows.fed += 1
    if return_carry:
        _keep_carries(rows, list(range(len(rows.result_of))), results, row_prefixes)


def _keep_carries(rows: _Rows, indices: list[int], results: list[Continuation], row_prefixes: list[list[int]]) -> None:
    """Give the results of the rows ``indices`` their cache: the row's prefix and the first ``fed`` sampled tokens
    it was fed (after a row stopped, what it was fed is junk and left out)."""
    prefilled = rows.attention_mask.shape[1] - rows.fed
    for row in indices:
        index = int(rows.result_of[row])
        result = results[index]
        n = min(rows.fed, len(result.token_ids))
        valid = rows.attention_mask[row].bool()
        valid[prefilled + n:] = False
        result.carry = _take_carry(rows.cache, row, valid, row_prefixes[index] + result.token_ids[:n])
