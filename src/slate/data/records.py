"""QA records and corpus passages, and the jsonl reader that reports every bad row as ``file:line``.

FlashRAG format, one JSON object per line: ``{id, question, golden_answers, metadata}``. The synthetic world adds
``metadata.hops`` and ``metadata.chain`` (one ``{sub_question, entity, relation, answer, doc_id}`` per hop).
A corpus is ``{id, contents}`` with ``contents = "Title\\ntext"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slate.errors import DataError


@dataclass(frozen=True)
class ChainHop:
    """One hop of a gold reasoning chain: the sub-question, its subject entity, and where the fact is written."""

    sub_question: str
    entity: str
    relation: str
    answer: str
    doc_id: str


@dataclass(frozen=True)
class QARecord:
    """One question with its accepted answers. ``chain`` is empty where the dataset has no gold chain."""

    id: str
    question: str
    golden_answers: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    dataset: str = ""

    @property
    def hops(self) -> int | None:
        hops = self.metadata.get("hops")
        return int(hops) if hops is not None else None

    @property
    def chain(self) -> list[ChainHop]:
        return [ChainHop(**hop) for hop in self.metadata.get("chain", [])]


@dataclass(frozen=True)
class Passage:
    """A corpus passage. ``contents`` keeps the FlashRAG form ``"Title\\ntext"``; title and text are split views."""

    id: str
    contents: str

    @property
    def title(self) -> str:
        return self.contents.split("\n", 1)[0].strip().strip('"')

    @property
    def text(self) -> str:
        parts = self.contents.split("\n", 1)
        return parts[1].strip() if len(parts) == 2 else ""


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each non-blank line; a line that is not UTF-8 or not a JSON object is a
    DataError naming ``file:line`` and the column of the damage (a line cut short: its end)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file. Check the path (a built world has corpus.jsonl, train.jsonl, "
                        "dev.jsonl, test.jsonl).")
    with path.open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{line_number}: not UTF-8 (byte {raw[exc.start]:#04x} at byte column "
                                f"{exc.start + 1}). Re-encode the file as UTF-8.") from None
            # without its line break, so that a line cut short is reported at its end, not at "line 2, column 1"
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_number}: not valid JSON ({exc.msg} at column {exc.colno}). "
                                "Each line must be one JSON object.") from None
            except RecursionError:
                raise DataError(f"{path}:{line_number}: JSON nested too deeply to read. Each line must be one "
                                "flat JSON object.") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{line_number}: expected a JSON object, got {type(obj).__name__}.")
            yield line_number, obj


def _require(obj: dict[str, Any], key: str, kind: type, where: str, expected: str) -> Any:
    if key not in obj:
        raise DataError(f'{where}: row has no "{key}" ({expected}). Fix the row.')
    value = obj[key]
    if not isinstance(value, kind):
        raise DataError(f'{where}: "{key}" must be {kind.__name__}, got {type(value).__name__}. Fix the row.')
    return value


def qa_record_from_json(obj: dict[str, Any], where: str, dataset: str = "") -> QARecord:
    """Validate one FlashRAG row; ``where`` ("file:line") goes into every error."""
    expected = "FlashRAG rows need id, question, golden_answers"
    question = _require(obj, "question", str, where, expected).strip()
    answers = _require(obj, "golden_answers", list, where, expected)
    if not question:
        raise DataError(f"{where}: empty question. Fix or remove the row.")
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise DataError(f'{where}: "golden_answers" must be a non-empty list of non-empty strings.')
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise DataError(f'{where}: "metadata" must be an object, got {type(metadata).__name__}.')
    if "chain" in metadata:
        if not isinstance(metadata["chain"], list) or not all(isinstance(hop, dict) for hop in metadata["chain"]):
            raise DataError(f'{where}: "metadata.chain" must be a list of hop objects. Fix the row.')
        for hop_index, hop in enumerate(metadata["chain"]):
            missing = {"sub_question", "entity", "relation", "answer", "doc_id"} - set(hop)
            if missing:
                raise DataError(f"{where}: metadata.chain[{hop_index}] lacks {sorted(missing)}.")
    record_id = str(obj.get("id", where))
    return QARecord(id=record_id, question=question, golden_answers=tuple(a.strip() for a in answers),
                    metadata=metadata, dataset=dataset)


def read_qa_jsonl(path: str | Path, dataset: str = "") -> list[QARecord]:
    """Read a FlashRAG jsonl file; the first bad row raises a DataError naming ``file:line``."""
    path = Path(path)
    dataset = dataset or path.parent.name
    records = [qa_record_from_json(obj, f"{path}:{line}", dataset) for line, obj in iter_jsonl(path)]
    if not records:
        raise DataError(f"{path}: no questions in the file. Check that it is the right split.")
    return records


def read_corpus(path: str | Path) -> list[Passage]:
    """Read a ``{id, contents}`` corpus; an empty corpus or a row without contents is a DataError."""
    path = Path(path)
    passages = []
    for line, obj in iter_jsonl(path):
        where = f"{path}:{line}"
        contents = _require(obj, "contents", str, where, "corpus rows need id and contents")
        if "id" not in obj:
            raise DataError(f'{where}: row has no "id" (corpus rows need id and contents). Fix the row.')
        passages.append(Passage(id=str(obj["id"]), contents=contents))
    if not passages:
        raise DataError(f"{path}: the corpus is empty. Build a world (slate world build) or point at a corpus jsonl.")
    return passages


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows deterministically (sorted keys off, ensure_ascii on) so the same input gives identical bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=True) + "\n")
