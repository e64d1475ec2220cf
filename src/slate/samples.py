"""The trainer's input: what a sampler hands over after one RL step's rollouts, rewards and advantages.

A ``Sample`` is one token sequence with its loss mask, the sampling log-probs and a per-token advantage; the
update (``trainer/loop.py``) needs nothing else. A ``SampledBatch`` holds one step's samples and the episodes they
came from (for the logged rollout metrics). A ``Sampler`` turns questions into a batch with the rollout engine;
``rollout/samplers.py`` holds the two there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from slate.data.records import QARecord
    from slate.rollout.engine import RolloutEngine
    from slate.rollout.episode import Episode


@dataclass
class Sample:
    token_ids: list[int]
    loss_mask: list[bool]
    old_logprobs: list[float]
    advantages: list[float]  # per token; 0 where loss_mask is False
    group_id: str
    prefix_len: int = 0  # leading tokens shared by every sample of the group (never trained): computed once
    # samples whose prefixes nest (SLATE: the steps of one question, each prefix extending the one before) share one
    # prefix forward in the update, the longest (tree packing, trainer/batching.py); None: the group stands alone
    tree_id: str | None = None
    ref_logprobs: list[float] | None = None  # the frozen reference's log-probs, filled once per RL step
    # the oldest policy version among the steps it trains on; None if any of them came from an unknown version
    policy_version: int | None = None

    @property
    def num_policy_tokens(self) -> int:
        return sum(self.loss_mask)


@dataclass
class SampledBatch:
    samples: list[Sample]
    episodes: list[Episode]  # the trajectories (for SLATE: the extended prefixes, one per question)


class Sampler(Protocol):
    def sample(self, engine: RolloutEngine, records: list[QARecord]) -> SampledBatch:
        """Roll out ``records`` with ``engine``, reward the steps and put each candidate's advantage on its tokens."""
        ...

    def metrics(self) -> dict[str, float]:
        """Counters since the last call (its reward strategy's included), reset on read."""
        ...

    def generators(self) -> dict[str, torch.Generator]:
        """The random generators it draws from, by name: saved with every checkpoint so a resumed run draws alike."""
        ...
