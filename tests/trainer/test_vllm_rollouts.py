"""RL steps with rollouts on a real vLLM server (CPU build in .venv-vllm, `make vllm`), the tiny policy.

One server for the module (`slate serve-policy --lora`: it takes LoRA adapters and full reloads), started through
the CLI as a user would. Before each test the server gets the initial weights back and drops the adapters that
earlier tests left, so the tests do not depend on their order. SLATE_TEST_VLLM_URL attaches to a server already
running (started with `slate serve-policy --lora` on a policy built like ``vllm_policy_dir``) instead.
Checked: the served version advances every step, every trained sample comes from the version being trained, the
server's and the trainer's log-probs agree (< 0.01 nats) while the update moved them by far more, and greedy
evaluation gives the same episodes through vLLM as in-process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from tiny_run import tiny_run_config
from token_sum_reward import TokenSumReward

from slate.config import RunConfig, load_config
from slate.data.records import read_qa_jsonl
from slate.eval.evaluate import evaluate
from slate.methods import sampler_for
from slate.retrieval.bm25 import Bm25Retriever
from slate.rollout.engine import RolloutEngine
from slate.rollout.policy import load_hf_policy
from slate.rollout.vllm_backend import PolicyServer, VllmGenerator
from slate.rollout.weight_sync import write_full_weights
from slate.trainer.loop import Trainer
from slate.trainer.server_rollouts import policy_logprobs
from slate.trainer.sft import train_sft

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
GAP_LIMIT = 0.01  # nats, mean over trained tokens


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def sft_config(tiny_world: Path) -> RunConfig:
    """A tiny policy with a head size vLLM's CPU attention has kernels for (64 / 2 heads = 32), warm-started just
    long enough (150 steps) that most greedy episodes end with an answer."""
    return load_config(REPO_ROOT / "configs" / "tiny.yaml", [
        f"world.dir={tiny_world}", "model.tiny.hidden_size=64", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=128", "model.tiny.max_positions=1024", "sft.max_steps=150", "sft.lr=0.01",
        "sft.warmup_steps=10", "sft.bf16_autocast=false", "sft.time_limit_s=null"])


@pytest.fixture(scope="module")
def vllm_policy_dir(sft_config: RunConfig, tiny_world: Path, tiny_retriever,
                    tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vllm_policy")
    train_sft(sft_config, read_qa_jsonl(tiny_world / "train.jsonl"), tiny_retriever, tiny_world, out)
    return out


@pytest.fixture(scope="module")
def vllm_url(vllm_policy_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    if os.environ.get("SLATE_TEST_VLLM_URL"):  # a server already up (a policy built like vllm_policy_dir): no start
        yield os.environ["SLATE_TEST_VLLM_URL"]
        return
    if not VLLM_PYTHON.is_file():
        reason = f"{VLLM_PYTHON} is missing: run `make vllm` to test rollouts on a real vLLM server"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    port = _free_port()
    log = tmp_path_factory.mktemp("vllm_server") / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cli = subprocess.Popen([sys.executable, "-m", "slate.cli.main", "serve-policy", "--policy", str(vllm_policy_dir),
                            "--lora", "--port", str(port), "--log", str(log), "--ready-timeout", "900"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900
        while True:
            if cli.poll() is not None:
                tail = log.read_text()[-3000:] if log.is_file() else ""
                pytest.fail(f"slate serve-policy exited with {cli.returncode}: {cli.stderr.read()}\n{tail}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"vLLM not ready in 900 s; log: {log}"
            time.sleep(1)
        yield url
    finally:
        cli.terminate()  # serve-policy stops the vLLM process group on SIGTERM
        try:
            cli.wait(timeout=60)
        except subprocess.TimeoutExpired:
            cli.kill()


@pytest.fixture(scope="module")
def initial_weights(vllm_policy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The initial weights as full sync writes them (the tied head included), to put them back between tests."""
    out = tmp_path_factory.mktemp("initial_weights")
    write_full_weights(load_hf_policy(vllm_policy_dir).model, out)
    return out


@pytest.fixture
def server(vllm_url: str, initial_weights: Path) -> str:
    """The server as it started: initial weights, no adapters, an empty prefix cache."""
    models = httpx.get(f"{vllm_url}/v1/models", timeout=30).json()["data"]
    for model in models:
        if model.get("parent"):
            httpx.post(f"{vllm_url}/v1/unload_lora_adapter", json={"lora_name": model["id"]}, timeout=30)
    reload = {"method": "reload_weights", "kwargs": {"weights_path": str(initial_weights)}}
    assert httpx.post(f"{vllm_url}/collective_rpc", json=reload, timeout=60).status_code == 200
    assert httpx.post(f"{vllm_url}/reset_prefix_cache", timeout=30).status_code == 200
    return vllm_url


def _config(tiny_world: Path, method: str, url: str, sync: str) -> RunConfig:
    data = tiny_run_config(tiny_world, method, steps=2, lr=0.05).model_dump()
    data["rollout"].update(backend="vllm", weight_sync=sync, server_urls=[url], server_retries=1)
    return RunConfig.model_validate(data)


def _run_two_steps(tiny_world: Path, policy_dir: Path, out: Path, method: str, url: str, sync: str):
    config = _config(tiny_world, method, url, sync)
    retriever = Bm25Retriever.from_corpus(tiny_world / "corpus.jsonl")
    # a random policy needs a reward with spread, or nothing trains
    trainer = Trainer(config, read_qa_jsonl(tiny_world / "train.jsonl"), retriever, policy_dir, out, tiny_world,
                      sampler=sampler_for(config, TokenSumReward()))
    sampled: list[tuple[int, list]] = []  # (version being trained, the step's samples)
    original = trainer.sampler.sample

    def recording(engine, records):
        batch = original(engine, records)
        sampled.append((trainer.state.step, batch.samples))
        return batch

    trainer.sampler.sample = recording
    start_model = load_hf_policy(policy_dir).model.eval()
    gaps_to_start = []
    for _ in range(2):
        metrics = trainer.step()
        trainer.logger.log(trainer.state.step, metrics)
        samples = sampled[-1][1]
        if trainer.state.step == 2:  # step 2 sampled from version 1: the update must have moved the log-probs
            before = policy_logprobs(start_model, samples, 1.0, 8, trainer.policy.pad_token_id, torch.device("cpu"))
            gaps_to_start.append(_mean_abs([s.old_logprobs for s in samples], before, samples))
    trainer.logger.close()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return trainer, sampled, lines, gaps_to_start


def _mean_abs(a, b, samples) -> float:
    diffs = [abs(x - y) for xs, ys, s in zip(a, b, samples, strict=True)
             for x, y, m in zip(xs, ys, s.loss_mask, strict=True) if m]
    return sum(diffs) / len(diffs)


def _check_versions_and_gap(sampled, lines, gaps_to_start) -> None:
    assert [line["rollout/policy_version"] for line in lines] == [0.0, 1.0]
    assert [line["rollout/synced_version"] for line in lines] == [1.0, 2.0]  # the served version advances
    for trained_version, samples in sampled:
        assert samples and {s.policy_version for s in samples} == {trained_version}
    gaps = [line["rollout/logprob_gap"] for line in lines]
    assert all(gap < GAP_LIMIT for gap in gaps), gaps
    # the check has teeth: the update moved the log-probs far more than the server and the trainer disagree
    assert gaps_to_start[0] > 3 * GAP_LIMIT


@pytest.mark.parametrize("method", ["slate", "searchr1"])
def test_lora_sync_two_steps(method: str, server: str, tiny_world: Path, vllm_policy_dir: Path,
                             tmp_path: Path) -> None:
    trainer, sampled, lines, gaps = _run_two_steps(tiny_world, vllm_policy_dir, tmp_path, method, server, "lora")
    _check_versions_and_gap(sampled, lines, gaps)
    served = {m["id"] for m in httpx.get(f"{server}/v1/models", timeout=30).json()["data"] if m.get("parent")}
    assert served == {trainer.server_rollouts.sync.adapter_name(2)}  # the new version in, the old one unloaded
    assert sorted(p.name for p in (tmp_path / "weight_sync").iterdir()) == ["v000002"]


def test_full_sync_two_steps(server: str, tiny_world: Path, vllm_policy_dir: Path, tmp_path: Path) -> None:
    trainer, sampled, lines, gaps = _run_two_steps(tiny_world, vllm_policy_dir, tmp_path, "slate", server, "full")
    _check_versions_and_gap(sampled, lines, gaps)
    assert trainer.config.trainer.lora_rank == 0 and trainer.server_rollouts.servers[0].version == 2


def test_greedy_eval_matches_in_process(server: str, sft_config: RunConfig, tiny_world: Path, tiny_retriever,
                                        vllm_policy_dir: Path) -> None:
    policy = load_hf_policy(vllm_policy_dir)
    records = read_qa_jsonl(tiny_world / "dev.jsonl")[:20]
    assert len(records) == 20
    in_process = RolloutEngine(policy, tiny_retriever, sft_config.rollout)
    served = PolicyServer(server)
    served.connect(context_tokens=policy.max_positions)
    on_vllm = RolloutEngine(policy, tiny_retriever, sft_config.rollout,
                            generator=VllmGenerator([served], torch.Generator(), policy.eos_token_id))
    result_hf, episodes_hf = evaluate(in_process, records)
    result_vllm, episodes_vllm = evaluate(on_vllm, records)
    answers = [e.final_answer for e in episodes_hf]
    assert sum(a is not None for a in answers) >= 10  # the comparison has teeth: most episodes answer
    assert [e.final_answer for e in episodes_vllm] == answers
    assert [e.token_ids() for e in episodes_vllm] == [e.token_ids() for e in episodes_hf]  # whole trajectories
    assert result_vllm == result_hf
