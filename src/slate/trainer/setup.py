"""What the RL loop trains: the policy (LoRA adapters or all its weights), the frozen reference, the optimizer.

``build_models`` loads the policy from ``--init`` (or the config's model), wraps it with LoRA adapters when
``trainer.lora_rank`` > 0 (the base weights freeze), keeps a frozen copy as the KL reference when training all
weights (with LoRA the reference is the base model itself, adapters off), and prepares the policy and AdamW with
accelerate. The learning rate warms up linearly over ``trainer.warmup_steps`` optimizer steps.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from accelerate import Accelerator

from slate.config import RunConfig
from slate.errors import ConfigError
from slate.logprobs import enable_checkpointing, grouped_token_logprobs, token_logprobs
from slate.rollout.engine import RolloutEngine
from slate.rollout.policy import Policy, load_policy
from slate.runtime import autocast_bf16, choose_bf16_autocast, describe_cpu

if TYPE_CHECKING:
    from slate.trainer.server_rollouts import ServerRollouts

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


def start_run(config: RunConfig, accelerator: Accelerator) -> None:
    """Refuse a launch with another number of processes than the recipe expects (per-process batches would grow or
    shrink), seed Python, NumPy and torch, and say which CPU this is (this project's CPUs differ, and timings depend
    on it). Every process takes the same decision before any collective, so each one says it."""
    tc = config.trainer
    if tc.num_processes is not None and tc.num_processes != accelerator.num_processes:
        raise ConfigError(f"process {accelerator.process_index}: trainer.num_processes={tc.num_processes} but "
                          f"{accelerator.num_processes} process(es) were launched: start with `accelerate launch "
                          f"--num_processes {tc.num_processes}` (or a configs/accelerate/ file), or set "
                          "trainer.num_processes to what you launch.")
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    torch.manual_seed(tc.seed)
    if accelerator.device.type == "cpu" and accelerator.is_main_process:
        logger.info("CPU: %s", ", ".join(f"{key} {value}" for key, value in describe_cpu().items()))


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


@dataclass
class TrainedModels:
    policy: Policy  # its model is the one being trained (PEFT-wrapped with LoRA)
    reference: torch.nn.Module | None  # a frozen copy for the KL term; None with LoRA (adapters off) or kl_coef 0
    module: torch.nn.Module  # PolicyLogprobs around the policy's model, as accelerate prepared it
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    bf16_autocast: bool  # the update's forward passes run under bfloat16 autocast


def build_models(config: RunConfig, init: Path | None, accelerator: Accelerator) -> TrainedModels:
    tc = config.trainer
    policy = load_policy(config.model, init)
    if config.model.gradient_checkpointing:
        enable_checkpointing(policy.model)
    if tc.lora_rank > 0:
        apply_lora(policy, tc.lora_rank, tc.lora_alpha, tc.lora_target_modules)
    reference = None
    if config.algorithm.kl_coef > 0 and tc.lora_rank == 0:
        reference = copy.deepcopy(policy.model).eval().requires_grad_(False)
    policy.model.to(accelerator.device)
    if reference is not None:
        reference.to(accelerator.device)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    # Not prepared by accelerate on purpose: a prepared scheduler steps once per process per step.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(tc.warmup_steps))
    bf16_autocast = choose_bf16_autocast(tc.bf16_autocast, accelerator.device, what="update",
                                         knob="trainer.bf16_autocast", fp32_part=", float32 head", log=logger,
                                         announce=accelerator.is_main_process)
    module = PolicyLogprobs(policy.model, config.rollout.temperature, bf16_autocast)
    module, optimizer = accelerator.prepare(module, optimizer)
    return TrainedModels(policy, reference, module, optimizer, scheduler, bf16_autocast)


def build_server_rollouts(config: RunConfig, engine: RolloutEngine, out_dir: Path,
                          accelerator: Accelerator) -> ServerRollouts | None:
    """Rollouts on vLLM servers with weight sync (``rollout.backend=vllm``), or None for in-process sampling. The
    server code (httpx, the sync) is imported only when it is used."""
    if config.rollout.backend != "vllm":
        return None
    from slate.trainer.server_rollouts import ServerRollouts

    return ServerRollouts(config, engine, out_dir, accelerator)
