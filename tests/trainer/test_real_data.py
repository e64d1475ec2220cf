"""`slate train` on question files and pretrained policies: the bad inputs of the real setup each end in one clear
line (exit 1, no traceback), before any heavy work; and the recipes in configs/ all pass `--dry-run`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slate.cli.main import app

runner = CliRunner()
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
NQ = SHARED / "data" / "qa" / "nq" / "dev.jsonl"
HOTPOT = SHARED / "data" / "qa" / "hotpotqa" / "dev.jsonl"
CORPUS = SHARED / "data" / "corpus" / "wiki_sample.jsonl"
CONFIGS = sorted((REPO_ROOT / "configs").glob("*.yaml")) + sorted((REPO_ROOT / "configs" / "paper").glob("*.yaml"))
REAL = ["retrieval.backend=bm25", f"retrieval.corpus={CORPUS}", "trainer.steps=1", "trainer.questions_per_step=2",
        "rollout.group_size=2", "rollout.max_steps=1", "rollout.max_step_tokens=8"]


def _train(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["train", *args])
    return result.exit_code, result.output


def _one_clear_error(code: int, output: str, *needles: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output and "error:" in output, output
    for needle in needles:
        assert needle in output.replace("\n", " "), output


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_dry_run_passes_on_every_shipped_config(config: Path) -> None:
    code, output = _train("--config", str(config), "--dry-run")
    assert code == 0, output
    assert "dry run: config valid" in output and "optimizer steps per RL step" in output


def test_dry_run_of_the_paper_searchr1_recipe_shows_its_batch_arithmetic() -> None:
    code, output = _train("--config", "configs/paper/searchr1-qwen2.5-3b.yaml", "--dry-run")
    assert code == 0, output
    flat = " ".join(output.split())
    # 512 questions x k=5 = 2,560 episodes over 8 processes = 320 each; minibatches of 160 -> 2 optimizer steps
    assert "512 × 5 = 2560 episodes (320 per process)" in flat
    assert "│ 2 (1 epoch(s)" in flat
    assert "3.09 B" in flat and "8 expected" in flat


def test_dry_run_resolves_real_files_and_checks_gold_evidence(tmp_path: Path) -> None:
    code, output = _train("--config", "configs/searchr1-tiny.yaml", "--data", str(NQ), "--data", str(HOTPOT),
                          "--dry-run", "model.source=smollm2", *REAL)
    assert code == 0, output
    flat = " ".join(output.split())
    assert "150 questions" in flat and "SmolLM2-135M-Instruct" in flat
    code, output = _train("--config", "configs/stepsearch-tiny.yaml", "--data", str(NQ), "--dry-run", *REAL)
    _one_clear_error(code, output, "stepsearch needs gold evidence", "searchr1")


def test_unknown_data_format_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "questions.txt"
    bad.write_text("who wrote hamlet?\n")
    code, output = _train("--config", "configs/searchr1-tiny.yaml", "--data", str(bad), "--out", str(tmp_path / "r"),
                          "model.source=smollm2", *REAL)
    _one_clear_error(code, output, "questions.txt", "unknown QA file type")


def test_row_without_a_question_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "quiz.jsonl"
    bad.write_text(json.dumps({"question": "Who wrote Hamlet?", "answer": "Shakespeare"}) + "\n"
                   + json.dumps({"answer": "Paris"}) + "\n")
    code, output = _train("--config", "configs/searchr1-tiny.yaml", "--data", str(bad), "--out", str(tmp_path / "r"),
                          "model.source=smollm2", *REAL)
    _one_clear_error(code, output, "quiz.jsonl:2", 'no "question"')


def test_empty_mixture_is_one_clear_error(tmp_path: Path) -> None:
    from slate.data.mixture import load_mixture
    from slate.errors import DataError

    with pytest.raises(DataError, match="empty training mixture"):
        load_mixture([], seed=0)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    code, output = _train("--config", "configs/searchr1-tiny.yaml", "--data", str(empty), "--out",
                          str(tmp_path / "r"), "model.source=smollm2", *REAL)
    _one_clear_error(code, output, "empty.jsonl", "no questions")


def test_model_directory_without_tokenizer_is_one_clear_error(tiny_policy_dir: Path, tmp_path: Path) -> None:
    weights_only = tmp_path / "weights_only"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_policy_dir / name, weights_only / name)
    code, output = _train("--config", "configs/searchr1-tiny.yaml", "--data", str(NQ), "--init", str(weights_only),
                          "--out", str(tmp_path / "r"), "model.source=hf", *REAL)
    _one_clear_error(code, output, "weights_only", "has no tokenizer")


def test_lora_targets_matching_nothing_is_one_clear_error(tiny_policy_dir: Path, tmp_path: Path) -> None:
    code, output = _train("--config", "configs/searchr1-tiny.yaml", "--data", str(NQ), "--init", str(tiny_policy_dir),
                          "--out", str(tmp_path / "r"), "model.source=hf", "trainer.lora_rank=4",
                          "trainer.lora_target_modules=[qkv_fused]", *REAL)
    _one_clear_error(code, output, "lora_target_modules", "qkv_fused", "q_proj")


def test_more_processes_than_launched_is_one_clear_error(tiny_policy_dir: Path, tmp_path: Path) -> None:
    code, output = _train("--config", "configs/searchr1-tiny.yaml", "--data", str(NQ), "--init", str(tiny_policy_dir),
                          "--out", str(tmp_path / "r"), "model.source=hf", "trainer.num_processes=8", *REAL)
    _one_clear_error(code, output, "trainer.num_processes=8", "1 process(es) were launched", "accelerate launch")


def test_methods_that_need_gold_evidence_refuse_real_data_at_start(tmp_path: Path) -> None:
    code, output = _train("--config", "configs/stepsearch-tiny.yaml", "--data", str(NQ), "--out", str(tmp_path / "r"),
                          "model.source=smollm2", *REAL)
    _one_clear_error(code, output, "stepsearch needs gold evidence", "searchr1, slate_em, igpo, slate_ig need none",
                     "methods with an LLM judge")
    code, output = _train("--config", "configs/slate-tiny.yaml", "--data", str(NQ), "--out", str(tmp_path / "r"),
                          "model.source=smollm2", *REAL)
    _one_clear_error(code, output, "judge.backend=oracle needs gold chains", "openai or hf")
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_tiny_source_without_init_says_what_to_pass(tmp_path: Path) -> None:
    code, output = _train("--config", "configs/searchr1-tiny.yaml", "--data", str(NQ), "--out", str(tmp_path / "r"),
                          *REAL)
    _one_clear_error(code, output, "model.source=tiny", "--init")


def test_eval_without_policy_uses_the_configs_model(tiny_policy_dir: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    result = runner.invoke(app, ["eval", "--config", "configs/searchr1-tiny.yaml", "--data", str(NQ), "--data",
                                 str(HOTPOT), "--limit", "1", "--out", str(out_json), "model.source=hf",
                                 f"model.path={tiny_policy_dir}", "retrieval.backend=bm25",
                                 f"retrieval.corpus={CORPUS}", "rollout.max_steps=1", "rollout.max_step_tokens=4"])
    assert result.exit_code == 0, result.output
    report = json.loads(out_json.read_text())
    assert sorted(report["by_dataset"]) == ["hotpotqa", "nq"] and report["n"] == 2
