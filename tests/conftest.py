"""Shared fixtures: one tiny world (and its BM25 retriever) built once per session, and the path of ../shared beside
the repo."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any test module imports torch (see slate/__init__.py)

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slate.world.build import build_world, write_world

    out = tmp_path_factory.mktemp("tiny_world")
    write_world(build_world(seed=7, size="tiny"), out, seed=7, size="tiny")
    return out


@pytest.fixture(scope="session")
def tiny_retriever(tiny_world: Path):
    from slate.retrieval.bm25 import Bm25Retriever

    return Bm25Retriever.from_corpus_cached(tiny_world / "corpus.jsonl", tiny_world / "bm25_index")


@pytest.fixture(scope="session")
def default_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slate.world.build import build_world, write_world

    out = tmp_path_factory.mktemp("default_world")
    write_world(build_world(seed=0, size="default"), out, seed=0, size="default")
    return out
