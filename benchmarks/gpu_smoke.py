"""GPU smoke test for a single lent GPU with no network and no model weights: does the real-model path run, how
long does one SLATE step take, how much memory does it need, and does a short run learn?

1. ``shapes``: models of Qwen2.5-0.5B and Qwen2.5-3B shape (their config, the real 151,936-token vocabulary) with
   random weights, in bfloat16, with LoRA (r = 16, alpha = 64, all linear layers) and gradient checkpointing, run one
   SLATE step on a tiny synthetic world with the oracle judge: rollout (k = 5 candidates per prefix, B = 4) and the
   update. Random weights rarely close a tag, so every step runs to ``max_step_tokens``: the worst case in length.
   Reported per shape: parameters, trainable parameters, rollout and update seconds, policy tokens, peak memory.
2. ``learning``: the project's tiny policy, SFT-warm-started on the world's demonstrations for a fixed number of
   optimizer steps (steps, not seconds: the result must not depend on the machine's speed; progress is printed every
   250 SFT steps and after every RL step), then a few SLATE steps with the oracle judge; dev EM after SFT and after
   RL, and the SFT loss at both ends. It learns when the SFT loss falls and dev EM is above 0 (a random policy answers
   nothing right).

The tokenizer is the tiny byte-level BPE trained on the world's text (its ids are a prefix of the vocabulary), so
no files travel. Every part writes the report again when it ends, so a part that fails or runs out of time keeps
what came before; an error is recorded in the report, not raised.

    python benchmarks/gpu_smoke.py --out results/gpu_smoke.json            # on the GPU (docs/gpu.md)
    python benchmarks/gpu_smoke.py --parts shapes --out results/gpu_smoke.json   # the real shapes alone
    python benchmarks/gpu_smoke.py --cpu-check --out /tmp/gpu_smoke.json   # tiny shapes on a CPU: a minute
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import traceback
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from slate.config import load_config
from slate.data.records import read_corpus, read_qa_jsonl
from slate.eval.evaluate import evaluate
from slate.retrieval.bm25 import Bm25Retriever
from slate.rollout.engine import RolloutEngine
from slate.rollout.policy import Policy, train_tiny_tokenizer
from slate.trainer.loop import Trainer
from slate.trainer.plan import KNOWN_SHAPES, ModelShape
from slate.trainer.sft import train_sft
from slate.world.build import build_world, write_world

CPU_SHAPES = {"tiny-qwen2-a": ModelShape(64, 2, 4, 2, 128, 4096, True, True, "qwen2"),
              "tiny-qwen2-b": ModelShape(96, 2, 4, 2, 192, 4096, True, True, "qwen2")}


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def random_policy_dir(shape: ModelShape, tokenizer, out: Path, dtype: torch.dtype) -> Path:
    """A checkpoint directory of ``shape`` with random weights and the tiny tokenizer (ids < its length)."""
    config = Qwen2Config(hidden_size=shape.hidden_size, num_hidden_layers=shape.num_layers,
                         num_attention_heads=shape.num_heads, num_key_value_heads=shape.num_kv_heads,
                         intermediate_size=shape.intermediate_size, vocab_size=shape.vocab_size,
                         tie_word_embeddings=shape.tie_embeddings, max_position_embeddings=4096,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):  # initialise on the GPU: a 3B model initialises in seconds there, minutes on a CPU
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    Policy(model=model, tokenizer=tokenizer, name=out.name).save(out)
    del model
    return out


def step_config(world: Path, cpu: bool, extra: list[str]) -> list[str]:
    steps, tokens = (2, 16) if cpu else (4, 64)
    return [f"world.dir={world}", "model.source=hf", "trainer.method=slate", "judge.backend=oracle",
            "trainer.steps=1", f"trainer.questions_per_step={2 if cpu else 8}", "rollout.group_size=5",
            f"rollout.max_steps={steps}", f"rollout.max_step_tokens={tokens}", "rollout.max_information_tokens=240",
            "rollout.prompt_template=searchr1", "rollout.use_chat_template=false", "trainer.minibatch_size=40",
            "trainer.micro_batch_size=5", "trainer.lr=1e-6", "trainer.checkpoint_every=100", *extra]


def measure_shape(name: str, shape: ModelShape, world: Path, tokenizer, cpu: bool, scratch: Path) -> dict:
    dtype = torch.float32 if cpu else torch.bfloat16
    policy_dir = random_policy_dir(shape, tokenizer, scratch / name, dtype)
    overrides = step_config(world, cpu, ["trainer.lora_rank=16", "trainer.lora_alpha=64",
                                         f"model.dtype={'float32' if cpu else 'bfloat16'}",
                                         "model.gradient_checkpointing=true"])
    config = load_config(None, overrides)
    retriever = Bm25Retriever.from_corpus(world / "corpus.jsonl")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(config, read_qa_jsonl(world / "train.jsonl"), retriever, policy_dir, scratch / f"{name}-run",
                      world)
    model = trainer.accelerator.unwrap_model(trainer.module).model
    start = time.perf_counter()
    metrics = trainer.step()
    total_s = time.perf_counter() - start
    result = {"shape": vars(shape) | {"parameters": shape.num_parameters},
              "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "dtype": str(dtype), "step_s": round(total_s, 2), "rollout_s": round(metrics["time/rollout_s"], 2),
              "update_s": round(metrics["time/update_s"], 2),
              "policy_tokens": int(metrics["rollout/step_generated_tokens"]),
              "samples": int(metrics["rollout/samples"]), "loss_policy": metrics["loss/policy"],
              "grad_norm": metrics["loss/grad_norm"]}
    if torch.cuda.is_available():
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del trainer, model
    return result


def learning_run(world: Path, cpu: bool, scratch: Path) -> dict:
    """SFT warm start, then SLATE with the oracle judge; dev EM at each stage."""
    sft_steps, rl_steps, dev_n = (20, 1, 4) if cpu else (1000, 8, 100)
    tiny = ["model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
            "model.tiny.intermediate_size=192", "model.tiny.vocab_size=2000"] if cpu else []
    config = load_config("configs/tiny.yaml", [f"world.dir={world}", f"sft.max_steps={sft_steps}",
                                               "sft.warmup_steps=20", *tiny])
    retriever = Bm25Retriever.from_corpus(world / "corpus.jsonl")
    dev = read_qa_jsonl(world / "dev.jsonl")[:dev_n]
    losses: list[float] = []
    start = time.perf_counter()

    def record(loss: float) -> None:  # progress on the console: a run stopped by a time limit still says how far
        losses.append(loss)
        if len(losses) % 250 == 0:
            print(f"sft step {len(losses)} loss {loss:.3f} {time.perf_counter() - start:.0f} s", flush=True)
    policy = train_sft(config, read_qa_jsonl(world / "train.jsonl"), retriever, world, scratch / "sft",
                       on_step=lambda step, total, loss: record(loss))
    sft_wall = time.perf_counter() - start

    def dev_em(policy: Policy) -> float:
        engine = RolloutEngine(policy, retriever, config.rollout, top_k=config.retrieval.top_k)
        return evaluate(engine, dev)[0]["em"]

    em_sft = dev_em(policy)
    print(f"dev EM after SFT {em_sft:.3f} ({time.perf_counter() - start:.0f} s since SFT began)", flush=True)
    small = ["trainer.questions_per_step=2", "rollout.group_size=2", "rollout.max_steps=2",
             "rollout.max_step_tokens=16"] if cpu else []
    rl = load_config("configs/slate-tiny.yaml", [f"world.dir={world}", f"trainer.steps={rl_steps}",
                                                 "trainer.checkpoint_every=1000", *small])
    trainer = Trainer(rl, read_qa_jsonl(world / "train.jsonl"), retriever, scratch / "sft", scratch / "rl", world)
    start = time.perf_counter()
    trainer.train(on_step=lambda step, total, metrics: print(
        f"rl step {step}/{total} rollout {metrics['time/rollout_s']:.1f} s update {metrics['time/update_s']:.1f} s "
        f"{time.perf_counter() - start:.0f} s", flush=True))
    rl_wall = time.perf_counter() - start
    from slate.rollout.policy import load_hf_policy

    em_rl = dev_em(load_hf_policy(scratch / "rl" / "policy"))
    window = max(1, len(losses) // 10)
    return {"sft_steps": len(losses), "sft_s": round(sft_wall, 1),
            "sft_loss_first": round(sum(losses[:window]) / window, 4),
            "sft_loss_last": round(sum(losses[-window:]) / window, 4), "dev_questions": len(dev),
            "dev_em_after_sft": em_sft, "rl_steps": rl_steps, "rl_s": round(rl_wall, 1),
            "dev_em_after_rl": em_rl,
            "learns": bool(losses) and sum(losses[-window:]) < sum(losses[:window]) and em_sft > 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu_smoke.json"))
    parser.add_argument("--cpu-check", action="store_true", help="tiny shapes and short runs, to check on a CPU")
    parser.add_argument("--parts", default="shapes,learning", help="comma-separated: shapes, learning")
    args = parser.parse_args()
    cpu = args.cpu_check or not torch.cuda.is_available()
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "mode": "cpu-check" if cpu else "gpu",
                    "machine": machine(), "shapes": {}, "learning": None, "errors": {}}

    def write() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        world = scratch / "world"
        write_world(build_world(seed=0, size="tiny" if cpu else "small"), world, seed=0,
                    size="tiny" if cpu else "small")
        texts = [p.contents for p in read_corpus(world / "corpus.jsonl")]
        tokenizer = train_tiny_tokenizer(texts, 1000)
        parts = args.parts.split(",")
        shapes = CPU_SHAPES if cpu else {"qwen2.5-0.5b": KNOWN_SHAPES["qwen2.5-0.5b"],
                                         "qwen2.5-3b": KNOWN_SHAPES["qwen2.5-3b"]}
        for name, shape in shapes.items() if "shapes" in parts else ():
            try:
                report["shapes"][name] = measure_shape(name, shape, world, tokenizer, cpu, scratch)
            except Exception:  # a smoke test records what broke and goes on to the next part
                report["errors"][name] = traceback.format_exc(limit=4)
            write()
            print(name, json.dumps(report["shapes"].get(name) or report["errors"][name]), flush=True)
        if "learning" in parts:
            try:
                report["learning"] = learning_run(world, cpu, scratch)
            except Exception:
                report["errors"]["learning"] = traceback.format_exc(limit=4)
            write()
            print("learning", json.dumps(report["learning"] or report["errors"]["learning"]), flush=True)
    write()


if __name__ == "__main__":
    main()
