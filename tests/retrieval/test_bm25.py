from __future__ import annotations

from pathlib import Path

import pytest

from slate.data.records import Passage, read_qa_jsonl
from slate.errors import RetrievalError
from slate.retrieval.bm25 import Bm25Retriever


def _recall_at(retriever: Bm25Retriever, queries: list[str], gold: list[str], k: int) -> float:
    results = retriever.search(queries, k)
    return sum(g in [h.id for h in hits] for g, hits in zip(gold, results, strict=True)) / len(gold)


def test_world_is_solvable_and_hard(default_world: Path) -> None:
    retriever = Bm25Retriever.from_corpus(default_world / "corpus.jsonl")
    dev = read_qa_jsonl(default_world / "dev.jsonl")
    hops = [hop for record in dev for hop in record.chain]
    # solvable: the gold sub-question finds its hop's passage in the top 3
    assert _recall_at(retriever, [h.sub_question for h in hops], [h.doc_id for h in hops], 3) >= 0.95
    # hard: pasting a 3-4-hop question rarely finds the passage of its last hop
    deep = [r for r in dev if r.hops >= 3]
    assert _recall_at(retriever, [r.question for r in deep], [r.chain[-1].doc_id for r in deep], 3) < 0.3
    # vague: a name's first word alone (a look-alike root) often misses
    assert _recall_at(retriever, [h.entity.split()[0] for h in hops], [h.doc_id for h in hops], 3) < 0.8


def test_save_load_round_trip_and_hit_fields(tmp_path: Path) -> None:
    passages = [Passage("a", "Kesh River\nThe Kesh River rises in Orvania."),
                Passage("b", "Orvania\nOrvania is a country. Its capital is Dalvin."),
                Passage("c", "Dalvin\nDalvin is a city in Orvania.")]
    retriever = Bm25Retriever.build(passages)
    retriever.save(tmp_path / "idx")
    loaded = Bm25Retriever.load(tmp_path / "idx")
    [[top, *_]] = loaded.search(["Where does the Kesh River rise?"], k=2)
    assert (top.id, top.title) == ("a", "Kesh River")
    assert top.text == "The Kesh River rises in Orvania."
    assert top.score > 0
    assert [h.id for h in retriever.search(["capital of Orvania"], 3)[0]] == \
        [h.id for h in loaded.search(["capital of Orvania"], 3)[0]]
    assert loaded.search(["zzzz unmatched"], 3) == [[]]  # no zero-score padding


def test_load_of_a_non_index_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(RetrievalError, match=str(tmp_path)):
        Bm25Retriever.load(tmp_path)
