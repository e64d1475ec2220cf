"""The Retriever protocol: batched ``search(queries, k)`` returning, per query, the top-k hits best first.

Every backend (bm25s, dense faiss, the HTTP client of a ``/retrieve`` server) implements this one method, so the
rollout engine never knows which one it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


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


def hit_from_contents(doc_id: str, contents: str, score: float) -> Hit:
    """Split a FlashRAG ``"Title\\ntext"`` into a Hit (titles in wiki-18 are quoted; the quotes are dropped)."""
    title, _, text = contents.partition("\n")
    return Hit(id=str(doc_id), title=title.strip().strip('"'), text=text.strip(), score=float(score))
