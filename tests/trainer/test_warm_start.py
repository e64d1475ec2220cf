"""Warm-start selection: the best dev EM wins (the lower seed on a tie), the chosen checkpoint is the one copied, the
choice is written down, and bad candidates are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slate.cli.main import app
from slate.config import load_config
from slate.data.records import read_qa_jsonl
from slate.errors import ConfigError
from slate.trainer import warm_start
from slate.trainer.sft import train_sft
from slate.trainer.warm_start import SELECTION_FILE, best_candidate, parse_seeds, select_warm_start

TINY = ["model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=64", "sft.max_demos=20", "sft.batch_tokens=4096", "rollout.max_step_tokens=16",
        "sft.max_steps=3", "sft.warmup_steps=1"]


def test_best_candidate_by_hand() -> None:
    assert best_candidate([0.2, 0.7, 0.5]) == 1
    assert best_candidate([0.7, 0.2, 0.7]) == 0  # a tie keeps the first (the lower seed)
    assert best_candidate([0.0]) == 0
    with pytest.raises(ConfigError, match="no warm-start candidates"):
        best_candidate([])


def test_parse_seeds() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds(" 3, 5 ") == [3, 5]
    for bad in ["0,a", "1,1", "", ","]:
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


@pytest.fixture(scope="module")
def two_seeds(tiny_world: Path, tiny_retriever, tmp_path_factory: pytest.TempPathFactory):
    from slate.config import save_config

    config = load_config("configs/tiny.yaml", [f"world.dir={tiny_world}", *TINY])
    train = read_qa_jsonl(tiny_world / "train.jsonl")
    root = tmp_path_factory.mktemp("seeds")
    dirs = []
    for seed in (0, 1):
        run = config.model_copy(update={"sft": config.sft.model_copy(update={"seed": seed})})
        train_sft(run, train, tiny_retriever, tiny_world, root / f"seed_{seed}")
        save_config(run, root / f"seed_{seed}" / "slate_config.yaml")
        dirs.append(root / f"seed_{seed}")
    return config, dirs


def test_the_best_dev_em_is_the_checkpoint_copied(two_seeds, tiny_world: Path, tiny_retriever, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config, dirs = two_seeds
    dev = read_qa_jsonl(tiny_world / "dev.jsonl")[:4]
    evaluated: list[int] = []
    real_evaluate = warm_start.evaluate

    def scripted_evaluate(engine, records):  # the real rollouts, with EM replaced: seed 1 is the better one
        result, episodes = real_evaluate(engine, records)
        evaluated.append(len(records))
        return {**result, "em": [0.25, 0.5][len(evaluated) - 1]}, episodes

    monkeypatch.setattr(warm_start, "evaluate", scripted_evaluate)
    selection = select_warm_start(dirs, dev, tiny_retriever, config, tmp_path / "best")
    assert evaluated == [4, 4]
    assert selection["chosen"] == str(dirs[1]) and selection["chosen_em"] == 0.5
    assert [row["seed"] for row in selection["candidates"]] == [0, 1]
    assert [row["em"] for row in selection["candidates"]] == [0.25, 0.5]
    best = tmp_path / "best"
    assert (best / "model.safetensors").read_bytes() == (dirs[1] / "model.safetensors").read_bytes()
    assert (best / "model.safetensors").read_bytes() != (dirs[0] / "model.safetensors").read_bytes()
    assert json.loads((best / SELECTION_FILE).read_text()) == selection


def test_real_evaluation_picks_the_maximum(two_seeds, tiny_world: Path, tiny_retriever, tmp_path: Path) -> None:
    config, dirs = two_seeds
    dev = read_qa_jsonl(tiny_world / "dev.jsonl")[:6]
    selection = select_warm_start(dirs, dev, tiny_retriever, config, tmp_path / "best")
    ems = [row["em"] for row in selection["candidates"]]
    assert selection["chosen_em"] == max(ems) and selection["questions"] == 6
    assert selection["chosen"] == str(dirs[best_candidate(ems)])
    assert all(0.0 <= em <= 1.0 for em in ems)


def test_a_candidate_that_is_not_a_checkpoint_is_a_clear_error(two_seeds, tiny_world: Path, tiny_retriever,
                                                               tmp_path: Path) -> None:
    config, dirs = two_seeds
    dev = read_qa_jsonl(tiny_world / "dev.jsonl")[:2]
    with pytest.raises(ConfigError, match="not a checkpoint directory"):
        select_warm_start([dirs[0], tmp_path], dev, tiny_retriever, config, tmp_path / "best")
    with pytest.raises(ConfigError, match="no dev questions"):
        select_warm_start(dirs, [], tiny_retriever, config, tmp_path / "best")
    assert not (tmp_path / "best").exists()  # nothing half-written


def test_cli_sft_seeds_then_sft_select(tiny_world: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "warm"
    result = runner.invoke(app, ["sft", "--config", "configs/tiny.yaml", "--world", str(tiny_world), "--out", str(out),
                                 "--seeds", "0,1", "--select-questions", "4", *TINY])
    assert result.exit_code == 0, result.output
    selection = json.loads((out / SELECTION_FILE).read_text())
    assert [row["path"] for row in selection["candidates"]] == [str(out / "seed_0"), str(out / "seed_1")]
    assert selection["questions"] == 4
    chosen = Path(selection["chosen"])
    assert (out / "model.safetensors").read_bytes() == (chosen / "model.safetensors").read_bytes()
    assert (out / "slate_config.yaml").read_text() == (chosen / "slate_config.yaml").read_text()
    assert "chosen" in result.output

    again = tmp_path / "again"
    result = runner.invoke(app, ["sft-select", "--candidate", str(out / "seed_1"), "--candidate",
                                 str(out / "seed_0"), "--world", str(tiny_world), "--out", str(again),
                                 "--questions", "4"])
    assert result.exit_code == 0, result.output
    reselected = json.loads((again / SELECTION_FILE).read_text())
    # the same dev questions, the same greedy decoding: each candidate scores what it scored before
    assert {row["path"]: row["em"] for row in reselected["candidates"]} == \
        {row["path"]: row["em"] for row in selection["candidates"]}

    result = runner.invoke(app, ["sft-select", "--candidate", str(tmp_path), "--world", str(tiny_world), "--out",
                                 str(tmp_path / "x"), "--config", "configs/tiny.yaml"])
    assert result.exit_code == 1 and "not a checkpoint directory" in result.output
    result = runner.invoke(app, ["sft", "--config", "configs/tiny.yaml", "--world", str(tiny_world), "--out",
                                 str(tmp_path / "y"), "--seeds", "0,0", *TINY])
    assert result.exit_code == 1 and "--seeds" in result.output and "Traceback" not in result.output
