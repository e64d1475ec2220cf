"""Shared fixtures: one tiny world (and its BM25 retriever) and a tiny random policy checkpoint, built once per session
(seconds per RL step on a CPU), and the path of ../shared beside the repo."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any test module imports torch (see slate/__init__.py)

import pytest

# the topology run in the background for tests/integration/test_topology.py (a plugin, so that pytest-xdist's
# controller, which collects nothing, still sees its hooks)
pytest_plugins = ["background_topology"]

REPO_ROOT = Path(__file__).resolve().parents[1]
# SmolLM2 dequantised once for the whole session (every xdist worker and server subprocess reads it), in the
# checkout: a clean clone converts the GGUF once, as a new user would
os.environ.setdefault("SLATE_CACHE_DIR", str(REPO_ROOT / ".cache"))
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


@pytest.fixture(scope="session")
def tiny_policy_dir(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slate.config import TinyModelConfig
    from slate.data.records import read_corpus, read_qa_jsonl
    from slate.rollout.policy import build_tiny_policy

    texts = [p.contents for p in read_corpus(tiny_world / "corpus.jsonl")]
    texts += [r.question for r in read_qa_jsonl(tiny_world / "train.jsonl")]
    policy = build_tiny_policy(texts, TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2,
                                                      intermediate_size=64, max_positions=1024), seed=0)
    out = tmp_path_factory.mktemp("tiny_policy")
    policy.save(out)
    return out
