"""``build_judge``: the ``Judge`` a ``JudgeConfig`` describes (the twin of ``retrieval/factory.py``).

Each backend builds itself from the config (``OpenAIJudge.from_config``, ``HFJudge.from_config``); this module only
picks one, importing it when it is chosen (the openai client and torch models load only when asked for).
"""

from __future__ import annotations

from typing import Any

from slate.config import JudgeConfig
from slate.judge.oracle import OracleJudge
from slate.judge.types import Judge


def build_judge(config: JudgeConfig, *, hf_model: Any = None, hf_tokenizer: Any = None) -> Judge:
    """The judge ``config`` describes. For backend=hf, pass a loaded model and tokenizer, or set ``config.model``."""
    if config.backend == "oracle":
        return OracleJudge(noise=config.noise, seed=config.seed)
    if config.backend == "openai":
        from slate.judge.openai_backend import OpenAIJudge

        return OpenAIJudge.from_config(config)
    from slate.judge.hf_backend import HFJudge

    return HFJudge.from_config(config, hf_model, hf_tokenizer)
