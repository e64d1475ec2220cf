"""`slate serve-judge` and `slate export-model`: the vLLM command a judge server gets, and their errors (no vLLM is
started here; tests/judge/test_judge_vllm_server.py starts a real one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from slate.cli import serve_judge, serve_policy
from slate.cli.main import app
from slate.config import TinyModelConfig
from slate.errors import SlateError
from slate.rollout.policy import build_tiny_policy

TEXTS = ["Dalvin is a city in Orvania. Who founded Velmora Labs? Kesh Fenn founded it."] * 30
runner = CliRunner()


def _model_dir(tmp_path: Path, name: str = "smollm2-judge") -> Path:
    """A tied model directory with a head size vLLM's CPU attention has (64 / 2 = 32), standing in for SmolLM2."""
    policy = build_tiny_policy(TEXTS, TinyModelConfig(hidden_size=64, num_heads=2, num_layers=1,
                                                      intermediate_size=64, max_positions=256, vocab_size=300))
    policy.save(tmp_path / name)
    return tmp_path / name


@pytest.fixture
def fake_vllm_on_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    fake_python = tmp_path / "vllm_python"
    fake_python.write_text("")
    monkeypatch.setattr(serve_policy.shutil, "which", lambda name: None)  # no nvidia-smi: a CPU machine
    return fake_python


def test_judge_server_command_serves_the_name_without_weight_sync(tmp_path: Path, fake_vllm_on_cpu: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_SERVER_DEV_MODE", "1")  # even if the shell has it: a judge keeps those endpoints shut
    model = _model_dir(tmp_path)
    argv, env, name = serve_judge.judge_server_command(model, 8200, vllm_python=fake_vllm_on_cpu,
                                                       work_dir=tmp_path / "work")
    assert argv[:3] == [str(fake_vllm_on_cpu), "-m", "vllm.entrypoints.openai.api_server"]
    assert name == "smollm2-judge" and argv[argv.index("--served-model-name") + 1] == "smollm2-judge"
    joined = " ".join(argv)
    for flag in ("--host 127.0.0.1", "--port 8200", "--dtype float32", "--enforce-eager",
                 "--no-enable-chunked-prefill"):
        assert flag in joined
    assert "--enable-lora" not in argv and "VLLM_SERVER_DEV_MODE" not in env
    config = argv[argv.index("--structured-outputs-config") + 1]
    assert json.loads(config) == {"backend": "xgrammar", "disable_any_whitespace": True}  # compact JSON replies
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    # the tied model is served from its untied copy, as serve-policy does on a CPU
    assert argv[argv.index("--model") + 1] == str(tmp_path / "work" / "untied")
    assert json.loads((tmp_path / "work" / "untied" / "config.json").read_text())["tie_word_embeddings"] is False
    argv, _, name = serve_judge.judge_server_command(model, 8201, host="0.0.0.0", served_model_name="judge",
                                                     max_model_len=2048, extra=["--max-num-seqs", "32"],
                                                     vllm_python=fake_vllm_on_cpu, work_dir=tmp_path / "work2")
    assert name == "judge" and argv[argv.index("--served-model-name") + 1] == "judge"
    assert "--host 0.0.0.0" in " ".join(argv) and "--max-model-len 2048" in " ".join(argv)
    assert argv[-2:] == ["--max-num-seqs", "32"]


def test_the_printed_settings_point_the_judge_at_the_server() -> None:
    assert serve_judge.judge_settings("http://127.0.0.1:8200", "smollm2-judge") == (
        "judge.backend=openai judge.base_url=http://127.0.0.1:8200/v1 judge.model=smollm2-judge "
        "judge.structured_output=vllm")
    assert serve_policy.local_url("0.0.0.0", 8200) == "http://127.0.0.1:8200"


def test_a_model_that_cannot_be_served_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SlateError, match=r"no config.json\). Export one with `slate export-model smollm2"):
        serve_judge.resolve_judge_model(str(tmp_path / "empty"), tmp_path / "work")
    result = runner.invoke(app, ["serve-judge", "--model", str(tmp_path / "nothing")])
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "no such directory, and not one of smollm2" in text and "Traceback" not in text
    result = runner.invoke(app, ["export-model", "llama", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "only smollm2 can be exported" in " ".join(result.output.split())
    assert not (tmp_path / "x").exists()


def test_no_vllm_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(serve_policy, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(serve_policy.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(serve_policy.shutil, "which", lambda name: None)
    result = runner.invoke(app, ["serve-judge", "--model", str(_model_dir(tmp_path))])
    assert result.exit_code == 1 and "make vllm" in result.output and "Traceback" not in result.output
