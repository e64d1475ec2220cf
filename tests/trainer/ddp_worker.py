"""Run by ``torchrun --nproc_per_node 2``: two RL steps on two gloo CPU processes, then each rank writes a checksum
of its parameters so the test can check that both ended identical."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).parent))
from tiny_run import tiny_run_config
from token_sum_reward import TokenSumReward

from slate.data.records import read_qa_jsonl
from slate.methods import sampler_for
from slate.retrieval.bm25 import Bm25Retriever
from slate.trainer.loop import Trainer


def main(world: Path, policy_dir: Path, out: Path) -> None:
    accelerator = Accelerator(cpu=True)
    config = tiny_run_config(world, "searchr1", steps=2, questions_per_step=4)
    retriever = Bm25Retriever.from_corpus(world / "corpus.jsonl")
    trainer = Trainer(config, read_qa_jsonl(world / "train.jsonl"), retriever, policy_dir, out, world,
                      accelerator=accelerator, sampler=sampler_for(config, TokenSumReward()))
    trainer.train()
    model = accelerator.unwrap_model(trainer.module).model
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    (out / f"params_rank{accelerator.process_index}.txt").write_text(
        f"{accelerator.num_processes} {flat.double().sum().item():.12e} {flat.double().abs().sum().item():.12e}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
