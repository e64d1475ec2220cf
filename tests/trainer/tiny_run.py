"""The run config of the trainer tests: a tiny world, a tiny policy, a few short steps (importable by name from
any test file or worker script, unlike a conftest)."""

from __future__ import annotations

from pathlib import Path

from slate.config import RunConfig, load_config


def tiny_run_config(tiny_world: Path, method: str = "searchr1", **trainer: object) -> RunConfig:
    overrides = [f"world.dir={tiny_world}", "model.source=tiny", f"trainer.method={method}", "trainer.steps=4",
                 "trainer.questions_per_step=2", "trainer.minibatch_size=8", "trainer.micro_batch_size=4",
                 "trainer.lr=0.01", "trainer.checkpoint_every=2", "rollout.group_size=3", "rollout.max_steps=2",
                 "rollout.max_step_tokens=12", "rollout.prompt_template='Q: {question}\n'", "judge.backend=oracle",
                 # float32 whatever the CPU: the tests compare numbers to 1e-5 (the bfloat16 path has its own tests)
                 "trainer.bf16_autocast=false"]
    overrides += [f"trainer.{key}={value}" for key, value in trainer.items()]
    return load_config(None, overrides)
