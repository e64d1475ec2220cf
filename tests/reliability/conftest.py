"""A warm-started tiny policy (SFT for a few seconds, so rollouts hold valid searches and answers that the judge
scores differently), a judge server process for the session, and one uninterrupted reference run that the kill and
outage tests are compared with."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from run_harness import JUDGE_SERVER, RUN_CONFIG, ServerProcess, free_port, train


@pytest.fixture(scope="session")
def run_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reliability") / "run.yaml"
    path.write_text(RUN_CONFIG)
    return path


@pytest.fixture(scope="session")
def warm_policy(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slate.config import load_config
    from slate.data.records import read_qa_jsonl
    from slate.retrieval.bm25 import Bm25Retriever
    from slate.trainer.sft import train_sft

    # float32 on every CPU: under bf16 autocast (what `auto` picks where bf16 is native) this 120-step policy made
    # no search in step 2 or 3 on an AVX512/AMX machine, and the outage tests need a reference run that searches there
    overrides = ["model.source=tiny", "model.tiny.hidden_size=32", "model.tiny.num_layers=1",
                 "model.tiny.num_heads=2", "model.tiny.intermediate_size=64", "model.tiny.max_positions=1024",
                 "model.tiny.vocab_size=600", "sft.max_steps=120", "sft.lr=0.01", "sft.warmup_steps=5",
                 "sft.batch_tokens=2048", "sft.bf16_autocast=false", "rollout.max_steps=2",
                 "rollout.max_step_tokens=48", "rollout.prompt_template='Q: {question}\n'"]
    out = tmp_path_factory.mktemp("warm_policy")
    train_sft(load_config(None, overrides), read_qa_jsonl(tiny_world / "train.jsonl"),
              Bm25Retriever.from_corpus(tiny_world / "corpus.jsonl"), tiny_world, out)
    return out


@pytest.fixture(scope="session")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """A judge server up for the whole session; yields the override that points a run at it."""
    port = free_port()
    server = ServerProcess([sys.executable, str(JUDGE_SERVER), str(port)], port)
    server.start()
    yield [f"judge.base_url=http://127.0.0.1:{port}/v1"]
    server.kill()


@pytest.fixture(scope="session")
def reference_run(run_config: Path, warm_policy: Path, tiny_world: Path, judge: list[str],
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every interrupted one must reproduce exactly."""
    out = tmp_path_factory.mktemp("reference") / "run"
    done = train(run_config, warm_policy, tiny_world, out, judge)
    assert done.returncode == 0, done.stdout + done.stderr
    return out
