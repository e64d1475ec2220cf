"""What a judge scores and what it returns: ``JudgeItem`` in, ``JudgeVerdict`` out, the ``Judge`` protocol.

SLATE (arXiv 2602.23440) scores each candidate step on up to three dimensions with ternary scores:
``think_score`` for the ``<think>`` text, ``query_score`` for a ``<search>`` query, ``answer_score`` for an
``<answer>``. One ``JudgeItem`` is one dimension of one step; a judge scores a batch of items in order.

``JudgeStats`` holds the counters every backend reports through ``Judge.metrics()`` as ``judge/<counter>`` (reset on
read):

- ``calls``: requests sent to a model (one per item that was not served from the cache; retries not included),
- ``retries``: extra attempts after a timeout, 429 or 5xx,
- ``cache_hits``: items answered from the on-disk cache or by an identical item in the same batch,
- ``failures``: verdicts with ``failed=True`` for any reason (request failed after retries, or unparsable reply),
- ``parse_failures``: the subset of ``failures`` whose reply came back but held no valid score,
- ``prompt_tokens`` / ``completion_tokens``: token usage as the server (or tokenizer) counted it,
- ``group_calls``: requests that scored a group of sibling candidates at once (``judge.mode=group``; in ``calls``),
- ``group_fallbacks``: groups whose reply did not hold one valid score per candidate and were judged item by item.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from slate.data.records import ChainHop

JudgeKind = Literal["think", "query", "answer"]
JUDGE_KINDS: tuple[JudgeKind, ...] = ("think", "query", "answer")
SCORES: tuple[int, ...] = (-1, 0, 1)
STAT_KEYS: tuple[str, ...] = ("calls", "retries", "cache_hits", "failures", "parse_failures", "prompt_tokens",
                              "completion_tokens", "group_calls", "group_fallbacks")


@dataclass(frozen=True)
class JudgeItem:
    """One dimension of one candidate step, with what the judge may look at.

    ``context`` is the trajectory before this step as text (earlier steps and their ``<information>`` blocks).
    ``think`` is, for a query item, the thinking that preceded the query (the alignment criterion).
    ``retrieved_ids`` and ``chain`` are for the oracle only; an LLM judge never sees them.
    """

    kind: JudgeKind
    question: str
    text: str
    context: str = ""
    think: str = ""
    golden_answers: tuple[str, ...] = ()
    retrieved_ids: tuple[str, ...] = ()
    chain: tuple[ChainHop, ...] = ()


@dataclass(frozen=True)
class JudgeVerdict:
    """A ternary score with the judge's reasoning. ``failed`` means no score could be produced; then score is 0."""

    score: int
    explanation: str
    failed: bool = False

    @classmethod
    def failure(cls, reason: str) -> JudgeVerdict:
        """The fallback verdict: score 0, ``failed=True``. Callers count it (STYLE.md section 7)."""
        return cls(score=0, explanation=reason, failed=True)


@runtime_checkable
class Judge(Protocol):
    name: str

    def score(self, items: list[JudgeItem]) -> list[JudgeVerdict]:
        """Score a batch; one verdict per item, in the same order. Never raises on a bad reply: it fails the item."""
        ...

    def metrics(self) -> dict[str, float]:
        """Counters since the last call, ``judge/<counter>`` for each of ``STAT_KEYS``, reset on read."""
        ...


@dataclass
class JudgeStats:
    """Thread-safe counters behind ``Judge.metrics()``."""

    _counts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAT_KEYS, 0.0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, **increments: float) -> None:
        with self._lock:
            for key, value in increments.items():
                if key not in self._counts:
                    raise KeyError(f"JudgeStats.add: unknown counter {key!r}; known: {', '.join(STAT_KEYS)}.")
                self._counts[key] += value

    def read_and_reset(self) -> dict[str, float]:
        with self._lock:
            counts = dict(self._counts)
            self._counts = dict.fromkeys(STAT_KEYS, 0.0)
        return counts

    def metrics(self) -> dict[str, float]:
        """``read_and_reset`` with the keys namespaced as training logs them: ``judge/calls``, …"""
        return {f"judge/{key}": value for key, value in self.read_and_reset().items()}
