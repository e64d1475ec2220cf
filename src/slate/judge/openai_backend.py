"""A judge served over the OpenAI chat-completions API: OpenAI itself, vLLM, SGLang or a llama.cpp server.

Per item: build the prompt (``prompts.build_messages``), look it up in the cache, else send one request at
temperature 0 and parse the reply (``parse.parse_reply``). Requests run concurrently, at most
``max_concurrency`` at a time; a timeout, connection error, 408/409/429 or 5xx is retried up to ``max_retries``
times after ``retry_base_delay_s * 2**attempt`` seconds. Other errors (400, 401, 404) are not retried. An item
whose request still fails, or whose reply holds no valid score, gets ``JudgeVerdict.failure`` (score 0,
``failed=True``) and is counted; nothing raises from ``score`` — ``failures.check_failures`` decides when too many
failures stop the run.

Identical items in one batch (k candidates often repeat a step) are sent once. The openai client's own retries are
off (``max_retries=0``) so that the policy above is the only one.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import openai

from slate.errors import JudgeError
from slate.judge.cache import JudgeCache, cache_key
from slate.judge.parse import parse_reply
from slate.judge.prompts import Message, build_messages
from slate.judge.types import JudgeItem, JudgeStats, JudgeVerdict

logger = logging.getLogger(__name__)

StructuredOutput = Literal["json_schema", "json_object"]

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "score": {"type": "integer", "enum": [-1, 0, 1]}},
    "required": ["reasoning", "score"],
    "additionalProperties": False,
}
_RETRY_STATUSES = frozenset({408, 409, 429})


def response_format_for(structured_output: StructuredOutput | None) -> dict[str, Any] | None:
    """The ``response_format`` body for each dialect.

    ``json_schema``: OpenAI / vLLM / SGLang, ``{"type": "json_schema", "json_schema": {"name", "strict", "schema"}}``.
    ``json_object``: llama.cpp server, ``{"type": "json_object", "schema": {...}}`` (grammar-constrained).
    """
    if structured_output is None:
        return None
    if structured_output == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": "judge_verdict", "strict": True, "schema": VERDICT_SCHEMA}}
    if structured_output == "json_object":
        return {"type": "json_object", "schema": VERDICT_SCHEMA}
    raise JudgeError(f"judge.structured_output={structured_output!r} is not known; use null, 'json_schema' "
                     "(OpenAI, vLLM, SGLang) or 'json_object' (llama.cpp server).")


def _is_retryable(exc: Exception) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUSES or exc.status_code >= 500
    return False


@dataclass(frozen=True)
class _Outcome:
    verdict: JudgeVerdict
    is_parse_failure: bool = False


class OpenAIJudge:
    """Scores items with a chat model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    def __init__(self, *, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 temperature: float = 0.0, max_new_tokens: int = 1024, max_concurrency: int = 16,
                 max_retries: int = 4, retry_base_delay_s: float = 1.0, timeout_s: float = 60.0,
                 cache: JudgeCache | None = None, structured_output: StructuredOutput | None = None) -> None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise JudgeError(f"judge: environment variable {api_key_env} is not set (the API key for "
                             f"{base_url or 'api.openai.com'}). Export it — any non-empty value works for a local "
                             "vLLM, SGLang or llama.cpp server — or name another variable in judge.api_key_env.")
        if max_concurrency < 1 or max_retries < 0:
            raise JudgeError(f"judge: max_concurrency={max_concurrency} must be >= 1 and max_retries={max_retries} "
                             ">= 0. Fix the judge section of the config.")
        self.name = f"openai:{model}"
        self.model = model
        self.base_url = base_url
        self.temperature = temperature
        self.max_new_tokens = max_new_tokens
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.retry_base_delay_s = retry_base_delay_s
        self.timeout_s = timeout_s
        self.cache = cache
        self.structured_output = structured_output
        self._response_format = response_format_for(structured_output)
        self._api_key = api_key
        self._stats = JudgeStats()

    def stats(self) -> dict[str, float]:
        return self._stats.read_and_reset()

    def request_params(self) -> dict[str, Any]:
        """Everything besides model and messages that shapes the reply; part of the cache key."""
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_new_tokens}
        if self._response_format is not None:
            params["response_format"] = self._response_format
        return params

    def score(self, items: list[JudgeItem]) -> list[JudgeVerdict]:
        """Synchronous ``ascore``. Works from a thread with no event loop; inside a running loop it runs the batch
        on a private thread (blocking the caller), so prefer ``await ascore`` there."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.ascore(items))
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.ascore(items)).result()

    async def ascore(self, items: list[JudgeItem]) -> list[JudgeVerdict]:
        structured = self._response_format is not None
        params = self.request_params()
        keys: list[str] = []
        unique: dict[str, list[Message]] = {}
        for item in items:
            messages = build_messages(item, structured=structured)
            key = cache_key(self.model, messages, params)
            keys.append(key)
            unique.setdefault(key, messages)
        outcomes: dict[str, _Outcome] = {}
        to_ask: list[tuple[str, list[Message]]] = []
        for key, messages in unique.items():
            cached = self.cache.get(key) if self.cache is not None else None
            verdict = parse_reply(cached, structured) if cached is not None else None
            if verdict is not None and not verdict.failed:
                outcomes[key] = _Outcome(verdict)
            else:
                to_ask.append((key, messages))
        if to_ask:
            async with openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, max_retries=0,
                                          timeout=self.timeout_s) as client:
                semaphore = asyncio.Semaphore(self.max_concurrency)
                asked = await asyncio.gather(*(self._ask(client, semaphore, key, messages)
                                               for key, messages in to_ask))
            outcomes.update(zip([key for key, _ in to_ask], asked, strict=True))
        results = [outcomes[key] for key in keys]
        failures = sum(o.verdict.failed for o in results)
        self._stats.add(cache_hits=len(items) - len(to_ask), failures=failures,
                        parse_failures=sum(o.is_parse_failure for o in results))
        if failures:
            logger.warning("judge %s at %s: %d/%d items failed and scored 0; first reason: %s", self.model,
                           self.base_url or "api.openai.com", failures, len(items),
                           next(o.verdict.explanation for o in results if o.verdict.failed))
        return [o.verdict for o in results]

    async def _ask(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, key: str,
                   messages: list[Message]) -> _Outcome:
        reply, error = await self._request(client, semaphore, messages)
        if reply is None:
            return _Outcome(JudgeVerdict.failure(error))
        verdict = parse_reply(reply, self._response_format is not None)
        if verdict.failed:
            logger.debug("judge reply did not parse (%s): %r", verdict.explanation, reply[:500])
            return _Outcome(verdict, is_parse_failure=True)
        if self.cache is not None:
            self.cache.put(key, reply)
        return _Outcome(verdict)

    async def _request(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore,
                       messages: list[Message]) -> tuple[str | None, str]:
        """One chat completion with retries: ``(reply text, "")`` or ``(None, why it failed)``."""
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": self.temperature,
                                  "max_tokens": self.max_new_tokens, "timeout": self.timeout_s}
        if self._response_format is not None:
            kwargs["response_format"] = self._response_format
        where = self.base_url or "api.openai.com"
        error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_base_delay_s * 2 ** (attempt - 1))
            try:
                async with semaphore:
                    self._stats.add(calls=0 if attempt else 1, retries=1 if attempt else 0)
                    response = await client.chat.completions.create(**kwargs)
            except openai.OpenAIError as exc:
                error = f"{type(exc).__name__} from {where}: {str(exc)[:300]}"
                if not _is_retryable(exc):
                    return None, f"request not retried: {error}. Check judge.base_url, judge.model and the key."
                logger.debug("judge request attempt %d/%d failed: %s", attempt + 1, self.max_retries + 1, error)
                continue
            usage = response.usage
            if usage is not None:
                self._stats.add(prompt_tokens=usage.prompt_tokens or 0,
                                completion_tokens=usage.completion_tokens or 0)
            if not response.choices:
                return None, f"reply from {where} has no choices"
            return response.choices[0].message.content or "", ""
        return None, f"request failed after {self.max_retries + 1} attempts: {error}"
