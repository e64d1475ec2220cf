"""Dense retrieval over a slice of the tiny world: paraphrase -> its passage, flat vs HNSW, save/load round trip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slate.data.records import read_corpus
from slate.errors import RetrievalError
from slate.retrieval.base import Retriever
from slate.retrieval.dense import (
    INDEX_FILE,
    META_FILE,
    CorpusTable,
    DenseRetriever,
    build_dense_index,
    corpus_line_offsets,
    link_dense_index,
)


def paraphrases(corpus: Path) -> tuple[list[str], list[str]]:
    """For each passage, a question built from its second sentence with the subject named: (queries, doc ids)."""
    passages = read_corpus(corpus)
    queries = [f"Tell me about {p.title}: {p.text.split('.')[1].strip().lower()}" for p in passages]
    return queries, [p.id for p in passages]


def test_paraphrase_retrieves_its_passage(flat_index_dir: Path, small_corpus: Path, minilm: Any) -> None:
    retriever = DenseRetriever.load(flat_index_dir, encoder=minilm)
    assert isinstance(retriever, Retriever) and len(retriever) == 51
    first = read_corpus(small_corpus)[0]  # "Braikrohum\nBraikrohum is a nation with a long coastline. ..."
    query = f"Which country is officially called the Republic of {first.title}?"
    hits = retriever.search([query], k=3)[0]
    assert hits[0].id == first.id == "doc-00000"
    assert (hits[0].title, hits[0].text) == (first.title, first.text)
    assert len(hits) == 3 and hits[0].score >= hits[1].score >= hits[2].score
    assert 0.0 < hits[0].score <= 1.0001  # cosine similarity of normalised vectors

    queries, ids = paraphrases(small_corpus)
    results = retriever.search(queries, k=1)
    top1 = sum(doc_id == hits[0].id for doc_id, hits in zip(ids, results, strict=True))
    assert top1 / len(ids) >= 0.8  # look-alike names (Gryquiger / North Gryquiger) cost a few


def test_flat_search_matches_numpy(flat_index_dir: Path, small_corpus: Path, minilm: Any) -> None:
    # reference equivalence: top-3 of the flat index = argsort of the cosine matrix computed by hand
    retriever = DenseRetriever.load(flat_index_dir, encoder=minilm)
    vectors = retriever.index.reconstruct_n(0, len(retriever))  # (51, 384), the stored passage embeddings
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    queries = ["Who founded Tulerox Holdings?", "the longest river of Gryquiger", "a city by the sea"]
    q = minilm.encode(queries, normalize_embeddings=True)
    expected = np.argsort(-(q @ vectors.T), axis=1)[:, :3]
    ids = [p.id for p in read_corpus(small_corpus)]
    got = retriever.search(queries, 3)
    assert [[h.id for h in row] for row in got] == [[ids[i] for i in row] for row in expected]
    assert retriever.search(queries[:1], 500)[0][-1].id in ids and len(retriever.search(queries[:1], 500)[0]) == 51


def test_hnsw_agrees_with_flat_and_round_trips(flat_index_dir: Path, small_corpus: Path, minilm_path: Path,
                                              minilm: Any, tmp_path: Path) -> None:
    meta = build_dense_index(small_corpus, str(minilm_path), tmp_path / "hnsw", kind="hnsw", hnsw_m=8,
                             ef_construction=40, ef_search=16, batch_size=16, show_progress=False,
                             encoder_model=minilm)
    written = json.loads((tmp_path / "hnsw" / META_FILE).read_text())
    assert (written["kind"], written["dim"], written["passages"], written["hnsw_m"]) == ("hnsw", 384, 51, 8)
    assert written["encoder"] == str(minilm_path.resolve()) and meta.dim == 384
    assert (tmp_path / "hnsw" / "corpus.jsonl").read_bytes() == small_corpus.read_bytes()

    flat = DenseRetriever.load(flat_index_dir, encoder=minilm)
    hnsw = DenseRetriever.load(tmp_path / "hnsw", encoder=minilm)
    queries, _ = paraphrases(small_corpus)
    flat_top, hnsw_top = flat.search(queries, 1), hnsw.search(queries, 1)
    agree = sum(f[0].id == h[0].id for f, h in zip(flat_top, hnsw_top, strict=True))
    assert agree / len(queries) >= 0.9

    # a fresh load (no mmap, encoder read back from the meta file) answers exactly as before
    again = DenseRetriever.load(tmp_path / "hnsw", mmap=False)
    assert [[(h.id, round(h.score, 4)) for h in row] for row in again.search(queries[:6], 3)] == \
        [[(h.id, round(h.score, 4)) for h in row] for row in hnsw.search(queries[:6], 3)]


def test_prefixes_are_applied(flat_index_dir: Path, minilm: Any, tmp_path: Path) -> None:
    # an E5-style query prefix changes the query vector, hence the score, by exactly what encoding it gives
    meta = json.loads((flat_index_dir / META_FILE).read_text())
    prefixed = tmp_path / "prefixed"
    prefixed.mkdir()
    for name in (INDEX_FILE, "corpus.jsonl", "offsets.npy"):
        (prefixed / name).write_bytes((flat_index_dir / name).read_bytes())
    (prefixed / META_FILE).write_text(json.dumps({**meta, "query_prefix": "query: "}))
    plain, with_prefix = (DenseRetriever.load(d, encoder=minilm) for d in (flat_index_dir, prefixed))
    hit_plain, hit_prefix = plain.search(["Braikrohum"], 1)[0][0], with_prefix.search(["Braikrohum"], 1)[0][0]
    vector = plain.index.reconstruct(0)
    expected = float(minilm.encode(["query: Braikrohum"], normalize_embeddings=True)[0] @ vector)
    assert hit_prefix.id == hit_plain.id == "doc-00000"
    assert hit_prefix.score == pytest.approx(expected, abs=1e-5) and hit_prefix.score != pytest.approx(hit_plain.score)


def test_corpus_table_reads_rows_by_offset(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "contents": "T\\nx"}\n\n{"id": "b", "contents": "Ü\\ny"}\n', encoding="utf-8")
    offsets = corpus_line_offsets(corpus)
    # line 1 is 31 bytes + newline; the blank line at byte 32 starts no row; line 2 (Ü is 2 bytes) is 32 + 1
    assert offsets.tolist() == [0, 33, 66]
    table = CorpusTable(corpus, offsets)
    assert len(table) == 2 and table.get(1).id == "b" and table.get(1).title == "Ü"


def test_errors_name_the_fix(tmp_path: Path, flat_index_dir: Path, small_corpus: Path) -> None:
    with pytest.raises(RetrievalError, match="not a slate dense index"):
        DenseRetriever.load(tmp_path)
    with pytest.raises(RetrievalError, match="unknown dense index kind 'ivf'"):
        build_dense_index(small_corpus, "x", tmp_path / "o", kind="ivf")
    with pytest.raises(RetrievalError, match="cannot load encoder '/no/such/model'"):
        build_dense_index(small_corpus, "/no/such/model", tmp_path / "o")
    short = tmp_path / "short.jsonl"
    short.write_text('{"id": "a", "contents": "T\\nx"}\n')
    with pytest.raises(RetrievalError, match=r"holds 51 vectors but .* has 1 passages"):
        link_dense_index(flat_index_dir / INDEX_FILE, short, "x", tmp_path / "linked")


def test_link_existing_faiss_index(tmp_path: Path, flat_index_dir: Path, small_corpus: Path, minilm: Any) -> None:
    # adopting a prebuilt index (as Search-R1's e5_Flat.index + wiki-18.jsonl) gives the same answers
    meta = link_dense_index(flat_index_dir / INDEX_FILE, small_corpus, "unused", tmp_path / "linked",
                            query_prefix="", passage_prefix="")
    assert meta.kind == "flat" and meta.passages == 51 and Path(meta.corpus_file).is_absolute()
    linked = DenseRetriever.load(tmp_path / "linked", encoder=minilm)
    built = DenseRetriever.load(flat_index_dir, encoder=minilm)
    query = ["Who is the president of Gryquiger?"]
    assert [h.id for h in linked.search(query, 3)[0]] == [h.id for h in built.search(query, 3)[0]]


def test_the_encoder_keeps_pytorchs_own_layers(minilm: Any) -> None:
    """No Hugging Face Hub kernels (transformers 5.x turns them on by default and fetches them on a GPU)."""
    model = minilm[0].auto_model
    minilm.eval()  # encode() puts the model in eval mode: where transformers would kernelize
    assert getattr(model, "use_kernels", False) is False
    assert getattr(model, "kernels_mode", None) is None
