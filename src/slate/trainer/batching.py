"""How the update's samples become forward passes: units, micro-batches packed by padded tokens, and their tensors.

A *unit* is what must share a forward pass: one full trajectory, or samples that share a prefix — SLATE's k siblings
of one step (the prefix runs once, ``forward.grouped_token_logprobs``), and, when their prefixes nest, all the steps
of one question (*tree packing*: step t + 1's prefix is step t's prefix plus the chosen candidate and its
information, so the longest prefix runs once and each step's candidates attend to their own part of it; a
question's T prefix forwards become one). A *micro-batch* is several units in one forward. On a CPU a forward pass
of a small model over a few hundred tokens costs mostly per-call overhead, so packing many units per pass is where
the update's speed comes from; the loss is unchanged, because every micro-batch contributes its exact share of the
minibatch's token mean (the weights in ``Trainer._optimizer_step``).

Micro-batches are packed by *padded* tokens (rows × longest row, plus the prefixes for groups), after sorting the
units by length, so little of each pass is padding. ``max_tokens=None`` keeps the older count-based split
(``max_units`` units per pass).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from slate.logprobs import grouped_token_logprobs, pad_batch, token_logprobs
from slate.runtime import autocast_bf16
from slate.samples import Sample

Unit = list[Sample]


def prefix_len(unit: Unit) -> int:
    """The prefix a unit's forward runs: the longest of its samples' (a tree's last step)."""
    return max(s.prefix_len for s in unit)


def _nested(groups: list[Unit]) -> bool:
    """Whether each group's prefix begins the longest one (``groups`` sorted by prefix length)."""
    longest = groups[-1][0]
    return all(g[0].token_ids[:g[0].prefix_len] == longest.token_ids[:g[0].prefix_len] for g in groups[:-1])


def make_units(samples: list[Sample], trees: bool = False) -> tuple[list[Unit], bool]:
    """Group samples sharing a prefix (every sample has ``prefix_len > 0``) by ``group_id``, then, with ``trees``,
    the groups of one ``tree_id`` whose prefixes nest into one unit; else one sample per unit."""
    if not (samples and all(s.prefix_len > 0 for s in samples)):
        return [[s] for s in samples], False
    groups: dict[str, Unit] = {}
    for sample in samples:
        groups.setdefault(sample.group_id, []).append(sample)
    if not trees:
        return list(groups.values()), True
    by_tree: dict[str, list[Unit]] = {}
    for key, group in groups.items():
        tree = group[0].tree_id
        by_tree.setdefault(key if tree is None else f"tree:{tree}", []).append(group)
    units: list[Unit] = []
    for members in by_tree.values():
        members.sort(key=prefix_len)
        if _nested(members):
            units.append([s for group in members for s in group])
        else:  # not a chain of prefixes after all: each group runs its own prefix, as without trees
            units += members
    return units, True


def padded_tokens(units: list[Unit], grouped: bool) -> int:
    """Tokens one forward over ``units`` processes, padding included: the cost a micro-batch is packed by."""
    if not units:
        return 0
    if grouped:
        prefix = max(prefix_len(u) for u in units)
        continuation = max(len(s.token_ids) - s.prefix_len for u in units for s in u)
        return len(units) * prefix + sum(len(u) for u in units) * continuation
    return len(units) * max(len(u[0].token_ids) for u in units)


def pack_micro_batches(units: list[Unit], grouped: bool, max_tokens: int | None, max_units: int) -> list[list[Unit]]:
    """Split ``units`` into forward passes: at most ``max_tokens`` padded tokens each (a unit larger than that runs
    alone), or ``max_units`` units each when ``max_tokens`` is None. Units are sorted by length first."""
    if max_tokens is None:
        return [units[i:i + max_units] for i in range(0, len(units), max_units)]
    ordered = sorted(units, key=lambda u: (prefix_len(u), max(len(s.token_ids) for s in u)))
    micros: list[list[Unit]] = []
    current: list[Unit] = []
    for unit in ordered:
        if current and padded_tokens([*current, unit], grouped) > max_tokens:
            micros.append(current)
            current = []
        current.append(unit)
    if current:
        micros.append(current)
    return micros


@dataclass
class MicroTensors:
    """One forward pass. Full trajectories: rows are whole sequences. Groups: rows are continuations after their
    unit's prefix (``prefix_ids`` (G, P) right-padded, ``prefix_lens`` (G,), ``group_of`` (N,)), each from its own
    length (``row_prefix_lens``: a tree's steps continue from different points of its one prefix)."""

    input_ids: torch.Tensor  # (N, L)
    attention_mask: torch.Tensor  # (N, L)
    target_mask: torch.Tensor  # (N, L): trained tokens
    old_logprobs: torch.Tensor  # (N, L)
    advantages: torch.Tensor  # (N, L)
    ref_logprobs: torch.Tensor | None  # (N, L), when every sample carries them
    prefix_ids: torch.Tensor | None = None
    prefix_lens: torch.Tensor | None = None
    group_of: torch.Tensor | None = None
    row_prefix_lens: torch.Tensor | None = None  # (N,): how much of its unit's prefix each row continues

    def to(self, device: torch.device | str) -> MicroTensors:
        return MicroTensors(*(t.to(device) if t is not None else None for t in (
            self.input_ids, self.attention_mask, self.target_mask, self.old_logprobs, self.advantages,
            self.ref_logprobs, self.prefix_ids, self.prefix_lens, self.group_of, self.row_prefix_lens)))


def _padded(rows: list[list[float]], width: int) -> torch.Tensor:
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out


def micro_tensors(units: list[Unit], grouped: bool, pad_id: int) -> MicroTensors:
    samples = [s for unit in units for s in unit]
    starts = [s.prefix_len if grouped else 0 for s in samples]  # where each row begins in its sample

    def rows(field: str) -> list[list]:
        return [getattr(s, field)[a:] for s, a in zip(samples, starts, strict=True)]

    input_ids, attention_mask, target_mask = pad_batch(rows("token_ids"), rows("loss_mask"), pad_id)
    width = input_ids.shape[1]
    has_ref = all(s.ref_logprobs is not None for s in samples)
    tensors = MicroTensors(input_ids, attention_mask, target_mask,
                           old_logprobs=_padded(rows("old_logprobs"), width),
                           advantages=_padded(rows("advantages"), width),
                           ref_logprobs=_padded(rows("ref_logprobs"), width) if has_ref else None)
    if grouped:  # the first continuation token is predicted by the prefix, so it is a target too
        target_mask[:, 0] = torch.tensor([s.loss_mask[a] for s, a in zip(samples, starts, strict=True)])
        longest = [max(unit, key=lambda s: s.prefix_len) for unit in units]
        prefixes = [sample.token_ids[:sample.prefix_len] for sample in longest]
        tensors.prefix_ids, _, _ = pad_batch(prefixes, [[False] * len(p) for p in prefixes], pad_id)
        tensors.prefix_lens = torch.tensor([len(p) for p in prefixes], dtype=torch.long)
        tensors.group_of = torch.tensor([g for g, unit in enumerate(units) for _ in unit], dtype=torch.long)
        tensors.row_prefix_lens = torch.tensor(starts, dtype=torch.long)
    return tensors


def scatter_rows(values: torch.Tensor, units: list[Unit], grouped: bool) -> list[list[float]]:
    """Per-token values of a forward (N, L) back into full-length lists aligned with each sample's ``token_ids``
    (0 over a group's prefix), in the order of ``micro_tensors``' rows."""
    samples = [s for unit in units for s in unit]
    rows = values.detach().float().cpu().tolist()
    out = []
    for sample, row in zip(samples, rows, strict=True):
        start = sample.prefix_len if grouped else 0
        out.append([0.0] * start + row[: len(sample.token_ids) - start])
    return out


@torch.no_grad()
def packed_logprobs(model: torch.nn.Module, micros: list[list[Unit]], grouped: bool, pad_id: int,
                    temperature: float, device: torch.device | str,
                    float32_head: bool = False) -> list[tuple[Sample, list[float]]]:
    """Every sample's per-token log-probs under ``model`` (0 where it is not trained, aligned with its ids), one
    packed no-grad forward per micro-batch: the reference's log-probs and a server check use the same passes."""
    out: list[tuple[Sample, list[float]]] = []
    for micro in micros:
        batch = micro_tensors(micro, grouped, pad_id).to(device)
        if grouped:
            values = grouped_token_logprobs(model, batch.prefix_ids, batch.input_ids, batch.target_mask,
                                            temperature, prefix_lens=batch.prefix_lens, group_of=batch.group_of,
                                            row_prefix_lens=batch.row_prefix_lens,
                                            float32_head=float32_head).logprobs
        else:
            values = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.target_mask,
                                    temperature, float32_head=float32_head).logprobs
        out += zip([s for unit in micro for s in unit], scatter_rows(values, micro, grouped), strict=True)
    return out


@torch.no_grad()
def reference_logprobs(reference: torch.nn.Module | None, policy_model: torch.nn.Module, micros: list[list[Unit]],
                       grouped: bool, pad_id: int, temperature: float, device: torch.device | str,
                       bf16_autocast: bool = False) -> None:
    """Store the frozen reference's log-probs on every sample (``ref_logprobs``), in packed no-grad passes, once
    per RL step: they do not change across update epochs. ``reference`` None: LoRA, whose reference is the policy's
    base model, its adapters switched off."""
    adapter_off = contextlib.nullcontext() if reference is not None else policy_model.disable_adapter()
    model = reference if reference is not None else policy_model
    was_training = model.training
    model.eval()
    with adapter_off, autocast_bf16(device, bf16_autocast):
        for sample, values in packed_logprobs(model, micros, grouped, pad_id, temperature, device,
                                              float32_head=bf16_autocast):
            sample.ref_logprobs = values
    model.train(was_training)
