from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_run import tiny_run_config
from token_sum_reward import TokenSumReward

from slate.data.records import read_qa_jsonl
from slate.errors import TrainingError
from slate.methods import sampler_for
from slate.retrieval.bm25 import Bm25Retriever
from slate.rollout.policy import load_hf_policy
from slate.trainer import checkpoint
from slate.trainer.loop import Trainer, questions_for_step


def _trainer(tiny_world: Path, policy_dir: Path, out: Path, method: str = "searchr1", **trainer) -> Trainer:
    config = tiny_run_config(tiny_world, method, **trainer)
    retriever = Bm25Retriever.from_corpus(tiny_world / "corpus.jsonl")
    return Trainer(config, read_qa_jsonl(tiny_world / "train.jsonl"), retriever, policy_dir, out, tiny_world,
                   sampler=sampler_for(config, TokenSumReward()))


def _params(trainer: Trainer) -> dict[str, torch.Tensor]:
    model = trainer.accelerator.unwrap_model(trainer.module).model
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["searchr1", "slate"])
def test_resume_reproduces_the_uninterrupted_run(tiny_world: Path, tiny_policy_dir: Path, tmp_path: Path,
                                                 method: str) -> None:
    straight = _trainer(tiny_world, tiny_policy_dir, tmp_path / "straight", method)
    straight.train()
    first = _trainer(tiny_world, tiny_policy_dir, tmp_path / "resumed", method)
    first.train(stop_after=2)  # the process "dies" after step 2's checkpoint
    assert checkpoint.latest_checkpoint(tmp_path / "resumed").name == "step-000002"
    del first
    second = _trainer(tiny_world, tiny_policy_dir, tmp_path / "resumed", method)  # a fresh process
    second.train(resume=True)
    assert second.state.step == 4
    a, b = _params(straight), _params(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    initial = load_hf_policy(tiny_policy_dir).model.state_dict()
    assert any(not torch.equal(a[k], initial[k]) for k in a)  # training moved the weights
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4]
    assert (tmp_path / "resumed" / "policy" / "config.json").is_file()


def test_checkpoints_are_atomic_and_pruned(tiny_world: Path, tiny_policy_dir: Path, tmp_path: Path) -> None:
    trainer = _trainer(tiny_world, tiny_policy_dir, tmp_path, checkpoint_every=1, keep_checkpoints=2, steps=3)
    trainer.train()
    names = sorted(p.name for p in checkpoint.checkpoint_dir(tmp_path).iterdir())
    assert names == ["step-000002", "step-000003"]
    # a half-written checkpoint (no trainer_state.pt) is never picked for resume
    (checkpoint.checkpoint_dir(tmp_path) / "step-000009").mkdir()
    assert checkpoint.latest_checkpoint(tmp_path).name == "step-000003"


def test_non_finite_losses_skip_then_stop(tiny_world: Path, tiny_policy_dir: Path, tmp_path: Path) -> None:
    trainer = _trainer(tiny_world, tiny_policy_dir, tmp_path, max_nonfinite_in_row=2)
    before = _params(trainer)
    original = trainer.sampler.sample

    def poisoned(engine, records):
        batch = original(engine, records)
        for sample in batch.samples:
            sample.advantages = [math.nan if m else 0.0 for m in sample.loss_mask]
        return batch

    trainer.sampler.sample = poisoned
    metrics = trainer.step()
    assert metrics["loss/skipped_updates"] >= 1
    assert all(torch.equal(before[k], v) for k, v in _params(trainer).items())  # no NaN reached the weights
    with pytest.raises(TrainingError, match="non-finite"):
        trainer.step()


def test_questions_are_split_across_processes_without_overlap(tiny_world: Path) -> None:
    from slate.trainer.loop import TrainState

    records = read_qa_jsonl(tiny_world / "train.jsonl")
    state = TrainState(data_position=5)
    both = questions_for_step(records, state, 4, 0, 0, 2) + questions_for_step(records, state, 4, 0, 1, 2)
    alone = questions_for_step(records, state, 4, 0, 0, 1)
    assert sorted(r.id for r in both) == sorted(r.id for r in alone) and len(alone) == 4


def test_lora_trains_adapters_only_and_exports_a_merged_policy(tiny_world: Path, tiny_policy_dir: Path,
                                                               tmp_path: Path) -> None:
    trainer = _trainer(tiny_world, tiny_policy_dir, tmp_path, lora_rank=4, steps=1)
    model = trainer.accelerator.unwrap_model(trainer.module).model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(model.named_parameters())
    assert all(torch.equal(frozen_before[n], after[n]) for n in frozen_before)
    assert any(not torch.equal(lora_before[n], after[n]) for n in lora_before)
    exported = load_hf_policy(tmp_path / "policy").model
    assert not any("lora" in n for n, _ in exported.named_parameters())  # merged into plain weights
