"""sft → eval → train through the CLI on the tiny world, with a tiny model and a few steps: the commands wire the
pieces together, write what they promise, and turn bad input into one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from slate.cli.main import app

runner = CliRunner()
TINY = ["model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=64", "sft.max_demos=40", "sft.epochs=1", "sft.batch_tokens=4096",
        "rollout.max_step_tokens=16", "sft.max_steps=null", "sft.time_limit_s=60"]


def test_sft_eval_train_pipeline(tiny_world: Path, tmp_path: Path) -> None:
    sft_dir = tmp_path / "sft"
    result = runner.invoke(app, ["sft", "--config", "configs/tiny.yaml", "--world", str(tiny_world), "--out",
                                 str(sft_dir), *TINY])
    assert result.exit_code == 0, result.output
    assert "SFT seed 0 1/" in result.output and "| loss " in result.output  # progress lines: not on a terminal
    assert (sft_dir / "config.json").is_file() and (sft_dir / "slate_config.yaml").is_file()
    saved = yaml.safe_load((sft_dir / "slate_config.yaml").read_text())
    assert saved["model"]["tiny"]["hidden_size"] == 32

    out_json = tmp_path / "eval.json"
    result = runner.invoke(app, ["eval", "--policy", str(sft_dir), "--world", str(tiny_world), "--limit", "8",
                                 "--out", str(out_json)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out_json.read_text())
    assert metrics["n"] == 8 and set(metrics["by_hops"]) <= {"1", "2", "3", "4"}
    assert sum(h["n"] for h in metrics["by_hops"].values()) == 8
    assert 0.0 <= metrics["em"] <= 1.0 and 0.0 <= metrics["valid_rate"] <= 1.0

    run_dir = tmp_path / "rl"
    result = runner.invoke(app, ["train", "--config", "configs/slate-tiny.yaml", "--init", str(sft_dir), "--out",
                                 str(run_dir), "--world", str(tiny_world), "trainer.steps=1",
                                 "trainer.questions_per_step=2", "rollout.group_size=2", "rollout.max_step_tokens=16"])
    assert result.exit_code == 0, result.output
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "loss/kl" in json.loads(lines[0])
    assert (run_dir / "policy" / "slate_config.yaml").is_file()


def test_bad_inputs_exit_one_without_traceback(tiny_world: Path, tmp_path: Path) -> None:
    cases = [
        (["eval", "--policy", str(tmp_path), "--world", str(tiny_world)], "not a checkpoint directory"),
        (["sft", "--config", "configs/tiny.yaml", "--out", str(tmp_path / "x"), "trainer.stepz=3"], "stepz"),
        (["sft", "--config", "configs/nope.yaml", "--out", str(tmp_path / "x")], "no such config file"),
        (["train", "--config", "configs/slate-tiny.yaml", "--init", str(tmp_path), "--out", str(tmp_path / "y"),
          "--world", str(tmp_path / "no_world")], "no world here"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output
