"""Run by ``torchrun --nproc_per_node 2``: RL steps on two gloo CPU processes, in one of several scenarios. Each rank
writes a checksum of its parameters (``params_rank<i>.txt``) when it finishes, or its error (``error_rank<i>.txt``)
when it stops, so the test sees every rank's outcome even after torchrun has stopped the group.

Scenarios: ``plain`` (5 questions per step: the ranks get 3 and 2), ``fail`` (rank 1's sampler raises at step 2),
``judge_half`` (rank 1's judge fails every verdict; the share summed over ranks is 1/2), ``stuck`` (rank 1 sleeps
in its sampler past the collective timeout).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "rollout"))
from scripted_policy import ScriptedGenerator
from tiny_run import tiny_run_config
from token_sum_reward import TokenSumReward

from slate.data.records import read_qa_jsonl
from slate.judge.oracle import OracleJudge
from slate.judge.types import JudgeVerdict
from slate.methods import judged_reward, sampler_for
from slate.retrieval.bm25 import Bm25Retriever
from slate.trainer.distributed import make_accelerator
from slate.trainer.loop import Trainer


class FailingJudge(OracleJudge):
    """Every verdict fails (a judge server that answers garbage), counted as the real backends count."""

    def score(self, items):
        self._stats.add(calls=len(items), failures=len(items))
        return [JudgeVerdict.failure("garbled reply") for _ in items]


class Sabotaged:
    """A sampler that fails (``fail``) or hangs (``stuck``) on one rank at one step, and samples normally otherwise."""

    def __init__(self, sampler, rank: int, scenario: str) -> None:
        self.sampler, self.rank, self.scenario, self.calls = sampler, rank, scenario, 0

    def sample(self, engine, records):
        self.calls += 1
        if self.rank == 1 and self.scenario == "fail" and self.calls == 2:
            raise RuntimeError("the judge server went away")
        if self.rank == 1 and self.scenario == "stuck" and self.calls == 1:
            time.sleep(45)  # past trainer.collective_timeout_s: rank 0 waits for it in vain
        return self.sampler.sample(engine, records)

    def __getattr__(self, name):
        return getattr(self.sampler, name)


def main(world: Path, policy_dir: Path, out: Path, scenario: str) -> None:
    timeout = 15.0 if scenario == "stuck" else 300.0
    accelerator = make_accelerator(timeout)
    rank = accelerator.process_index
    overrides = {"steps": 2, "questions_per_step": 5, "checkpoint_every": 1, "collective_timeout_s": timeout}
    if scenario == "judge_half":
        config = tiny_run_config(world, "slate", **overrides)
        judge = FailingJudge() if rank == 1 else OracleJudge()
        config = config.model_copy(update={  # room for a whole scripted step
            "judge": config.judge.model_copy(update={"max_failure_share": float(sys.argv[5])}),
            "rollout": config.rollout.model_copy(update={"max_step_tokens": 40})})
        sampler = sampler_for(config, judged_reward(config, judge))
    else:
        config = tiny_run_config(world, "searchr1", **overrides)
        sampler = Sabotaged(sampler_for(config, TokenSumReward()), rank, scenario)
    retriever = Bm25Retriever.from_corpus(world / "corpus.jsonl")
    try:
        trainer = Trainer(config, read_qa_jsonl(world / "train.jsonl"), retriever, policy_dir, out, world,
                          accelerator=accelerator, sampler=sampler)
        if scenario == "judge_half":  # well-formed steps, so that the judge is asked (a random tiny policy's are not)
            trainer.engine.generate = ScriptedGenerator(trainer.policy, lambda text, branch: (
                "<think> I need the country. </think><search> country </search>" if "<information>" not in text
                else "<think> So the answer is it. </think><answer> it </answer>"))
        trainer.train()
    except Exception as error:
        (out / f"error_rank{rank}.txt").write_text(f"{type(error).__name__}: {error}")
        raise
    model = accelerator.unwrap_model(trainer.module).model
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    (out / f"params_rank{rank}.txt").write_text(
        f"{accelerator.num_processes} {flat.double().sum().item():.12e} {flat.double().abs().sum().item():.12e}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "plain")
