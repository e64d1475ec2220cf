"""The RL loop, shared by every method: sample → reward → advantage → update → log → checkpoint.

Each step hands ``questions_per_step`` training questions (split across processes) to the method's sampler
(``methods.py``), which rolls them out, rewards the steps and puts each candidate's group advantage on its tokens
(``rollout/samplers.py``: SLATE needs A there, to choose the next prefix). The loop then computes the frozen
reference's log-probs and runs ``update_epochs`` passes of PPO-clip + k3-KL over minibatches
(``algorithms.losses.policy_loss``). Set-up (policy, LoRA, reference, optimizer): ``setup.py``; save, resume and
export: ``checkpoint.py``; metrics: ``metrics.py``; data order: ``schedule.py``.

Distributed (accelerate: a CPU, one GPU, or DDP / FSDP / DeepSpeed processes): each process samples its share of
questions, gradients are averaged, and every process runs as many passes per optimizer step (short ones a zero-weight
pass) so collectives line up; failures and failure counts are shared between processes (``distributed.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator

from slate.algorithms.losses import policy_loss
from slate.config import RunConfig, save_config
from slate.data.records import QARecord
from slate.errors import TrainingError
from slate.eval.evaluate import eval_metrics
from slate.methods import BuildContext, build_sampler
from slate.retrieval.base import Retriever
from slate.rollout.engine import RolloutEngine
from slate.samples import Sample, Sampler
from slate.trainer import checkpoint, distributed, faults
from slate.trainer.batching import Unit, make_units, micro_tensors, pack_micro_batches, reference_logprobs
from slate.trainer.metrics import MetricLogger, batch_metrics, max_over_processes, reduce_over_processes, timed
from slate.trainer.schedule import TrainState, crossed_mark, questions_for_step
from slate.trainer.setup import build_models, build_server_rollouts, start_run

logger = logging.getLogger(__name__)


class Trainer:
    def __init__(self, config: RunConfig, train_records: list[QARecord], retriever: Retriever, init: Path | None,
                 out_dir: Path, world_dir: Path | None = None, eval_records: list[QARecord] | None = None,
                 accelerator: Accelerator | None = None, sampler: Sampler | None = None) -> None:
        """``sampler``: the method's sampler of ``config`` unless one is given (a test's reward, an ablation's)."""
        self.config, self.records, self.eval_records, self.out_dir = config, train_records, eval_records or [], out_dir
        tc = config.trainer
        self.accelerator = acc = accelerator or distributed.make_accelerator(tc.collective_timeout_s)
        self.phase = distributed.Phase()  # what this process is doing: a collective that fails says so
        start_run(config, acc)  # the processes launched, the seeds, the CPU
        self.models = build_models(config, init, acc)
        self.policy, self.reference, self.module = self.models.policy, self.models.reference, self.models.module
        self.optimizer, self.scheduler = self.models.optimizer, self.models.scheduler
        self.bf16_autocast = self.models.bf16_autocast
        self.engine = RolloutEngine(self.policy, retriever, config.rollout, config.retrieval.top_k,
                                    config.retrieval.max_retries, seed=tc.seed * 1000 + acc.process_index)
        # rollout.backend=vllm: sampling on servers, weights synced every step (None in-process)
        self.server_rollouts = build_server_rollouts(config, self.engine, out_dir, acc)
        self.sampler = sampler or build_sampler(config, BuildContext(config, train_records, world_dir,
                                                                     policy=self.policy, reference=self.reference))
        self.update_generator, self.state = torch.Generator().manual_seed(tc.seed), TrainState()
        self.logger = MetricLogger(out_dir, enabled=acc.is_main_process, report_to=tc.trackers,
                                   project=tc.wandb_project, config=config.model_dump(mode="json"))
        # policy tokens generated so far; the ids of this process's training questions (for its rank report)
        self.generated_tokens, self.questions_seen = 0, list[str]()
        self._last_unit: Unit = []  # a zero-weight pass needs some unit when a process runs dry

    # -- one RL step ----------------------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        acc, tc, step = self.accelerator, self.config.trainer, self.state.step + 1
        records = questions_for_step(self.records, self.state, tc.questions_per_step, tc.seed, acc.process_index,
                                     acc.num_processes)
        times: dict[str, float] = {}
        server: dict[str, float] = {}
        # 1. Sample: rollouts, their step rewards and each candidate's group advantage A on its own tokens. The
        #    sampler computes A (algorithms/advantages.py), because SLATE draws the next prefix from softmax(A / η).
        #    No collective runs inside, so a process that fails here (a dead server) tells the others, and all stop.
        self.policy.model.eval()
        if self.server_rollouts is not None:  # the servers must serve this step's weights before sampling
            server |= self.server_rollouts.ensure_synced(self._trained_model(), self.state.step)
        error, batch = None, None
        with timed(times, "time/rollout_s"):
            try:
                batch = self.sampler.sample(self.engine, records)
            except Exception as failure:
                error = failure
        distributed.agree_on_error(acc, error, self.phase(f"sampling step {step}").name)
        counted = {**self.engine.metrics(), **self.sampler.metrics()}
        # 2. Checks, on counts summed over processes (every rank decides alike): a dead retriever or judge stops the
        #    run before the update; server samples must come from the version being trained
        distributed.check_failures_over_processes(acc, counted, self.config, step)
        faults.maybe_die("rollout", step)
        if self.server_rollouts is not None:  # version check + the trainer's old log-probs, before any update
            server |= self.server_rollouts.before_update(batch.samples, self.state.step, self._trained_model(),
                                                         self.bf16_autocast)
        if not batch.samples:
            raise TrainingError("the sampler produced no training samples; check rollout.max_steps and the data.")
        # 3. Reference log-probs, once per step: the reference is frozen, so they hold for every update epoch
        self.policy.model.train()
        self.phase(f"updating at step {step}")
        with timed(times, "time/update_s"):
            units, grouped = make_units(batch.samples, trees=tc.tree_packing)
            with timed(times, "time/reference_s"):
                self.fill_reference_logprobs(units, grouped)
            # 4. Update: update_epochs passes of PPO-clip + β·k3-KL over minibatches of whole units
            update = self.update(units, grouped)
        if self.server_rollouts is not None:  # the next version goes to the servers
            server |= self.server_rollouts.push(self._trained_model(), step)
        # 5. Metrics: the batch's, every component's counters, the update's; over processes (counts summed)
        self.phase(f"reducing step {step}'s metrics")
        self.questions_seen += [record.id for record in records]
        metrics = reduce_over_processes({**batch_metrics(batch), **counted, **update, **server, **times,
                                         "lr": self.scheduler.get_last_lr()[0]}, acc)
        self.generated_tokens += int(metrics["rollout/step_generated_tokens"])
        metrics["rollout/policy_tokens_total"] = float(self.generated_tokens)
        self.state.data_position += tc.questions_per_step
        self.state.step = step
        return metrics

    def _trained_model(self) -> torch.nn.Module:  # the model the optimizer trains, outside accelerate's wrapper
        return self.accelerator.unwrap_model(self.module).model

    # -- the update -----------------------------------------------------------------------------------------------
    # A unit is what must share a forward pass: a group of samples sharing a prefix (SLATE: the prefix runs once) or
    # one full trajectory. Several units run in one pass, packed by padded tokens (``trainer.micro_batch_tokens``).
    def micro_batches(self, units: list[Unit], grouped: bool) -> list[list[Unit]]:
        tc = self.config.trainer  # grouped units (SLATE's siblings) run one prefix per row of the pass
        return pack_micro_batches(units, grouped, tc.micro_batch_tokens, 1 if grouped else tc.micro_batch_size)

    def fill_reference_logprobs(self, units: list[Unit], grouped: bool) -> None:
        """The frozen reference's log-probs of every sample (with LoRA: the policy with its adapters off)."""
        if self.config.algorithm.kl_coef > 0:
            reference_logprobs(self.reference, self.policy.model, self.micro_batches(units, grouped), grouped,
                               self.policy.pad_token_id, self.config.rollout.temperature, self.accelerator.device,
                               self.bf16_autocast)

    def update(self, units: list[Unit], grouped: bool) -> dict[str, float]:
        """``update_epochs`` passes over ``units`` in minibatches of about ``minibatch_size`` samples (whole units:
        a unit's samples share one forward), one optimizer step each; the mean losses, counts and times."""
        tc = self.config.trainer
        times: dict[str, float] = {}
        mean_unit = sum(len(unit) for unit in units) / len(units)
        units_per_minibatch = max(1, int(tc.minibatch_size // mean_unit)) if grouped else tc.minibatch_size
        num_minibatches = max_over_processes(self.accelerator, max(1, math.ceil(len(units) / units_per_minibatch)))
        self._last_unit = units[0]
        sums = dict.fromkeys(("loss/policy", "loss/kl", "loss/clip_frac", "policy/entropy", "loss/grad_norm"), 0.0)
        updates = passes = 0
        for _ in range(tc.update_epochs):
            order = torch.randperm(len(units), generator=self.update_generator).tolist()
            for mb in range(num_minibatches):
                micros = self.micro_batches([units[i] for i in order[mb * units_per_minibatch:
                                                                     (mb + 1) * units_per_minibatch]], grouped)
                passes += len(micros)
                result = self._optimizer_step(micros, max_over_processes(self.accelerator, len(micros)), grouped, times)
                if result is None:
                    continue
                updates += 1
                if updates == 1:
                    faults.maybe_die("update", self.state.step + 1)
                for key, value in result.items():
                    sums[key] += value
        return {**{key: value / max(1, updates) for key, value in sums.items()},
                "loss/skipped_updates": float(num_minibatches * tc.update_epochs - updates),
                "update/optimizer_steps": float(updates), "update/forward_passes": float(passes), **times}

    def _optimizer_step(self, micros: list[list[Unit]], micro_steps: int, grouped: bool,
                        times: dict[str, float]) -> dict[str, float] | None:
        tc = self.config.trainer
        self.optimizer.zero_grad(set_to_none=True)
        with timed(times, "time/policy_s"):
            loss_total, stats = self.accumulate_gradients(micros, micro_steps, grouped)
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
        times["time/optimizer_s"] = times.get("time/optimizer_s", 0.0) + time.perf_counter() - start
        return {**stats, "loss/grad_norm": grad_norm_value}

    def accumulate_gradients(self, micros: list[list[Unit]], micro_steps: int,
                             grouped: bool) -> tuple[float, dict[str, float]]:
        """Backpropagate one minibatch (``micros``: its forward passes) into the parameters' ``.grad``: each pass
        weighs by its share of the minibatch's trained tokens (or samples), so the sum is the minibatch's loss
        however the passes are packed. Returns the loss and the logged statistics."""
        acc, ac = self.accelerator, self.config.algorithm
        flat: list[Sample] = [s for micro in micros for unit in micro for s in unit]
        total_tokens = max(1, sum(s.num_policy_tokens for s in flat))
        stats = dict.fromkeys(("loss/policy", "loss/kl", "loss/clip_frac", "policy/entropy"), 0.0)
        loss_total = 0.0
        for micro in range(micro_steps):
            units, weight_scale = (micros[micro], 1.0) if micro < len(micros) else ([], 0.0)
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
                                    "fill_reference_logprobs was not run on these samples).")
            with acc.no_sync(self.module) if micro < micro_steps - 1 else contextlib.nullcontext():
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

    # -- checkpoints and the run ------------------------------------------------------------------------------------
    def _generators(self) -> dict[str, torch.Generator]:
        """The generators whose state makes a run resumable (the sampler's draws of a next prefix among them)."""
        return {"engine": self.engine.generator, "update": self.update_generator, **self.sampler.generators()}

    def save_checkpoint(self) -> None:
        checkpoint.save(self.out_dir, self.config, self.accelerator, self.models,
                        {"state": vars(self.state).copy(), "generated_tokens": self.generated_tokens},
                        self._generators())

    def resume(self) -> bool:
        restored = checkpoint.resume(self.out_dir, self.config, self.accelerator, self.models, self._generators())
        if restored is None:
            self.logger.truncate_after(0)  # killed before the first checkpoint: the run starts over
            return False
        latest, saved = restored
        self.state, self.generated_tokens = TrainState(**saved["state"]), saved["generated_tokens"]
        self.logger.truncate_after(self.state.step)  # steps logged after this checkpoint are run again
        logger.info("resumed from %s (step %d)", latest, self.state.step)
        return True

    def evaluate(self) -> dict[str, float]:
        """Greedy dev evaluation: ``eval/em``, ``eval/valid_rate`` and ``eval/em_<h>hop``."""
        self.policy.model.eval()
        return eval_metrics(self.engine, self.eval_records)

    @distributed.naming_failed_collectives
    def train(self, resume: bool = False, stop_after: int | None = None,
              on_step: Callable[[int, int, dict[str, float]], None] | None = None) -> TrainState:
        tc, acc = self.config.trainer, self.accelerator
        if acc.is_main_process:
            checkpoint.remove_staging(self.out_dir)  # a checkpoint half-written by a killed process
        acc.wait_for_everyone()
        if resume:
            self.resume()
        if acc.is_main_process:
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
                metrics.update(self.evaluate())
            self.logger.log(self.state.step, metrics)
            if on_step is not None:
                on_step(self.state.step, tc.steps, metrics)
            if self.state.step % tc.checkpoint_every == 0 or self.state.step == tc.steps:
                self.phase(f"saving the checkpoint of step {self.state.step}")
                self.save_checkpoint()
            done_this_run += 1
            if stop_after is not None and done_this_run >= stop_after:
                break
        self.phase("exporting the policy")
        if acc.is_main_process:
            checkpoint.export_policy(self.models, acc, tc.lora_rank > 0, self.out_dir / "policy")
            save_config(self.config, self.out_dir / "policy" / "slate_config.yaml")
        distributed.write_rank_report(self.out_dir, acc, self._trained_model(), self.questions_seen, self.state.step,
                                      self.server_rollouts.pushes if self.server_rollouts is not None else 0)
        acc.wait_for_everyone()
        self.logger.close()
        return self.state
