"""Search-R1's own corpus format (wiki-18 rows, quoted titles) end to end: a dense index, and a BM25 index served
by `serve` in a subprocess (no torch there, so it starts in a second or two) and read with the HTTP client.
Uses the ten-passage sample in shared/data/corpus."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from retrieval_test_servers import free_port

from slate.retrieval.bm25 import Bm25Retriever
from slate.retrieval.dense import DenseRetriever, build_dense_index
from slate.retrieval.http import HttpRetriever

WIKI_SAMPLE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "corpus" / "wiki_sample.jsonl"


@pytest.fixture(scope="module")
def wiki_index(minilm_path: Path, minilm: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not WIKI_SAMPLE.is_file():
        pytest.skip(f"{WIKI_SAMPLE} not present")
    out = tmp_path_factory.mktemp("wiki_dense")
    build_dense_index(WIKI_SAMPLE, str(minilm_path), out, show_progress=False, encoder_model=minilm)
    return out


@pytest.fixture(scope="module")
def wiki_bm25(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not WIKI_SAMPLE.is_file():
        pytest.skip(f"{WIKI_SAMPLE} not present")
    out = tmp_path_factory.mktemp("wiki_bm25")
    Bm25Retriever.from_corpus(WIKI_SAMPLE).save(out)
    return out


@pytest.fixture(scope="module")
def served(wiki_bm25: Path) -> Iterator[str]:
    """`slate.retrieval.server.serve` in its own process, as `slate serve-retriever` runs it."""
    port = free_port()
    code = f"from slate.retrieval.server import serve; serve({str(wiki_bm25)!r}, port={port}, log_level='warning')"
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "HF_HUB_OFFLINE": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_wiki_rows_round_trip(wiki_index: Path, minilm: Any) -> None:
    retriever = DenseRetriever.load(wiki_index, encoder=minilm)
    (hits,) = retriever.search(["Which lobbyist for Genentech and Roche died in 2015?"], 2)
    assert hits[0].id == "0" and hits[0].title == "Evan Morris"  # the quotes around wiki-18 titles are dropped
    assert hits[0].text.startswith("Evan Morris Evan L. Morris (January 26, 1977 – July 9, 2015)")


def test_served_over_http(served: str, wiki_bm25: Path) -> None:
    health = httpx.get(f"{served}/health", timeout=5).json()
    assert (health["backend"], health["passages"]) == ("bm25", 10)
    reply = httpx.post(f"{served}/retrieve", json={"queries": ["cathedral in Pavia"], "topk": 2}, timeout=30).json()
    assert [doc["id"] for doc in reply["result"][0]] in (["4", "5"], ["5", "4"])  # both Pavia Cathedral passages
    assert reply["result"][0][0]["contents"].startswith("Pavia Cathedral\n")
    queries = ["Soviet airborne corps", "blue hand grabs his head"]
    with HttpRetriever(f"{served}/retrieve", timeout_s=30) as client:
        remote = client.search(queries, 1)
    local = Bm25Retriever.load(wiki_bm25).search(queries, 1)
    assert [[(h.id, h.title) for h in row] for row in remote] == [[("9", "4th Airborne Corps (Soviet Union)")],
                                                                  [("3", "Ao Oni (film)")]]
    assert [h.score for row in remote for h in row] == [h.score for row in local for h in row]
