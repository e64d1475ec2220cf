"""The Retriever protocol: batched ``search(queries, k)`` returning, per query, the top-k hits best first.

Every backend (bm25s, dense faiss, the HTTP client of a ``/retrieve`` server) implements this one method, so the
rollout engine never knows which one it talks to, and ``metrics()``: its own counters since the last call
(``retrieval/retries`` of requests it re-sent, ``retrieval/dropped_hits``), reset on read; {} when it counts nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# faiss fills the slots it cannot answer (k > reachable vectors) with id -1 and score -FLT_MAX (inner product);
# Search-R1's server turns id -1 into corpus[-1], so the slot arrives as the last passage with score -3.4e38.
PADDING_SCORE = -1e38


@dataclass(frozen=True)
class Hit:
    """One retrieved passage with its score (higher is better; the scale depends on the backend)."""

    id: str
    title: str
    text: str
    score: float

    @property
    def contents(self) -> str:
        return f"{self.title}\n{self.text}"


@runtime_checkable
class Retriever(Protocol):
    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        """Top-k hits for each query, best first. Raises RetrievalError when the backend cannot answer."""
        ...

    def metrics(self) -> dict[str, float]:
        """Counters since the last call, namespaced (``retrieval/dropped_hits``), reset on read."""
        ...


def drop_invalid_hits(hits: list[Hit]) -> tuple[list[Hit], int]:
    """(the hits a search can really have returned, how many were dropped): a padding slot (non-finite or
    -FLT_MAX score), a negative id, or an id already listed earlier for the same query."""
    kept: list[Hit] = []
    seen: set[str] = set()
    for hit in hits:
        if not math.isfinite(hit.score) or hit.score <= PADDING_SCORE or hit.id.startswith("-") or hit.id in seen:
            continue
        seen.add(hit.id)
        kept.append(hit)
    return kept, len(hits) - len(kept)


def hit_from_contents(doc_id: str, contents: str, score: float) -> Hit:
    """Split a FlashRAG ``"Title\\ntext"`` into a Hit (titles in wiki-18 are quoted; the quotes are dropped)."""
    title, _, text = contents.partition("\n")
    return Hit(id=str(doc_id), title=title.strip().strip('"'), text=text.strip(), score=float(score))
