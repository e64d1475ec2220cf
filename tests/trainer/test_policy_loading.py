"""A loaded checkpoint keeps PyTorch's own layers: transformers 5.x would otherwise swap some for Hugging Face Hub
kernels, fetched from the Hub when the model first enters train or eval mode on a GPU (an offline node then fails at
its first RL step: seen on an H100, docs/gpu.md). The constant is `slate.runtime.NO_HUB_KERNELS`."""

from __future__ import annotations

from pathlib import Path

from slate.rollout.policy import load_hf_policy


def test_a_loaded_policy_never_turns_on_hub_kernels(tiny_policy_dir: Path) -> None:
    model = load_hf_policy(tiny_policy_dir).model
    assert getattr(model, "use_kernels", False) is False
    for mode in (True, False):  # train() / eval() is where transformers would kernelize
        model.train(mode)
        assert getattr(model, "use_kernels", False) is False
        assert getattr(model, "kernels_mode", None) is None
