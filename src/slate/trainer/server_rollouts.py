"""The trainer's side of rollouts on vLLM servers: weight sync, policy-version checks and old log-probs.

Per RL step (``trainer/loop.py`` calls the three hooks):
1. ``ensure_synced(model, v)`` before sampling: the servers must serve version v = the number of completed RL
   steps (v0 = the initial weights, pushed at the start of a run or after a resume).
2. ``before_update(samples, v, model)``: every sample must come from version v, or lag it by at most
   ``rollout.max_staleness`` versions; a sample whose version is unknown is an error. The trainer's model then
   recomputes the log-probs of the sampled tokens; ``rollout/logprob_gap`` = mean |server − trainer| over the
   trained tokens shows a dtype or sampler mismatch before it biases the PPO ratio. With
   ``rollout.logprobs_from=trainer`` (the default) the recomputed values become the old log-probs.
3. ``push(model, v + 1)`` after the update: the servers get the new weights as the next version.

Several processes (accelerate): each samples from the servers; the main process alone writes and pushes the
weights (one push per step, not one per rank), the others wait for it in a collective that also carries a failure,
and then route to the new version.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from slate.config import RunConfig
from slate.errors import TrainingError
from slate.rollout.engine import RolloutEngine
from slate.rollout.vllm_backend import PolicyServer, VllmGenerator
from slate.rollout.weight_sync import FullSync, LoraSync
from slate.runtime import autocast_bf16
from slate.samples import Sample
from slate.trainer.batching import make_units, pack_micro_batches, packed_logprobs
from slate.trainer.distributed import agree_on_error

logger = logging.getLogger(__name__)
GAP_WARNING = 0.05  # nats: float32 on both sides gives ~1e-7; a dtype or sampler mismatch gives far more


def check_policy_versions(versions: list[int | None], trained_version: int, max_staleness: int) -> None:
    """Raise unless every version is known and within [trained_version − max_staleness, trained_version]."""
    unknown = sum(v is None for v in versions)
    if unknown:
        raise TrainingError(f"{unknown} of {len(versions)} samples came from an unknown policy version (a server "
                            "that was not synced, or whose sync failed); refusing to train on them. Check the "
                            "rollout servers' logs and rollout.server_urls.")
    known = [v for v in versions if v is not None]
    off = [v for v in known if not trained_version - max_staleness <= v <= trained_version]
    if off:
        raise TrainingError(f"{len(off)} samples came from policy version(s) {sorted(set(off))} while version "
                            f"{trained_version} is being trained (rollout.max_staleness={max_staleness}). Another "
                            "run may be syncing the same server; give each run its own, or raise "
                            "rollout.max_staleness to accept off-policy samples.")


def logprob_gap(server: list[list[float]], trainer: list[list[float]],
                masks: list[list[bool]]) -> tuple[float, float]:
    """(mean, max) of |server − trainer| over the tokens whose mask is True; (0, 0) when there are none."""
    diffs = [abs(s - t) for ss, tt, mm in zip(server, trainer, masks, strict=True)
             for s, t, m in zip(ss, tt, mm, strict=True) if m]
    if not diffs:
        return 0.0, 0.0
    return sum(diffs) / len(diffs), max(diffs)


def policy_logprobs(model: torch.nn.Module, samples: list[Sample], temperature: float, micro_batch_size: int,
                    pad_id: int, device: torch.device, micro_batch_tokens: int | None = None,
                    bf16_autocast: bool = False) -> list[list[float]]:
    """Each sample's per-token log-probs under ``model`` (0 where its loss mask is False), aligned with its ids, in
    the update's packed passes (``trainer/batching.py``) and its precision (``bf16_autocast``, the trainer's choice):
    siblings that share a prefix run it once."""
    units, grouped = make_units(samples)
    micros = pack_micro_batches(units, grouped, micro_batch_tokens, 1 if grouped else micro_batch_size)
    with autocast_bf16(device, bf16_autocast):
        by_sample = {id(sample): values for sample, values in packed_logprobs(
            model, micros, grouped, pad_id, temperature, device, float32_head=bf16_autocast)}
    return [by_sample[id(sample)] for sample in samples]


class ServerRollouts:
    def __init__(self, config: RunConfig, engine: RolloutEngine, out_dir: Path, accelerator: Accelerator) -> None:
        rc = config.rollout
        self.config = config
        self.accelerator = accelerator
        self.device = accelerator.device
        self.is_main_process = accelerator.is_main_process
        self.pushes = 0  # versions this process pushed: the main process one per step (and v0), the others none
        self._before: tuple[list[Sample], list[list[float]], bool] | None = None  # for update_shift
        self.pad_id = engine.policy.pad_token_id
        self.servers = [PolicyServer(url, rc.server_timeout_s, rc.server_retries) for url in rc.server_urls]
        for server in self.servers:
            server.connect(context_tokens=engine.policy.max_positions)
        sync_dir = Path(rc.sync_dir) if rc.sync_dir else out_dir / "weight_sync"
        # one token per launch, the same in every process: adapter names never collide with another run's (or a
        # crashed launch's) on a shared server, and every process routes to the names the main process loaded
        token = [uuid.uuid4().hex[:8]]
        broadcast_object_list(token)
        run_token = token[0]
        self.sync = LoraSync(self.servers, sync_dir, run_token) if rc.weight_sync == "lora" \
            else FullSync(self.servers, sync_dir)
        self.generator = VllmGenerator(self.servers, engine.generator, engine.policy.eos_token_id,
                                       rc.max_concurrent_requests, rc.server_retries, resync=self.sync.resync)
        engine.generate = self.generator
        self.synced_version: int | None = None

    def ensure_synced(self, model: torch.nn.Module, version: int) -> dict[str, float]:
        return {} if self.synced_version == version else self.push(model, version)

    def update_shift(self, model: torch.nn.Module) -> dict[str, float]:
        """``rollout/update_shift``: mean |log p after the update − before it| over the step's trained tokens, the
        trainer's own numbers. Beside the next step's ``rollout/logprob_gap`` it tells whether the servers hold the
        new weights: a gap far below the shift means they do (a server still on the old weights, or on the base
        model without its adapter, would be off by about the shift)."""
        if not self.config.rollout.measure_update_shift or self._before is None:
            return {}
        samples, before, bf16_autocast = self._before
        self._before = None
        rc, tc = self.config.rollout, self.config.trainer
        after = policy_logprobs(model, samples, rc.temperature, tc.micro_batch_size, self.pad_id, self.device,
                                tc.micro_batch_tokens, bf16_autocast)
        shift, worst = logprob_gap(before, after, [s.loss_mask for s in samples])
        return {"rollout/update_shift": shift, "rollout/update_shift_max": worst}

    def push(self, model: torch.nn.Module, version: int) -> dict[str, float]:
        """The main process writes and sends ``version``; the others wait for it in one collective that also tells
        them whether it failed (a server gone: every rank stops with the same error, none waits on a barrier).
        With ``rollout.measure_update_shift``, the update's shift is measured first, on the weights being pushed."""
        shift = self.update_shift(model)
        error = None
        if self.is_main_process:
            try:
                self.sync.push(model, version)
                self.pushes += 1
            except Exception as failure:
                error = failure
        agree_on_error(self.accelerator, error, f"pushing policy version {version} to the rollout servers")
        if not self.is_main_process:  # the main process loaded it; route this process's requests there too
            self.sync.current = (version, self.sync.version_dir(version))
            for server in self.servers:
                server.version = version
                if isinstance(self.sync, LoraSync):
                    server.model = self.sync.adapter_name(version)
        self.synced_version = version
        return {**shift, "rollout/synced_version": float(version), "time/weight_sync_s": self.sync.seconds}

    def before_update(self, samples: list[Sample], trained_version: int, model: torch.nn.Module,
                      bf16_autocast: bool = False) -> dict[str, float]:
        rc = self.config.rollout
        versions = [s.policy_version for s in samples]
        error = None
        try:
            check_policy_versions(versions, trained_version, rc.max_staleness)
        except TrainingError as failure:
            error = failure
        agree_on_error(self.accelerator, error, f"checking the policy versions of step {trained_version + 1}")
        start = time.perf_counter()
        tc = self.config.trainer
        trainer_values = policy_logprobs(model, samples, rc.temperature, tc.micro_batch_size, self.pad_id,
                                         self.device, tc.micro_batch_tokens, bf16_autocast)
        gap, worst = logprob_gap([s.old_logprobs for s in samples], trainer_values, [s.loss_mask for s in samples])
        if gap > GAP_WARNING:
            logger.warning("rollout/logprob_gap %.3f nats (max %.3f) at policy version %d: the servers and the trainer "
                           "disagree. Check that both use the same dtype (serve-policy --dtype, model.dtype), that the "
                           "server returns processed log-probs (--logprobs-mode processed_logprobs), and its log for "
                           "weight-sync errors.", gap, worst, trained_version)
        if rc.logprobs_from == "trainer":
            for sample, values in zip(samples, trainer_values, strict=True):
                sample.old_logprobs = values
        if rc.measure_update_shift:  # kept until the update has run, to measure how far it moved them
            self._before = (samples, trainer_values, bf16_autocast)
        known = [v for v in versions if v is not None]
        return {"rollout/policy_version": float(min(known)) if known else 0.0,
                "rollout/policy_staleness": float(trained_version - min(known)) if known else 0.0,
                "rollout/logprob_gap": gap, "rollout/logprob_gap_max": worst,
                "time/old_logprobs_s": time.perf_counter() - start,
                **self.generator.metrics()}
