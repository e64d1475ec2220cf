"""`slate index build|link` and `slate serve-retriever` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from slate.cli.retrieval import register
from slate.retrieval.bm25 import Bm25Retriever
from slate.retrieval.dense import META_FILE, DenseRetriever


@pytest.fixture(scope="module")
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


class Outcome:
    """Exit code and output with rich's line wrapping undone (long paths wrap at the terminal width)."""

    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code = exit_code
        self.output = " ".join(output.split())


def invoke(app: typer.Typer, *args: object) -> Outcome:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return Outcome(result.exit_code, result.output)


def test_build_bm25_index(cli: typer.Typer, small_corpus: Path, tmp_path: Path) -> None:
    result = invoke(cli, "index", "build", "--corpus", small_corpus, "--out", tmp_path / "bm25")
    assert result.exit_code == 0, result.output
    assert "51 passages, bm25" in result.output
    hits = Bm25Retriever.load(tmp_path / "bm25").search(["Republic of Braikrohum"], 1)
    assert hits[0][0].id == "doc-00000"


def test_build_dense_index(cli: typer.Typer, small_corpus: Path, minilm_path: Path, minilm: Any,
                           tmp_path: Path) -> None:
    result = invoke(cli, "index", "build", "--corpus", small_corpus, "--out", tmp_path / "dense", "--backend", "dense",
                    "--encoder", minilm_path, "--kind", "hnsw", "--query-prefix", "query: ", "--passage-prefix",
                    "passage: ", "--batch-size", "16", "--no-copy-corpus")
    assert result.exit_code == 0, result.output
    assert "51 passages, dense hnsw, dim 384" in result.output
    meta = json.loads((tmp_path / "dense" / META_FILE).read_text())
    assert (meta["kind"], meta["query_prefix"], meta["passage_prefix"]) == ("hnsw", "query: ", "passage: ")
    assert meta["corpus_file"] == str(small_corpus.resolve()) and not (tmp_path / "dense" / "corpus.jsonl").exists()
    retriever = DenseRetriever.load(tmp_path / "dense", encoder=minilm)
    assert retriever.search(["Which country is officially the Republic of Braikrohum?"], 1)[0][0].id == "doc-00000"


def test_build_errors_are_one_line(cli: typer.Typer, small_corpus: Path, tmp_path: Path) -> None:
    result = invoke(cli, "index", "build", "--corpus", small_corpus, "--out", tmp_path / "x", "--backend", "splade")
    assert result.exit_code == 1 and "unknown --backend 'splade'; choose bm25 or dense" in result.output
    result = invoke(cli, "index", "build", "--corpus", tmp_path / "missing.jsonl", "--out", tmp_path / "x")
    assert result.exit_code == 1 and "missing.jsonl: no such file" in result.output
    assert "Traceback" not in result.output


def test_serve_retriever_passes_limits(cli: typer.Typer, bm25_index_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import slate.retrieval.server as server

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(server, "serve", lambda index, **kwargs: calls.append({"index": index, **kwargs}))
    result = invoke(cli, "serve-retriever", "--index", bm25_index_dir, "--port", "8123", "--max-queries", "16",
                    "--max-topk", "5")
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert (call["index"], call["host"], call["port"]) == (bm25_index_dir, "127.0.0.1", 8123)
    assert (call["limits"].max_queries, call["limits"].max_topk, call["limits"].default_topk) == (16, 5, 3)
    result = invoke(cli, "serve-retriever", "--index", bm25_index_dir, "--max-topk", "2")
    assert result.exit_code == 1 and "--default-topk 3 exceeds --max-topk 2" in result.output


def test_serve_retriever_rejects_a_non_index(cli: typer.Typer, tmp_path: Path) -> None:
    result = invoke(cli, "serve-retriever", "--index", tmp_path)
    assert result.exit_code == 1 and "not an index directory" in result.output


def test_link_adopts_a_faiss_index(cli: typer.Typer, flat_index_dir: Path, small_corpus: Path, tmp_path: Path) -> None:
    result = invoke(cli, "index", "link", "--faiss", flat_index_dir / "index.faiss", "--corpus", small_corpus,
                    "--out", tmp_path / "linked", "--encoder", "intfloat/e5-base-v2")
    assert result.exit_code == 0, result.output
    assert "linked 51 passages (flat, dim 384)" in result.output
    meta = json.loads((tmp_path / "linked" / META_FILE).read_text())
    assert (meta["encoder"], meta["query_prefix"], meta["passage_prefix"]) == ("intfloat/e5-base-v2", "query: ",
                                                                               "passage: ")
    assert meta["index_file"] == str((flat_index_dir / "index.faiss").resolve())
    result = invoke(cli, "index", "link", "--faiss", tmp_path / "none.index", "--corpus", small_corpus,
                    "--out", tmp_path / "x")
    assert result.exit_code == 1 and "no faiss index file" in result.output
