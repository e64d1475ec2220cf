"""A tiny world and a tiny random policy checkpoint for trainer tests (seconds per RL step on a CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slate.config import RunConfig, TinyModelConfig, load_config
from slate.data.records import read_corpus, read_qa_jsonl
from slate.rollout.policy import build_tiny_policy


@pytest.fixture(scope="session")
def tiny_policy_dir(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [p.contents for p in read_corpus(tiny_world / "corpus.jsonl")]
    texts += [r.question for r in read_qa_jsonl(tiny_world / "train.jsonl")]
    policy = build_tiny_policy(texts, TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2,
                                                      intermediate_size=64, max_positions=1024), seed=0)
    out = tmp_path_factory.mktemp("tiny_policy")
    policy.save(out)
    return out


def tiny_run_config(tiny_world: Path, method: str = "searchr1", **trainer: object) -> RunConfig:
    overrides = [f"world.dir={tiny_world}", "model.source=tiny", f"trainer.method={method}", "trainer.steps=4",
                 "trainer.questions_per_step=2", "trainer.minibatch_size=8", "trainer.micro_batch_size=4",
                 "trainer.lr=0.01", "trainer.checkpoint_every=2", "rollout.group_size=3", "rollout.max_steps=2",
                 "rollout.max_step_tokens=12", "rollout.prompt_template='Q: {question}\n'", "judge.backend=oracle"]
    overrides += [f"trainer.{key}={value}" for key, value in trainer.items()]
    return load_config(None, overrides)
