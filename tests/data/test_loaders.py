"""Loaders: each format parsed by value, every bad row reported with its file and line or row index."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slate.data.loaders import BENCHMARKS, infer_dataset_name, load_benchmarks, load_qa
from slate.errors import DataError

SHARED_QA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "qa"


def write_lines(path: Path, rows: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_flashrag_jsonl_by_value(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "nq" / "dev.jsonl", [
        {"id": "nq_0", "question": " who wrote it ", "golden_answers": ["Bob", "Robert"], "metadata": {"row": 0}},
        "",
        {"id": "nq_1", "question": "when?", "golden_answers": ["1972"]},
    ])
    records = load_qa(path)
    assert [r.id for r in records] == ["nq_0", "nq_1"]
    assert records[0].question == "who wrote it"
    assert records[0].golden_answers == ("Bob", "Robert")
    assert records[0].metadata == {"row": 0}
    assert {r.dataset for r in records} == {"nq"}
    assert load_qa(tmp_path / "nq", split="dev") == records  # a directory resolves to <split>.jsonl
    assert load_qa(path, dataset="custom")[0].dataset == "custom"
    assert len(load_qa(path, limit=1)) == 1


def test_flashrag_bad_row_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "hotpotqa" / "dev.jsonl", [
        {"id": "a", "question": "q1", "golden_answers": ["x"]},
        {"id": "b", "question": "q2", "golden_answers": ["y"]},
        {"id": "c", "question": "q3", "golden_answers": []},
    ])
    with pytest.raises(DataError, match=re.escape(f"{path}:3: ") + ".*golden_answers"):
        load_qa(path)
    write_lines(path, [{"id": "a", "question": "q1", "golden_answers": ["x"]}, "{not json"])
    with pytest.raises(DataError, match=re.escape(f"{path}:2: not valid JSON")):
        load_qa(path)
    write_lines(path, [{"id": "a", "question": "q1"}])
    with pytest.raises(DataError, match=re.escape(f'{path}:1: row has neither "golden_answers"')):
        load_qa(path)


def test_plain_jsonl_and_json_list(tmp_path: Path) -> None:
    jsonl = write_lines(tmp_path / "mine_test.jsonl", [
        {"question": "Capital of France?", "answer": "Paris"},
        {"question": "Two primes?", "answer": ["2", "3", "2"]},
    ])
    records = load_qa(jsonl)
    assert [(r.id, r.question, r.golden_answers, r.dataset) for r in records] == [
        ("mine_0", "Capital of France?", ("Paris",), "mine"),
        ("mine_1", "Two primes?", ("2", "3"), "mine"),  # repeated answers are dropped, order kept
    ]
    as_list = tmp_path / "quiz.json"
    as_list.write_text(json.dumps([{"question": "a?", "answer": "b"}, {"id": "q7", "question": "c?",
                                                                        "answer": ["d", "e"]}]))
    records = load_qa(as_list)
    assert [(r.id, r.golden_answers, r.dataset) for r in records] == [("quiz_0", ("b",), "quiz"),
                                                                      ("q7", ("d", "e"), "quiz")]


def test_plain_bad_rows_name_the_row(tmp_path: Path) -> None:
    as_list = tmp_path / "quiz.json"
    as_list.write_text(json.dumps([{"question": "a?", "answer": "b"}, {"question": "c?", "answer": ""}]))
    with pytest.raises(DataError, match=re.escape(f'{as_list}:row 1: "answer" holds an empty')):
        load_qa(as_list)
    as_list.write_text(json.dumps({"question": "a?"}))
    with pytest.raises(DataError, match="expected a JSON list"):
        load_qa(as_list)
    jsonl = write_lines(tmp_path / "x.jsonl", [{"question": "a?", "answer": "b"}, {"question": "", "answer": "c"}])
    with pytest.raises(DataError, match=re.escape(f'{jsonl}:2: row has no "question"')):
        load_qa(jsonl)


def search_r1_row(question: str | None, answers: list[str], source: str, index: int, in_column: bool) -> dict:
    prompt = ("Answer the given question. You must conduct reasoning inside <think> and </think> ... "
              f"Question: {question}\n")
    row = {"id": f"test_{index}", "data_source": source, "prompt": [{"role": "user", "content": prompt}],
           "ability": "fact-reasoning", "reward_model": {"style": "rule", "ground_truth": {"target": answers}},
           "extra_info": {"split": "test", "index": index}}
    row["question"] = question if in_column else None
    return row


def test_search_r1_parquet(tmp_path: Path) -> None:
    rows = [search_r1_row("who is the ceo", ["Ann", "Ann B."], "nq", 0, True),
            search_r1_row("where is the river?", ["Kesh"], "hotpotqa", 1, False)]
    rows[0]["golden_answers"] = ["Ann", "Ann B."]
    rows[1]["golden_answers"] = None
    path = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    records = load_qa(path)
    assert [(r.id, r.question, r.golden_answers, r.dataset) for r in records] == [
        ("test_0", "who is the ceo", ("Ann", "Ann B."), "nq"),
        ("test_1", "where is the river?", ("Kesh",), "hotpotqa"),  # question read from the prompt
    ]
    assert records[1].metadata["extra_info"] == {"split": "test", "index": 1}
    assert {r.dataset for r in load_qa(path, dataset="mixed")} == {"mixed"}


def test_search_r1_parquet_bad_row(tmp_path: Path) -> None:
    rows = [search_r1_row("q0", ["a"], "nq", 0, True), search_r1_row("q1", ["b"], "nq", 1, True)]
    rows[1]["reward_model"] = {"style": "rule", "ground_truth": {"target": []}}
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError, match=re.escape(f"{path}:row 1: ") + r".*reward_model\.ground_truth\.target"):
        load_qa(path)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        load_qa(tmp_path / "nope.jsonl")
    (tmp_path / "nq").mkdir()
    with pytest.raises(DataError, match=r"no dev.jsonl, dev.parquet or dev.json"):
        load_qa(tmp_path / "nq")
    (tmp_path / "q.csv").write_text("question,answer\n")
    with pytest.raises(DataError, match=r"unknown QA file type '\.csv'"):
        load_qa(tmp_path / "q.csv")
    empty = write_lines(tmp_path / "empty.jsonl", [""])
    with pytest.raises(DataError, match="no questions"):
        load_qa(empty)


@pytest.mark.parametrize(("path", "name"), [("nq/dev.jsonl", "nq"), ("x/hotpotqa_test.parquet", "hotpotqa"),
                                            ("x/my-questions.json", "my-questions"), ("popqa-val.jsonl", "popqa")])
def test_infer_dataset_name(path: str, name: str) -> None:
    assert infer_dataset_name(path) == name


def test_real_dev_slices() -> None:
    if not SHARED_QA.is_dir():
        pytest.skip(f"{SHARED_QA} not present")
    loaded = load_benchmarks(SHARED_QA)
    assert tuple(loaded) == BENCHMARKS
    counts = {name: len(records) for name, records in loaded.items()}
    assert counts == {"nq": 150, "triviaqa": 150, "popqa": 150, "hotpotqa": 150, "2wikimultihopqa": 150,
                      "musique": 150, "bamboogle": 60}
    first = loaded["nq"][0]
    assert (first.id, first.question, first.golden_answers) == (
        "nq_0", "when was the last time anyone was on the moon", ("14 December 1972 UTC", "December 1972"))
    for name, records in loaded.items():
        assert all(r.dataset == name and r.golden_answers for r in records)
        assert len({r.id for r in records}) == len(records)
