"""The dry-run plan's arithmetic: parameter counts against real models built from config, LoRA counts against
PEFT, and the batch arithmetic by hand."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from slate.config import load_config
from slate.errors import SlateError
from slate.trainer.plan import KNOWN_SHAPES, ModelShape, build_plan


def _row(plan, section: str, key: str) -> str:
    return dict(plan.sections[section])[key]


@pytest.mark.parametrize("qwen2", [True, False])
def test_parameter_count_matches_a_model_built_from_config(qwen2: bool) -> None:
    shape = ModelShape(64, 2, 4, 2, 96, 500, tie_embeddings=not qwen2, qkv_bias=qwen2)
    cls = Qwen2Config if qwen2 else LlamaConfig
    config = cls(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=96, vocab_size=500, tie_word_embeddings=not qwen2)
    model = AutoModelForCausalLM.from_config(config)
    assert shape.num_parameters == sum(p.numel() for p in model.parameters())


def test_known_shapes_give_the_published_sizes() -> None:
    # the parameter counts of the released checkpoints (model cards: 0.49B, 3.09B, 7.61B, 135M)
    assert KNOWN_SHAPES["qwen2.5-0.5b"].num_parameters == 494_032_768
    assert KNOWN_SHAPES["qwen2.5-3b"].num_parameters == 3_085_938_688
    assert KNOWN_SHAPES["qwen2.5-7b"].num_parameters == 7_615_616_512
    assert KNOWN_SHAPES["smollm2-135m"].num_parameters == 134_515_008


def test_lora_count_matches_peft() -> None:
    from peft import LoraConfig, get_peft_model

    shape = ModelShape(64, 2, 4, 2, 96, 500, tie_embeddings=True)
    config = LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=96, vocab_size=500, tie_word_embeddings=True)
    for targets in ("all-linear", ["q_proj", "v_proj"]):
        model = get_peft_model(AutoModelForCausalLM.from_config(config),
                               LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM"))
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert shape.lora_parameters(4, targets) == trainable


def test_batch_arithmetic_by_hand() -> None:
    config = load_config(None, ["trainer.method=searchr1", "trainer.questions_per_step=12", "rollout.group_size=4",
                                "trainer.minibatch_size=5", "trainer.micro_batch_size=5", "trainer.update_epochs=2",
                                "trainer.num_processes=2", "rollout.max_steps=3", "rollout.max_step_tokens=10"])
    plan = build_plan(config, launched_processes=2)
    # 12 x 4 = 48 episodes, 24 per process; ceil(24 / 5) = 5 minibatches x 2 epochs = 10 optimizer steps
    assert _row(plan, "batch", "questions × k") == "12 × 4 = 48 episodes (24 per process)"
    assert _row(plan, "batch", "optimizer steps per RL step").startswith("10 ")
    # policy tokens: 48 episodes x (3 steps + the forced answer) x 10 tokens = 1,920
    assert _row(plan, "batch", "policy tokens per step").startswith("≤ 1,920 ")
    slate = build_plan(config.model_copy(update={"trainer": config.trainer.model_copy(update={
        "method": "slate", "tree_packing": False})}), launched_processes=2)
    # 12 questions x 4 steps = 48 groups, 24 per process; 5 // 4 = 1 group per minibatch -> 24 x 2 epochs = 48
    assert _row(slate, "batch", "optimizer steps per RL step").startswith("≤ 48 ")
    assert _row(slate, "batch", "samples per step").startswith("≤ 192 ")
    trees = build_plan(config.model_copy(update={"trainer": config.trainer.model_copy(update={
        "method": "slate", "tree_packing": True})}), launched_processes=2)
    # tree packing: 6 questions per process, each up to 4 x 4 = 16 samples > 5: one per minibatch -> 6 x 2 = 12
    assert _row(trees, "batch", "optimizer steps per RL step").startswith("≤ 12 ")


def test_plan_refuses_more_processes_than_launched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(SlateError, match="num_processes=8 but 4"):
        build_plan(load_config(None, ["trainer.num_processes=8"]))


def test_memory_estimate_by_hand() -> None:
    # SmolLM2-135M in float32, full training with a reference copy: weights 4P + reference 4P + grads and two AdamW
    # moments 12P = 20P bytes
    config = load_config(None, ["model.source=smollm2", "model.dtype=float32"])
    plan = build_plan(config, launched_processes=1)
    params = KNOWN_SHAPES["smollm2-135m"].num_parameters
    expected = f"{20 * params / 2**30:.1f} GiB replicated"
    assert _row(plan, "memory", "weights + reference + grads + AdamW").startswith(expected)


def test_the_information_gain_scoring_pass_is_in_the_plan_by_hand() -> None:
    # SmolLM2-135M, float32, LoRA: KV per token 2 x 30 layers x kv 192 (3 of 9 heads of 64) x 4 bytes = 46,080 B;
    # a pass of 8,192 tokens copied for k + 1 = 6 continuations: 8,192 x 6 x 46,080 B = 2.1 GiB; no frozen copy
    config = load_config(None, ["trainer.method=slate_ig", "model.source=smollm2", "model.dtype=float32",
                                "trainer.lora_rank=16"])
    row = _row(build_plan(config, launched_processes=1), "memory", "information-gain scoring (no grad)")
    shape = KNOWN_SHAPES["smollm2-135m"]
    assert (shape.num_layers, shape.kv_size) == (30, 192)
    assert row.startswith(f"≤ {8192 * 6 * 2 * 30 * 192 * 4 / 2**30:.1f} GiB per pass")
    assert "frozen copy" not in row
    searchr1 = build_plan(load_config(None, ["model.source=smollm2"]), launched_processes=1)
    assert not any(key == "information-gain scoring (no grad)" for key, _ in searchr1.sections["memory"])
