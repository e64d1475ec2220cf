from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from slate.cli.main import app

runner = CliRunner()


def test_world_build_then_search_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["world", "build", "--out", str(tmp_path / "w"), "--seed", "3", "--size", "tiny"])
    assert result.exit_code == 0, result.output
    dev_row = json.loads((tmp_path / "w" / "dev.jsonl").read_text().splitlines()[0])
    hop = dev_row["metadata"]["chain"][0]
    result = runner.invoke(app, ["search", "--corpus", str(tmp_path / "w" / "corpus.jsonl"),
                                 "--index", str(tmp_path / "idx"), "--k", "3", "--json", hop["sub_question"]])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[0])
    assert line["query"] == hop["sub_question"]
    assert len(line["hits"]) == 3 and set(line["hits"][0]) == {"id", "title", "score"}
    assert hop["doc_id"] in [h["id"] for h in line["hits"]]
    assert (tmp_path / "idx" / "slate_bm25.json").is_file()  # index saved, reused next time


def test_bad_corpus_exits_non_zero_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"id": "1", "contents": "A\\nb"}\n{broken\n')
    result = runner.invoke(app, ["search", "--corpus", str(bad), "q"])
    assert result.exit_code == 1
    assert f"{bad}:2" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["world", "build", "--out", str(tmp_path / "w"), "--size", "huge"])
    assert result.exit_code == 1 and "unknown world size" in result.output
