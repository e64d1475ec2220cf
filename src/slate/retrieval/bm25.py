"""The embedded default retriever: BM25 (bm25s, Lucene scoring) over a ``{id, contents}`` corpus.

An index directory holds the bm25s index and the corpus beside it, so ``Bm25Retriever.load(dir)`` needs nothing
else. Stemming uses PyStemmer's English stemmer and bm25s's English stop-word list, at indexing and query time alike.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import bm25s
import Stemmer

from slate.data.records import Passage, read_corpus
from slate.errors import RetrievalError
from slate.retrieval.base import Hit, hit_from_contents

logger = logging.getLogger(__name__)
_META = "slate_bm25.json"


class Bm25Retriever:
    def __init__(self, passages: list[Passage], index: bm25s.BM25) -> None:
        self.passages = passages
        self.index = index
        self.stemmer = Stemmer.Stemmer("english")

    @classmethod
    def build(cls, passages: list[Passage]) -> Bm25Retriever:
        if not passages:
            raise RetrievalError("cannot build a BM25 index over an empty corpus.")
        stemmer = Stemmer.Stemmer("english")
        tokens = bm25s.tokenize([p.contents for p in passages], stopwords="en", stemmer=stemmer, show_progress=False)
        index = bm25s.BM25()
        index.index(tokens, show_progress=False)
        return cls(passages, index)

    @classmethod
    def from_corpus(cls, corpus_path: str | Path) -> Bm25Retriever:
        return cls.build(read_corpus(corpus_path))

    def save(self, index_dir: str | Path) -> None:
        index_dir = Path(index_dir)
        self.index.save(str(index_dir))
        with (index_dir / "corpus.jsonl").open("w", encoding="utf-8") as handle:
            for passage in self.passages:
                handle.write(json.dumps({"id": passage.id, "contents": passage.contents}) + "\n")
        (index_dir / _META).write_text(json.dumps({"backend": "bm25s", "passages": len(self.passages)}) + "\n")

    @classmethod
    def load(cls, index_dir: str | Path) -> Bm25Retriever:
        index_dir = Path(index_dir)
        if not (index_dir / _META).is_file():
            raise RetrievalError(f"{index_dir}: not a slate BM25 index (no {_META}). Build one with "
                                 "`slate search --corpus FILE --index DIR` or `slate index build --backend bm25`.")
        return cls(read_corpus(index_dir / "corpus.jsonl"), bm25s.BM25.load(str(index_dir)))

    @classmethod
    def from_corpus_cached(cls, corpus_path: str | Path, index_dir: str | Path | None) -> Bm25Retriever:
        """Load ``index_dir`` when it holds an index, else build from the corpus (and save there if given)."""
        if index_dir is not None and (Path(index_dir) / _META).is_file():
            return cls.load(index_dir)
        retriever = cls.from_corpus(corpus_path)
        if index_dir is not None:
            retriever.save(index_dir)
        return retriever

    def metrics(self) -> dict[str, float]:
        return {}  # an in-process index: nothing retried, nothing dropped

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        k = min(k, len(self.passages))
        tokens = bm25s.tokenize(queries, stopwords="en", stemmer=self.stemmer, show_progress=False)
        doc_indices, scores = self.index.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        results = []
        for row_docs, row_scores in zip(doc_indices, scores, strict=True):
            hits = [hit_from_contents(self.passages[int(i)].id, self.passages[int(i)].contents, float(s))
                    for i, s in zip(row_docs, row_scores, strict=True) if float(s) > 0.0]
            results.append(hits)
        return results
