"""Build the configured retriever: embedded BM25, a dense faiss index, or a /retrieve server over HTTP."""

from __future__ import annotations

from pathlib import Path

from slate.config import RetrievalConfig
from slate.errors import ConfigError
from slate.retrieval.base import Retriever


def build_retriever(config: RetrievalConfig, world_dir: str | Path | None = None) -> Retriever:
    if config.backend == "http":
        from slate.retrieval.http import HttpRetriever

        return HttpRetriever(str(config.url), timeout_s=config.timeout_s, max_retries=config.max_retries)
    if config.backend == "dense":
        if not config.index_dir:
            raise ConfigError("retrieval.backend=dense needs retrieval.index_dir (build one with "
                              "`slate index build --backend dense`).")
        from slate.retrieval.dense import DenseRetriever

        return DenseRetriever.load(config.index_dir)
    from slate.retrieval.bm25 import Bm25Retriever

    corpus = config.corpus or (Path(world_dir) / "corpus.jsonl" if world_dir else None)
    if corpus is None:
        raise ConfigError("retrieval.backend=bm25 needs retrieval.corpus or a world directory.")
    index_dir = config.index_dir or (Path(world_dir) / "bm25_index" if world_dir else None)
    return Bm25Retriever.from_corpus_cached(corpus, index_dir)
