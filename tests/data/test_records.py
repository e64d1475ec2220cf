from __future__ import annotations

from pathlib import Path

import pytest

from slate.data.records import read_corpus, read_qa_jsonl
from slate.errors import DataError


def test_flashrag_row_parses(tmp_path: Path) -> None:
    path = tmp_path / "nq" / "dev.jsonl"
    path.parent.mkdir()
    path.write_text('{"id": "q1", "question": " Who? ", "golden_answers": ["A", "B"], "metadata": {"hops": 2}}\n\n')
    [record] = read_qa_jsonl(path)
    assert (record.id, record.question, record.golden_answers, record.hops, record.dataset) == \
        ("q1", "Who?", ("A", "B"), 2, "nq")


@pytest.mark.parametrize(("line", "message"), [
    ('{"id": 1, "question": "q"}', 'no "golden_answers"'),
    ('{"id": 1, "question": "q", "golden_answers": []}', "non-empty list"),
    ('{"id": 1, "question": "q", "golden_answers": "a"}', "must be list"),
    ('{"id": 1, "question": "q", "golden_answers": ["a"]', "not valid JSON"),
    ('["q"]', "expected a JSON object"),
])
def test_bad_row_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 0, "question": "fine", "golden_answers": ["x"]}\n' + line + "\n")
    with pytest.raises(DataError, match=message) as info:
        read_qa_jsonl(path)
    assert f"{path}:2" in str(info.value)


def test_empty_corpus_and_missing_contents(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match="corpus is empty"):
        read_corpus(empty)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "no contents"}\n')
    with pytest.raises(DataError, match=rf"{bad}:1: row has no \"contents\""):
        read_corpus(bad)
