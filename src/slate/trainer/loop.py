"""The RL loop, shared by every method: sample → reward → advantage → update → log → checkpoint.

Each step draws ``questions_per_step`` training questions (split across processes), lets the method's sampler
produce training samples (token ids, loss mask, sampling log-probs, per-token advantages), then runs
``update_epochs`` passes of PPO-clip + k3-KL over minibatches (``algorithms.losses.policy_loss``).

Distributed: built on accelerate, so the same file runs on a CPU, one GPU, or many processes (DDP; FSDP or
DeepSpeed through an accelerate config). Every process samples its own share of questions and the gradients are
averaged by the wrapper; every process performs the same number of forward/backward passes per optimizer step
(short ones run a zero-weight pass) so that collective operations always line up.
Token aggregation is over the process's minibatch (``algorithm.token_aggregation``), then averaged across processes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from slate.algorithms.losses import policy_loss
from slate.config import RunConfig, save_config
from slate.data.records import QARecord, read_corpus
from slate.errors import ConfigError, TrainingError
from slate.eval.evaluate import evaluate
from slate.eval.metrics import exact_match
from slate.methods import build_sampler
from slate.retrieval.base import Retriever
from slate.retrieval.failures import check_retrieval_failures
from slate.rollout.engine import RolloutEngine
from slate.rollout.policy import Policy, load_policy
from slate.rollout.samplers import Sample, SampledBatch
from slate.runtime import autocast_bf16, choose_bf16_autocast, describe_cpu
from slate.trainer import checkpoint, faults
from slate.trainer.batching import Unit, make_units, micro_tensors, pack_micro_batches, packed_logprobs
from slate.trainer.forward import enable_checkpointing, grouped_token_logprobs, token_logprobs
from slate.trainer.metrics import MetricLogger

logger = logging.getLogger(__name__)


class PolicyLogprobs(torch.nn.Module):
    """Wraps the causal LM so the distributed wrapper sees one forward: ids → per-token log-probs (and entropy)."""

    def __init__(self, model: torch.nn.Module, temperature: float, bf16_autocast: bool = False) -> None:
        super().__init__()
        self.model = model
        self.temperature = temperature
        self.bf16_autocast = bf16_autocast

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, target_mask: torch.Tensor,
                prefix_ids: torch.Tensor | None = None, prefix_lens: torch.Tensor | None = None,
                group_of: torch.Tensor | None = None,
                row_prefix_lens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        with autocast_bf16(input_ids.device, self.bf16_autocast):
            if prefix_ids is None:
                out = token_logprobs(self.model, input_ids, attention_mask, target_mask, self.temperature,
                                     with_entropy=True, float32_head=self.bf16_autocast)
            else:
                out = grouped_token_logprobs(self.model, prefix_ids, input_ids, target_mask, self.temperature,
                                             with_entropy=True, prefix_lens=prefix_lens, group_of=group_of,
                                             row_prefix_lens=row_prefix_lens, float32_head=self.bf16_autocast)
        assert out.entropy is not None
        return out.logprobs, out.entropy


@dataclass
class TrainState:
    step: int = 0  # completed RL steps
    data_position: int = 0  # questions consumed (global)
    nonfinite_in_row: int = 0


def question_order(num_questions: int, seed: int, epoch: int) -> list[int]:
    """The data order of one pass over the training questions: a seeded permutation per epoch."""
    return np.random.default_rng([seed, epoch]).permutation(num_questions).tolist()


def questions_for_step(records: list[QARecord], state: TrainState, per_step: int, seed: int, rank: int,
                       world: int) -> list[QARecord]:
    """This process's share of the next ``per_step`` questions, continuing from ``state.data_position``."""
    picked = []
    for position in range(state.data_position, state.data_position + per_step):
        epoch, offset = divmod(position, len(records))
        picked.append(records[question_order(len(records), seed, epoch)[offset]])
    return picked[rank::world]


def crossed_mark(marks: list[int], before: int, after: int) -> bool:
    """Whether a step that took the token total from ``before`` to ``after`` reached one of ``marks``
    (``before < mark <= after``): a step that crosses several marks evaluates once."""
    return any(before < mark <= after for mark in marks)


def lr_lambda(warmup_steps: int) -> Callable[[int], float]:
    return lambda step: min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def apply_lora(policy: Policy, rank: int, alpha: int, target_modules: list[str] | str = "all-linear") -> None:
    """Wrap the model with LoRA adapters (PEFT); the base weights freeze. ``all-linear``: every linear layer but
    the output head (the paper's choice). A list that matches no module is a ConfigError listing the names there are."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                        target_modules=target_modules)
    try:
        policy.model = get_peft_model(policy.model, config)
    except ValueError as exc:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in policy.model.named_modules()
                         if isinstance(module, torch.nn.Linear)})
        raise ConfigError(f"trainer.lora_target_modules={target_modules}: no such module in {policy.name} "
                          f"({str(exc).splitlines()[0][:120]}). Its linear layers are {linear}; or use all-linear.") \
            from None


def load_adapter(model: torch.nn.Module, adapter_dir: Path) -> None:
    """Restore LoRA adapter weights saved by ``export_policy`` (``policy/adapter``) into a PEFT model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise TrainingError(f"{adapter_dir}: no adapter_model.safetensors, so the LoRA run cannot resume from this "
                            "checkpoint; start again from its merged policy with --init and lora_rank=0, or from "
                            "an earlier checkpoint.")
    set_peft_model_state_dict(model, load_file(str(weights)))


class Trainer:
    def __init__(self, config: RunConfig, train_records: list[QARecord], retriever: Retriever, init: Path | None,
                 out_dir: Path, world_dir: Path | None = None, eval_records: list[QARecord] | None = None,
                 accelerator: Accelerator | None = None) -> None:
        self.config = config
        self.records = train_records
        self.eval_records = eval_records or []
        self.out_dir = out_dir
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        acc, tc = self.accelerator, config.trainer
        if tc.num_processes is not None and tc.num_processes > acc.num_processes:
            raise ConfigError(f"trainer.num_processes={tc.num_processes} but {acc.num_processes} process(es) were "
                              f"launched: start with `accelerate launch --num_processes {tc.num_processes}` (or a "
                              "configs/accelerate/ file), or set trainer.num_processes to what you launch.")
        random.seed(tc.seed)
        np.random.seed(tc.seed)
        torch.manual_seed(tc.seed)
        if acc.device.type == "cpu" and acc.is_main_process:  # this project's CPUs differ: say what this one has
            logger.info("CPU: %s", ", ".join(f"{key} {value}" for key, value in describe_cpu().items()))
        self.policy = load_policy(config.model, init)
        if config.model.gradient_checkpointing:
            enable_checkpointing(self.policy.model)
        if tc.lora_rank > 0:
            apply_lora(self.policy, tc.lora_rank, tc.lora_alpha, tc.lora_target_modules)
        self.reference = None
        if config.algorithm.kl_coef > 0 and tc.lora_rank == 0:
            self.reference = copy.deepcopy(self.policy.model).eval().requires_grad_(False)
        self.policy.model.to(acc.device)
        if self.reference is not None:
            self.reference.to(acc.device)
        params = [p for p in self.policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        # Not prepared by accelerate on purpose: a prepared scheduler steps once per process per step.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(tc.warmup_steps))
        self.bf16_autocast = choose_bf16_autocast(tc.bf16_autocast, acc.device, what="update",
                                                  knob="trainer.bf16_autocast", fp32_part=", float32 head",
                                                  log=logger, announce=acc.is_main_process)
        self.module = PolicyLogprobs(self.policy.model, config.rollout.temperature, self.bf16_autocast)
        self.module, self.optimizer = acc.prepare(self.module, self.optimizer)
        self.engine = RolloutEngine(self.policy, retriever, config.rollout, config.retrieval.top_k,
                                    config.retrieval.max_retries, seed=tc.seed * 1000 + acc.process_index)
        self.server_rollouts = None  # rollout.backend=vllm: sampling on servers, weights synced every step
        if config.rollout.backend == "vllm":
            from slate.trainer.server_rollouts import ServerRollouts

            self.server_rollouts = ServerRollouts(config, self.engine, out_dir, acc.device, acc.is_main_process,
                                                  acc.wait_for_everyone)
        corpus = None
        if config.trainer.method == "stepsearch":  # its TF-IDF needs the passages' text: the retrieval corpus
            corpus_path = config.retrieval.corpus or (world_dir / "corpus.jsonl" if world_dir else None)
            corpus = read_corpus(corpus_path) if corpus_path else None
        self.sampler = build_sampler(config, self.engine, corpus=corpus)
        check = getattr(getattr(self.sampler, "reward", None), "check_records", None)
        if check is not None:
            check(train_records)  # e.g. StepSearch needs gold documents: fail now, not at step 1000
        self.update_generator = torch.Generator().manual_seed(tc.seed)
        self.state = TrainState()
        self.logger = MetricLogger(out_dir, enabled=acc.is_main_process, tensorboard=tc.tensorboard,
                                   wandb_project=tc.wandb_project, config=config.model_dump(mode="json"))
        self.generated_tokens = 0
        self._last_unit: Unit = []  # a zero-weight pass needs some unit when a process runs dry
        self._phase_s: dict[str, float] = {}

    # -- generators whose state makes a run resumable -----------------------------------------------------------
    def _generators(self) -> dict[str, torch.Generator]:
        generators = {"engine": self.engine.generator, "update": self.update_generator}
        sampler_generator = getattr(self.sampler, "generator", None)
        if sampler_generator is not None:
            generators["sampler"] = sampler_generator
        return generators

    # -- one RL step ----------------------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        acc, tc = self.accelerator, self.config.trainer
        records = questions_for_step(self.records, self.state, tc.questions_per_step, tc.seed, acc.process_index,
                                     acc.num_processes)
        tokens_before = self.engine.counters["rollout/generated_tokens"]
        phase_ms_before = {k: self.engine.counters[k] for k in ("time/generate_ms", "time/retrieval_ms")}
        start = time.perf_counter()
        self.policy.model.eval()
        server_metrics: dict[str, float] = {}
        if self.server_rollouts is not None:  # the servers must serve this step's weights before sampling
            server_metrics |= self.server_rollouts.ensure_synced(self._trained_model(), self.state.step)
        retrieval_before = self._retrieval_counts()
        batch = self.sampler.sample(records)
        rollout_s = time.perf_counter() - start
        failed, searched, retries = (now - before for now, before in zip(self._retrieval_counts(), retrieval_before,
                                                                         strict=True))
        check_retrieval_failures(failed, searched, self.config.retrieval.max_failure_share, self.state.step + 1)
        faults.maybe_die("rollout", self.state.step + 1)
        if self.server_rollouts is not None:  # version check + the trainer's old log-probs, before any update
            server_metrics |= self.server_rollouts.before_update(batch.samples, self.state.step,
                                                                 self._trained_model(), self.bf16_autocast)
        start = time.perf_counter()
        self.policy.model.train()
        update_metrics = self.update(batch.samples)
        update_s = time.perf_counter() - start
        if self.server_rollouts is not None:  # the next version goes to the servers
            server_metrics |= self.server_rollouts.push(self._trained_model(), self.state.step + 1)
        generated = self.engine.counters["rollout/generated_tokens"] - tokens_before
        metrics = {**self.batch_metrics(batch), **update_metrics, **server_metrics, "time/rollout_s": rollout_s,
                   "retrieval/failed_searches": float(failed), "retrieval/retries": float(retries),
                   "time/update_s": update_s, "rollout/step_generated_tokens": float(generated),
                   "time/generate_s": (self.engine.counters["time/generate_ms"] - phase_ms_before["time/generate_ms"])
                   / 1000,
                   "time/retrieve_s": (self.engine.counters["time/retrieval_ms"]
                                       - phase_ms_before["time/retrieval_ms"]) / 1000,
                   "lr": self.scheduler.get_last_lr()[0]}
        metrics = self._reduce(metrics)
        self.generated_tokens += int(metrics["rollout/step_generated_tokens"])
        metrics["rollout/policy_tokens_total"] = float(self.generated_tokens)
        self.state.data_position += tc.questions_per_step
        self.state.step += 1
        return metrics

    def _retrieval_counts(self) -> tuple[int, int, int]:
        """(failed searches, searches, retries) so far; retries include the HTTP client's own re-sent requests."""
        counters = self.engine.counters
        return (counters["rollout/retrieval_failures"], counters["rollout/retrieval_queries"],
                counters["rollout/retrieval_retries"] + getattr(self.engine.retriever, "retries", 0))

    def _trained_model(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.module).model

    def batch_metrics(self, batch: SampledBatch) -> dict[str, float]:
        episodes = batch.episodes
        rewards = [s.reward for e in episodes for s in e.steps if s.reward is not None]
        metrics = dict(batch.metrics)
        metrics["reward/mean"] = float(np.mean(rewards)) if rewards else 0.0
        metrics["rollout/em"] = float(np.mean([exact_match(e.final_answer, e.record.golden_answers)
                                               for e in episodes])) if episodes else 0.0
        metrics["rollout/valid_rate"] = float(np.mean([e.is_valid for e in episodes])) if episodes else 0.0
        metrics["rollout/searches"] = float(np.mean([e.num_searches for e in episodes])) if episodes else 0.0
        metrics["rollout/samples"] = float(len(batch.samples))
        for kind in ("think_score", "query_score", "answer_score"):
            values = [s.scores[kind] for e in episodes for s in e.steps if kind in s.scores]
            if values:
                metrics[f"reward/{kind.removesuffix('_score')}"] = float(np.mean(values))
        judge = getattr(getattr(self.sampler, "reward", None), "judge", None)
        if judge is not None:
            metrics.update({f"judge/{k}": float(v) for k, v in judge.stats().items()})
        return metrics

    def _reduce(self, metrics: dict[str, float]) -> dict[str, float]:
        """Average metrics over processes (token counts are summed)."""
        if self.accelerator.num_processes == 1:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=self.accelerator.device)
        gathered = self.accelerator.gather(values[None]).reshape(self.accelerator.num_processes, -1)
        summed = {"rollout/step_generated_tokens", "rollout/samples"}
        return {k: float(gathered[:, i].sum() if k in summed else gathered[:, i].mean()) for i, k in enumerate(keys)}

    # -- the update -----------------------------------------------------------------------------------------------
    # A unit is what must share a forward pass: a group of samples sharing a prefix (SLATE: the prefix runs once) or
    # one full trajectory. Several units run in one pass, packed by padded tokens (``trainer.micro_batch_tokens``).
    def _max_over_processes(self, count: int) -> int:
        """The largest ``count`` of any process: every process then runs that many passes, so collectives align."""
        if self.accelerator.num_processes == 1:
            return count
        counts = self.accelerator.gather(torch.tensor([count], device=self.accelerator.device))
        return int(counts.max())

    def _micro_batches(self, units: list[Unit], grouped: bool) -> list[list[Unit]]:
        tc = self.config.trainer
        return pack_micro_batches(units, grouped, tc.micro_batch_tokens, 1 if grouped else tc.micro_batch_size)

    def update(self, samples: list[Sample]) -> dict[str, float]:
        tc = self.config.trainer
        if not samples:
            raise TrainingError("the sampler produced no training samples; check rollout.max_steps and the data.")
        units, grouped = make_units(samples, trees=tc.tree_packing)
        start = time.perf_counter()
        self._fill_reference_logprobs(units, grouped)
        reference_s = time.perf_counter() - start
        # about minibatch_size samples per optimizer step, in whole units (a unit's samples share one forward)
        mean_unit = len(samples) / len(units)
        units_per_minibatch = max(1, int(tc.minibatch_size // mean_unit)) if grouped else tc.minibatch_size
        num_minibatches = self._max_over_processes(max(1, math.ceil(len(units) / units_per_minibatch)))
        self._last_unit = units[0]
        sums: dict[str, float] = {"loss/policy": 0.0, "loss/kl": 0.0, "loss/clip_frac": 0.0, "policy/entropy": 0.0,
                                  "loss/grad_norm": 0.0}
        self._phase_s = {}
        updates = passes = 0
        for _ in range(tc.update_epochs):
            order = torch.randperm(len(units), generator=self.update_generator).tolist()
            for mb in range(num_minibatches):
                chosen = [units[i] for i in order[mb * units_per_minibatch:(mb + 1) * units_per_minibatch]]
                micros = self._micro_batches(chosen, grouped)
                passes += len(micros)
                result = self._optimizer_step(micros, self._max_over_processes(len(micros)), grouped)
                if result is None:
                    continue
                updates += 1
                if updates == 1:
                    faults.maybe_die("update", self.state.step + 1)
                for key, value in result.items():
                    sums[key] += value
        metrics = {key: value / max(1, updates) for key, value in sums.items()}
        metrics["loss/skipped_updates"] = float(num_minibatches * tc.update_epochs - updates)
        metrics["update/optimizer_steps"] = float(updates)
        metrics["update/forward_passes"] = float(passes)
        metrics["time/reference_s"] = reference_s
        metrics.update(self._phase_s)
        return metrics

    @torch.no_grad()
    def _fill_reference_logprobs(self, units: list[Unit], grouped: bool) -> None:
        """The frozen reference's log-probs of every sample, once per RL step (they do not change across update
        epochs), in packed no-grad passes; stored on the samples."""
        if self.config.algorithm.kl_coef == 0:
            return
        temperature = self.config.rollout.temperature
        device = self.accelerator.device
        adapter_off = contextlib.nullcontext() if self.reference is not None else self.policy.model.disable_adapter()
        model = self.reference if self.reference is not None else self.policy.model
        was_training = model.training
        model.eval()
        with adapter_off, autocast_bf16(device, self.bf16_autocast):  # LoRA: the frozen base model is the reference
            for sample, values in packed_logprobs(model, self._micro_batches(units, grouped), grouped,
                                                  self.policy.pad_token_id, temperature, device,
                                                  float32_head=self.bf16_autocast):
                sample.ref_logprobs = values
        model.train(was_training)

    def _optimizer_step(self, micros: list[list[Unit]], micro_steps: int, grouped: bool) -> dict[str, float] | None:
        tc = self.config.trainer
        self.optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss_total, stats = self.accumulate_gradients(micros, micro_steps, grouped)
        self._phase_s["time/policy_s"] = self._phase_s.get("time/policy_s", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        grad_norm = self.accelerator.clip_grad_norm_(self.module.parameters(), tc.max_grad_norm)
        grad_norm_value = float(grad_norm) if grad_norm is not None else 0.0
        if not (math.isfinite(loss_total) and math.isfinite(grad_norm_value)):
            self.optimizer.zero_grad(set_to_none=True)
            self.state.nonfinite_in_row += 1
            logger.warning("non-finite loss or gradient (loss %s, grad norm %s): update skipped (%d in a row)",
                           loss_total, grad_norm_value, self.state.nonfinite_in_row)
            if self.state.nonfinite_in_row >= tc.max_nonfinite_in_row:
                raise TrainingError(f"{self.state.nonfinite_in_row} non-finite losses in a row at step "
                                    f"{self.state.step + 1}; lower trainer.lr, check the rewards for NaN, or resume "
                                    "from the last checkpoint with a smaller learning rate.")
            return None
        self.state.nonfinite_in_row = 0
        self.optimizer.step()
        self.scheduler.step()
        self._phase_s["time/optimizer_s"] = self._phase_s.get("time/optimizer_s", 0.0) + time.perf_counter() - start
        return {**stats, "loss/grad_norm": grad_norm_value}

    def accumulate_gradients(self, micros: list[list[Unit]], micro_steps: int,
                             grouped: bool) -> tuple[float, dict[str, float]]:
        """Backpropagate one minibatch (``micros``: its forward passes) into the parameters' ``.grad``: each pass
        weighs by its share of the minibatch's trained tokens (or samples), so the sum is the minibatch's loss
        however the passes are packed. Returns the loss and the logged statistics."""
        acc, ac = self.accelerator, self.config.algorithm
        flat = [s for micro in micros for unit in micro for s in unit]
        total_tokens = max(1, sum(s.num_policy_tokens for s in flat))
        stats = {"loss/policy": 0.0, "loss/kl": 0.0, "loss/clip_frac": 0.0, "policy/entropy": 0.0}
        loss_total = 0.0
        for micro in range(micro_steps):
            units = micros[micro] if micro < len(micros) else []
            weight_scale = 1.0
            if not units:  # a zero-weight pass keeps the processes' collective calls aligned
                units, weight_scale = [self._last_unit], 0.0
            chunk = [s for unit in units for s in unit]
            if ac.token_aggregation == "token_mean":
                weight = sum(s.num_policy_tokens for s in chunk) / total_tokens * weight_scale
            else:
                weight = len(chunk) / max(1, len(flat)) * weight_scale
            batch = micro_tensors(units, grouped, self.policy.pad_token_id).to(acc.device)
            if ac.kl_coef > 0 and batch.ref_logprobs is None:
                raise TrainingError("reference log-probs are missing for a KL update (internal: "
                                    "_fill_reference_logprobs was not run on these samples).")
            sync = acc.no_sync(self.module) if micro < micro_steps - 1 else contextlib.nullcontext()
            with sync:
                logprobs, entropy = self.module(batch.input_ids, batch.attention_mask, batch.target_mask,
                                                batch.prefix_ids, batch.prefix_lens, batch.group_of,
                                                batch.row_prefix_lens)
                out = policy_loss(logprobs, batch.old_logprobs, batch.ref_logprobs, batch.advantages,
                                  batch.target_mask, ac.clip_eps, ac.kl_coef, ac.token_aggregation)
                acc.backward(out.loss * weight)
            loss_total += float(out.loss.detach()) * weight
            mask = batch.target_mask.float()
            stats["loss/policy"] += float(out.policy) * weight
            stats["loss/kl"] += float(out.kl) * weight
            stats["loss/clip_frac"] += float(out.clip_fraction) * weight
            stats["policy/entropy"] += float((entropy * mask).sum() / mask.sum().clamp(min=1)) * weight
        if micros:
            self._last_unit = list(micros[-1][-1])
        return loss_total, stats

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        acc = self.accelerator
        step = self.state.step
        staging = checkpoint.staging_dir(self.out_dir, step)
        torch.save(checkpoint.rng_state(self._generators()), staging / f"rng_rank{acc.process_index}.pt")
        if acc.is_main_process:
            self.export_policy(staging / "policy")
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "state": vars(self.state).copy(), "generated_tokens": self.generated_tokens},
                       staging / "trainer_state.pt.tmp")
            save_config(self.config, staging / "config.yaml")
        faults.maybe_die("checkpoint", step)
        acc.wait_for_everyone()
        if acc.is_main_process:
            (staging / "trainer_state.pt.tmp").rename(staging / "trainer_state.pt")
            checkpoint.commit(self.out_dir, step, self.config.trainer.keep_checkpoints)
        acc.wait_for_everyone()

    def export_policy(self, path: Path) -> None:
        """A loadable policy directory (LoRA adapters merged into a copy of the model)."""
        model = self.accelerator.unwrap_model(self.module).model
        if self.config.trainer.lora_rank > 0:
            model.save_pretrained(path / "adapter")  # the adapter alone: a merged model cannot be split to resume
            model = copy.deepcopy(model).merge_and_unload()
        Policy(model=model, tokenizer=self.policy.tokenizer, name=self.policy.name).save(path)

    def resume(self) -> bool:
        latest = checkpoint.latest_checkpoint(self.out_dir)
        found = [latest]
        broadcast_object_list(found)
        latest = found[0]
        if latest is None:
            self.logger.truncate_after(0)  # killed before the first checkpoint: the run starts over
            return False
        state = torch.load(latest / "trainer_state.pt", weights_only=False)
        model = self.accelerator.unwrap_model(self.module).model
        if self.config.trainer.lora_rank > 0:
            load_adapter(model, latest / "policy" / "adapter")  # the frozen base is the --init model already
        else:
            model.load_state_dict(load_policy(self.config.model, latest / "policy").model.state_dict())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.state = TrainState(**state["state"])
        self.generated_tokens = state["generated_tokens"]
        rng_file = latest / f"rng_rank{self.accelerator.process_index}.pt"
        checkpoint.restore_rng_state(torch.load(rng_file, weights_only=False), self._generators())
        self.logger.truncate_after(self.state.step)  # steps logged after this checkpoint are run again
        logger.info("resumed from %s (step %d)", latest, self.state.step)
        return True

    # -- the run --------------------------------------------------------------------------------------------------
    def evaluate(self) -> dict:
        self.policy.model.eval()
        result, _ = evaluate(self.engine, self.eval_records)
        return result

    def train(self, resume: bool = False, stop_after: int | None = None,
              on_step: Callable[[int, int, dict[str, float]], None] | None = None) -> TrainState:
        tc = self.config.trainer
        if self.accelerator.is_main_process:
            checkpoint.remove_staging(self.out_dir)  # a checkpoint half-written by a killed process
        self.accelerator.wait_for_everyone()
        if resume:
            self.resume()
        if self.accelerator.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.out_dir / "config.yaml")
        done_this_run = 0
        while self.state.step < tc.steps:
            if tc.token_budget is not None and self.generated_tokens >= tc.token_budget:
                logger.info("token budget of %d policy tokens reached at step %d", tc.token_budget, self.state.step)
                break
            tokens_before = self.generated_tokens
            metrics = self.step()
            if self.eval_records and ((tc.eval_every and self.state.step % tc.eval_every == 0)
                                      or crossed_mark(tc.eval_at_tokens, tokens_before, self.generated_tokens)):
                evaluation = self.evaluate()
                metrics.update({"eval/em": evaluation["em"], "eval/valid_rate": evaluation["valid_rate"]})
                for hops, values in evaluation.get("by_hops", {}).items():
                    metrics[f"eval/em_{hops}hop"] = values["em"]
            self.logger.log(self.state.step, metrics)
            if on_step is not None:
                on_step(self.state.step, tc.steps, metrics)
            if self.state.step % tc.checkpoint_every == 0 or self.state.step == tc.steps:
                self.save_checkpoint()
            done_this_run += 1
            if stop_after is not None and done_this_run >= stop_after:
                break
        if self.accelerator.is_main_process:
            self.export_policy(self.out_dir / "policy")
            save_config(self.config, self.out_dir / "policy" / "slate_config.yaml")
        self.accelerator.wait_for_everyone()
        self.logger.close()
        return self.state

