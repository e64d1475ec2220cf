"""Presets layered in order, and the hardness study's settings and model sizes (configs/hardness/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from slate.config import load_config
from slate.errors import ConfigError
from slate.rollout.policy import tiny_model_config

REPO = Path(__file__).resolve().parents[1]
HARDNESS = REPO / "configs" / "hardness"


def test_presets_layer_key_by_key_and_overrides_win(tmp_path: Path) -> None:
    base, layer = tmp_path / "base.yaml", tmp_path / "layer.yaml"
    base.write_text("rollout:\n  max_steps: 5\n  group_size: 5\ntrainer:\n  lr: 0.001\n")
    layer.write_text("rollout:\n  max_steps: 13\n")
    config = load_config([base, layer], ["trainer.lr=0.5"])
    assert config.rollout.max_steps == 13  # the later preset replaces the key ...
    assert config.rollout.group_size == 5  # ... and keeps its siblings
    assert config.trainer.lr == 0.5  # overrides come last
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such config file"):
        load_config([base, tmp_path / "missing.yaml"])


def test_every_setting_layers_over_every_method_preset() -> None:
    for setting in ("default", "medium", "hard"):
        for preset in ("tiny", "searchr1-tiny", "stepsearch-tiny", "slate-tiny"):
            config = load_config([REPO / "configs" / f"{preset}.yaml", HARDNESS / f"{setting}.yaml"])
            assert config.rollout.max_steps >= 5
    hard = load_config([REPO / "configs" / "slate-tiny.yaml", HARDNESS / "hard.yaml"])
    assert hard.world.max_hops == 6 and hard.rollout.budget_slack is not None
    assert hard.sft.vague_habit_rate > 0.5  # a habit imitation keeps
    # the cap holds the demonstrator's longest plan: a vague and a proper search per hop, and the answer
    assert hard.rollout.max_steps >= 2 * hard.world.max_hops + 1


def _parameters(size_file: str | None) -> int:
    presets = [REPO / "configs" / "tiny.yaml", *([HARDNESS / size_file] if size_file else [])]
    tiny = load_config(presets).model.tiny
    with torch.device("meta"):  # shapes only: no memory, no init
        model = AutoModelForCausalLM.from_config(tiny_model_config(tiny, vocab_size=5247))
    return sum(p.numel() for p in model.parameters())


def test_the_three_policy_sizes_span_about_nine_times_in_parameters() -> None:
    # tied embeddings 5,247 x h, then per layer 4 h^2 (attention, head size 64) + 3 h m (MLP) + 2 h (norms), + h:
    # small h=64 m=192 L=2: 335,808 + 2 (16,384 + 36,864 + 128) + 64 = 442,624
    # preset h=128 m=384 L=3: 671,616 + 3 (65,536 + 147,456 + 256) + 128 = 1,311,488
    # large h=256 m=768 L=3: 1,343,232 + 3 (262,144 + 589,824 + 512) + 256 = 3,900,928
    small, base, large = _parameters("size-small.yaml"), _parameters(None), _parameters("size-large.yaml")
    assert (small, base, large) == (442_624, 1_311_488, 3_900_928)
    assert 8 < large / small < 12
