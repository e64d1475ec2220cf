from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

from slate.data.records import read_corpus, read_qa_jsonl
from slate.world.build import build_world, write_world
from slate.world.schema import RELATION_BY_NAME


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    write_world(build_world(seed=11, size="tiny"), tmp_path / "a", seed=11, size="tiny")
    write_world(build_world(seed=11, size="tiny"), tmp_path / "b", seed=11, size="tiny")
    write_world(build_world(seed=12, size="tiny"), tmp_path / "c", seed=12, size="tiny")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["corpus.jsonl"] != _digest(tmp_path / "c")["corpus.jsonl"]


def test_default_world_is_balanced_over_hops_and_splits_are_disjoint(default_world: Path) -> None:
    summary = json.loads((default_world / "world.json").read_text())
    assert 2000 <= summary["passages"] <= 5000
    questions = {split: read_qa_jsonl(default_world / f"{split}.jsonl") for split in ("train", "dev", "test")}
    for records in questions.values():
        counts = Counter(r.hops for r in records)
        assert set(counts) == {1, 2, 3, 4}
        assert max(counts.values()) == min(counts.values())  # exactly balanced
    texts = [{r.question for r in records} for records in questions.values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert sum(len(r) for r in questions.values()) >= 2000


def test_chains_are_consistent_with_the_corpus(tiny_world: Path) -> None:
    corpus = {p.id: p for p in read_corpus(tiny_world / "corpus.jsonl")}
    for record in read_qa_jsonl(tiny_world / "dev.jsonl"):
        chain = record.chain
        assert len(chain) == record.hops
        assert chain[-1].answer == record.golden_answers[0]
        for previous, hop in itertools.pairwise(chain):
            assert hop.entity == previous.answer  # each hop starts where the last one ended
        for hop in chain:
            passage = corpus[hop.doc_id]
            assert passage.title == hop.entity
            assert hop.answer in passage.text  # the fact is written in the subject's passage
            assert RELATION_BY_NAME[hop.relation]
        # the first entity is named in the question; no intermediate answer is
        assert chain[0].entity in record.question
        for hop in chain[:-1]:
            assert hop.answer not in record.question


def test_countries_carry_aliases_in_golden_answers(default_world: Path) -> None:
    records = read_qa_jsonl(default_world / "train.jsonl")
    country_answers = [r for r in records if r.chain[-1].relation in ("located_in", "rises_in")]
    assert country_answers
    assert all(len(r.golden_answers) == 2 and r.golden_answers[1].endswith(r.golden_answers[0])
               for r in country_answers)


def test_micro_world_asks_one_and_two_hops_only(tmp_path: Path) -> None:
    summary = write_world(build_world(seed=0, size="micro"), tmp_path, seed=0, size="micro")
    # the sizes in WORLD_SIZES["micro"]: 4 + 12 + 24 + 10 + 4 + 4 entities, (90, 20, 20) questions per hop count
    assert summary["passages"] == 58
    assert summary["questions"] == {"train": {"1": 90, "2": 90}, "dev": {"1": 20, "2": 20}, "test": {"1": 20, "2": 20}}
    train, dev = (read_qa_jsonl(tmp_path / f"{split}.jsonl") for split in ("train", "dev"))
    assert all(len(r.chain) == r.hops for r in train + dev)
    assert not {r.question for r in train} & {r.question for r in dev}


def test_longer_chains_dial_asks_up_to_six_hops_through_distinct_entities(tmp_path: Path) -> None:
    summary = write_world(build_world(seed=3, size="small", max_hops=6), tmp_path, seed=3, size="small", max_hops=6)
    # small: (300, 50, 100) questions per hop count, now for each of 1..6 hops
    assert summary["max_hops"] == 6
    assert summary["questions"]["dev"] == {str(h): 50 for h in range(1, 7)}
    dev = read_qa_jsonl(tmp_path / "dev.jsonl")
    six = [r for r in dev if r.hops == 6]
    for record in six:
        chain = record.chain
        assert len(chain) == 6
        # hop i's entity is hop i-1's answer, and no entity is visited twice
        assert all(chain[i].entity == chain[i - 1].answer for i in range(1, 6))
        assert len({hop.entity for hop in chain} | {chain[-1].answer}) == 7
        assert chain[-1].answer in record.golden_answers
        # the question names only the first entity: none of the later ones (outside a look-alike first name)
        assert all(hop.entity not in record.question.replace(chain[0].entity, "") for hop in chain[1:])


def test_max_hops_out_of_range_is_a_config_error() -> None:
    from slate.errors import ConfigError

    with pytest.raises(ConfigError, match="1 to 6 hops"):
        build_world(seed=0, size="tiny", max_hops=7)


def test_default_world_is_unchanged_by_the_dial(tmp_path: Path) -> None:
    write_world(build_world(seed=5, size="tiny"), tmp_path / "a", seed=5, size="tiny")
    write_world(build_world(seed=5, size="tiny", max_hops=4), tmp_path / "b", seed=5, size="tiny")
    for name in ("corpus.jsonl", "train.jsonl", "dev.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
