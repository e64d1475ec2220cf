from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slate.cli import demo

REPO = Path(__file__).resolve().parents[2]


def test_quick_demo_runs_every_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    demo.main(["--quick"])
    root = tmp_path / "runs" / "demo_quick"
    before = json.loads((root / "eval_sft.json").read_text())
    after = json.loads((root / "eval_slate.json").read_text())
    assert before["n"] == after["n"] == 40  # the micro world's whole dev split
    # the quick demo shows a policy that learns: its warm start answers some dev questions (chance is about 1 in 12)
    assert before["em"] > 0.15 and before["valid_rate"] > 0.9
    assert set(before["by_hops"]) == {"1", "2"}
    assert (root / "slate" / "policy" / "config.json").is_file()
    assert len((root / "slate" / "metrics.jsonl").read_text().splitlines()) == 2  # trainer.steps=2 in --quick


def test_demo_starts_from_the_shipped_warm_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from slate.errors import SlateError

    assert (REPO / demo.SHIPPED_START / "model.safetensors").is_file()  # the comparison's start ships with the repo
    monkeypatch.chdir(REPO)
    assert demo.warm_start(False, False, tmp_path, None, tmp_path, None) == demo.SHIPPED_START
    monkeypatch.chdir(tmp_path)  # elsewhere: one clear error, nothing trained in its place
    with pytest.raises(SlateError, match=r"results/start_policy/ .* is missing"):
        demo.warm_start(False, False, tmp_path, None, tmp_path, None)
    assert not (tmp_path / "sft").exists()
