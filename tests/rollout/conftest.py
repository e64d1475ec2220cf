"""The tiny policy used by the rollout tests: a real tokenizer and a small random model (shapes, context)."""

from __future__ import annotations

import pytest

from slate.config import TinyModelConfig
from slate.rollout.policy import Policy, build_tiny_policy

TEXTS = ["Dalvin\nDalvin is a city in Orvania. Orvania is a country. Who founded Velmora Labs? Kesh Fenn founded it.",
         "Question: where is Dalvin? I need the country of Dalvin. The answer is Orvania. Step budget."] * 20


@pytest.fixture(scope="module")
def policy() -> Policy:
    return build_tiny_policy(TEXTS, TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                                                    max_positions=1024, vocab_size=400), seed=0)


