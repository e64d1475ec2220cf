"""A judge served over the OpenAI chat-completions API: OpenAI itself, vLLM, SGLang or a llama.cpp server.

Per item: build the prompt (``prompts.build_messages``), look it up in the cache, else send one request at
temperature 0 and parse the reply (``parse.parse_reply``). Requests run concurrently, at most
``max_concurrency`` at a time; a timeout, connection error, 408/409/429, 5xx or a 200 whose body is not JSON is
retried up to ``max_retries`` times after ``retry_base_delay_s * 2**attempt`` seconds. Other errors (400, 401,
404) are not retried. An item whose request still fails, or whose reply holds no valid score, gets
``JudgeVerdict.failure`` (score 0, ``failed=True``) and is counted; nothing raises from ``score`` —
``failures.check_failures`` decides when too many failures stop the run.

Identical items in one batch (k candidates often repeat a step) are sent once. The openai client's own retries are
off (``max_retries=0``) so that the policy above is the only one.

``mode="group"`` (``group.py``): the siblings of one prefix on one dimension go in one request. A group whose
reply does not hold exactly one valid score per candidate, or whose request the server refused (a 400 for a prompt
over its context, say), is judged again item by item, counted in ``group_fallbacks``. A group whose server could not
be reached after the retries fails its items without asking k more times: the failure share then stops the run.

``mode="group_steps"`` (``step_group.py``): the siblings of one prefix on all of their step's dimensions (thinking and
query, or thinking and answer) go in one request. A step group whose reply fails is judged again in per-dimension
groups (then, for those that fail too, item by item), each fallback counted in ``group_fallbacks``. With
``max_prefixes_per_request`` > 1, step groups of one action kind from up to that many prefixes share one request
(``step_group.step_groups``), at most ``max_group_size`` candidates in all.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion

from slate.errors import JudgeError
from slate.judge.cache import JudgeCache, cache_key
from slate.judge.group import (
    build_group_messages,
    group_response_format,
    parse_group_reply,
    shared_part,
    sibling_groups,
)
from slate.judge.parse import parse_reply
from slate.judge.prompts import Message, build_messages
from slate.judge.step_group import (
    Step,
    build_step_group_messages,
    find_steps,
    parse_step_group_reply,
    step_dimensions,
    step_group_response_format,
    step_groups,
)
from slate.judge.types import JudgeItem, JudgeStats, JudgeVerdict

logger = logging.getLogger(__name__)

StructuredOutput = Literal["json_schema", "json_object"]
JudgeMode = Literal["item", "group", "group_steps"]
JUDGE_MODES: tuple[str, ...] = ("item", "group", "group_steps")

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "score": {"type": "integer", "enum": [-1, 0, 1]}},
    "required": ["reasoning", "score"],
    "additionalProperties": False,
}
LLAMA_CPP_REASONING_CHARS = 400
_RETRY_STATUSES = frozenset({408, 409, 429})


def response_format_for(structured_output: StructuredOutput | None) -> dict[str, Any] | None:
    """The ``response_format`` body for each dialect.

    ``json_schema``: OpenAI / vLLM / SGLang, ``{"type": "json_schema", "json_schema": {"name", "strict", "schema"}}``.
    ``json_object``: llama.cpp server, ``{"type": "json_object", "schema": {...}}`` (grammar-constrained); there the
    reasoning is also capped at ``LLAMA_CPP_REASONING_CHARS`` characters, so that the grammar closes the string and
    reaches the score before ``max_tokens`` (a small model otherwise reasons until it is cut off, unparsable), and
    a group's candidates are fixed in order (``fixed_candidate_order``).
    """
    if structured_output is None:
        return None
    if structured_output == "json_schema":
        return {"type": "json_schema",
                "json_schema": {"name": "judge_verdict", "strict": True, "schema": VERDICT_SCHEMA}}
    if structured_output == "json_object":
        return {"type": "json_object", "schema": llama_cpp_schema(VERDICT_SCHEMA)}
    raise JudgeError(f"judge.structured_output={structured_output!r} is not known; use null, 'json_schema' "
                     "(OpenAI, vLLM, SGLang) or 'json_object' (llama.cpp server).")


def llama_cpp_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as the ``json_object`` dialect sends it: reasoning capped (``capped_reasoning``) and every list of
    candidate entries fixed in order (``fixed_candidate_order``)."""
    return fixed_candidate_order(capped_reasoning(schema))


def fixed_candidate_order(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every array of ``{"candidate": enum 1..k, ...}`` entries turned into a tuple
    (``prefixItems``) whose i-th entry must name candidate i.

    With an enum the grammar lets a small judge write one number twice and skip another, which fails the whole
    group reply (SmolLM2-135M under llama.cpp's grammar did so in 10 of 10 packed step-group replies of an audit);
    with the order fixed it can only give each candidate its score. The parser checks the numbers all the same."""
    def fix(node: Any) -> Any:
        if isinstance(node, list):
            return [fix(value) for value in node]
        if not isinstance(node, dict):
            return node
        node = {key: fix(value) for key, value in node.items()}
        entry = node.get("items")
        candidate = entry.get("properties", {}).get("candidate") if isinstance(entry, dict) else None
        if node.get("type") == "array" and isinstance(candidate, dict) and "enum" in candidate:
            numbers = candidate["enum"]
            node = {"type": "array", "items": False, "minItems": len(numbers), "maxItems": len(numbers),
                    "prefixItems": [{**entry, "properties": {**entry["properties"],
                                                             "candidate": {"type": "integer", "const": number}}}
                                    for number in numbers]}
        return node
    return fix(schema)


def capped_reasoning(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``reasoning`` string property limited to ``LLAMA_CPP_REASONING_CHARS`` characters."""
    def cap(node: Any) -> Any:
        if isinstance(node, dict):
            capped = {key: cap(value) for key, value in node.items()}
            if isinstance(capped.get("properties"), dict) and "reasoning" in capped["properties"]:
                capped["properties"]["reasoning"] = {"type": "string", "maxLength": LLAMA_CPP_REASONING_CHARS}
            return capped
        if isinstance(node, list):
            return [cap(value) for value in node]
        return node
    return cap(schema)


def _is_retryable(exc: Exception) -> bool:
    if isinstance(exc, openai.APIConnectionError | ValueError):  # includes APITimeoutError; ValueError: see below
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRY_STATUSES or exc.status_code >= 500
    return False


@dataclass(frozen=True)
class _Outcome:
    verdict: JudgeVerdict
    is_parse_failure: bool = False


@dataclass(frozen=True)
class _GroupResult:
    """A group's verdicts, candidate 1 first, or None with the reason to judge its items one by one."""

    verdicts: list[JudgeVerdict] | None
    reason: str = ""
    is_from_cache: bool = False


@dataclass(frozen=True)
class _StepGroupResult:
    """A step group's verdicts per dimension, candidate 1 first, or None with the reason to fall back."""

    verdicts: dict[str, list[JudgeVerdict]] | None
    reason: str = ""
    is_from_cache: bool = False


@dataclass(frozen=True)
class _Reply:
    """One request's result: the reply text, or why there is none and whether the server was unreachable."""

    text: str | None
    error: str = ""
    is_unreachable: bool = False


class OpenAIJudge:
    """Scores items with a chat model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    def __init__(self, *, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 temperature: float = 0.0, max_new_tokens: int = 1024, max_concurrency: int = 16,
                 max_retries: int = 4, retry_base_delay_s: float = 1.0, timeout_s: float = 60.0,
                 cache: JudgeCache | None = None, structured_output: StructuredOutput | None = None,
                 mode: JudgeMode = "item", max_group_size: int = 8, max_prefixes_per_request: int = 1) -> None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise JudgeError(f"judge: environment variable {api_key_env} is not set (the API key for "
                             f"{base_url or 'api.openai.com'}). Export it — any non-empty value works for a local "
                             "vLLM, SGLang or llama.cpp server — or name another variable in judge.api_key_env.")
        if max_concurrency < 1 or max_retries < 0 or max_group_size < 2 or max_prefixes_per_request < 1:
            raise JudgeError(f"judge: max_concurrency={max_concurrency} must be >= 1, max_retries={max_retries} "
                             f">= 0, max_group_size={max_group_size} >= 2 and max_prefixes_per_request="
                             f"{max_prefixes_per_request} >= 1. Fix the judge section of the config.")
        if mode not in JUDGE_MODES:
            raise JudgeError(f"judge.mode={mode!r} is not known; use 'item', 'group' or 'group_steps'.")
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
        self.mode = mode
        self.max_group_size = max_group_size
        self.max_prefixes_per_request = max_prefixes_per_request
        self._response_format = response_format_for(structured_output)
        self._api_key = api_key
        self._stats = JudgeStats()

    def stats(self) -> dict[str, float]:
        return self._stats.read_and_reset()

    def request_params(self, group_size: int | None = None) -> dict[str, Any]:
        """Everything besides model and messages that shapes the reply; part of the cache key. ``group_size``:
        the parameters of a group request of that many candidates (its schema names them)."""
        # a group reply holds one verdict per candidate: its cap is that of one verdict times their number
        max_tokens = self.max_new_tokens * (group_size or 1)
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": max_tokens}
        response_format = (self._response_format if group_size is None
                           else group_response_format(self.structured_output, group_size))
        if response_format is not None:
            params["response_format"] = response_format
        return params

    def step_group_params(self, k: int, dimensions: tuple[str, ...]) -> dict[str, Any]:
        """``request_params`` of a step-group request: one verdict's cap per candidate and dimension."""
        params: dict[str, Any] = {"temperature": self.temperature,
                                  "max_tokens": self.max_new_tokens * k * len(dimensions)}
        response_format = step_group_response_format(self.structured_output, k, dimensions)
        if response_format is not None:
            params["response_format"] = response_format
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
        unique: dict[str, JudgeItem] = {}
        for item in items:
            key = cache_key(self.model, build_messages(item, structured=structured), params)
            keys.append(key)
            unique.setdefault(key, item)
        outcomes: dict[str, _Outcome] = {}
        for key in unique:
            cached = self.cache.get(key) if self.cache is not None else None
            verdict = parse_reply(cached, structured) if cached is not None else None
            if verdict is not None and not verdict.failed:
                outcomes[key] = _Outcome(verdict)
        pending = [key for key in unique if key not in outcomes]
        # Siblings one after another: a server that keeps the last prompt's KV cache (llama.cpp) then reuses the
        # shared rubric and trajectory; one with a prefix cache (vLLM, SGLang) does not mind the order.
        first_seen: dict[tuple[Any, ...], int] = {}
        for key in pending:
            first_seen.setdefault(shared_part(unique[key]), len(first_seen))
        pending.sort(key=lambda key: first_seen[shared_part(unique[key])])
        sent = 0
        if pending:
            async with openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key, max_retries=0,
                                          timeout=self.timeout_s) as client:
                semaphore = asyncio.Semaphore(self.max_concurrency)
                if self.mode == "group_steps":
                    pending, sent = await self._score_step_groups(client, semaphore, items, keys, pending, unique,
                                                                  outcomes)
                if self.mode in ("group", "group_steps"):
                    pending, answered = await self._score_groups(client, semaphore, pending, unique, outcomes)
                    sent += answered
                asked = await asyncio.gather(*(self._ask(client, semaphore, key, unique[key]) for key in pending))
            outcomes.update(zip(pending, asked, strict=True))
            sent += len(pending)
        results = [outcomes[key] for key in keys]
        failures = sum(o.verdict.failed for o in results)
        self._stats.add(cache_hits=len(items) - sent, failures=failures,
                        parse_failures=sum(o.is_parse_failure for o in results))
        if failures:
            logger.warning("judge %s at %s: %d/%d items failed and scored 0; first reason: %s", self.model,
                           self.base_url or "api.openai.com", failures, len(items),
                           next(o.verdict.explanation for o in results if o.verdict.failed))
        return [o.verdict for o in results]

    async def _score_groups(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, pending: list[str],
                            unique: dict[str, JudgeItem], outcomes: dict[str, _Outcome]) -> tuple[list[str], int]:
        """Judge sibling groups in one request each, filling ``outcomes``; returns the keys still to judge one by
        one (lone items and the groups that fell back) and how many items the group requests answered."""
        groups = [[pending[i] for i in members]
                  for members in sibling_groups([unique[key] for key in pending], self.max_group_size)]
        lone = [group[0] for group in groups if len(group) == 1]
        groups = [group for group in groups if len(group) > 1]
        results = await asyncio.gather(*(self._ask_group(client, semaphore, [unique[key] for key in group])
                                         for group in groups))
        fallback: list[str] = []
        reasons: list[str] = []
        answered = 0
        for group, result in zip(groups, results, strict=True):
            if result.verdicts is None:
                fallback += group
                reasons.append(result.reason)
                continue
            outcomes.update(zip(group, (_Outcome(v) for v in result.verdicts), strict=True))
            answered += 0 if result.is_from_cache else len(group)
        if reasons:
            self._stats.add(group_fallbacks=len(reasons))
            logger.warning("judge %s: %d/%d group replies held no valid score for each candidate; judging their %d "
                           "items one by one; first reason: %s", self.model, len(reasons), len(groups),
                           len(fallback), reasons[0])
        return lone + fallback, answered

    async def _score_step_groups(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore,
                                 items: list[JudgeItem], keys: list[str], pending: list[str],
                                 unique: dict[str, JudgeItem], outcomes: dict[str, _Outcome]) -> tuple[list[str], int]:
        """Judge the batch's candidate steps in one request per step group, filling ``outcomes``; returns the keys
        still to judge (items not in a step, and the step groups that fell back) and how many items were answered."""
        is_pending = set(pending)
        pairs: list[tuple[str, str]] = []
        for think, action in find_steps(items):
            pair = (keys[think], keys[action])
            if pair[0] in is_pending and pair[1] in is_pending and pair not in pairs:
                pairs.append(pair)
        groups = [[pairs[i] for i in members]
                  for members in step_groups([(unique[t], unique[a]) for t, a in pairs], self.max_group_size,
                                             self.max_prefixes_per_request)]
        results = await asyncio.gather(*(self._ask_step_group(client, semaphore, [(unique[t], unique[a])
                                                                                   for t, a in group])
                                         for group in groups))
        reasons: list[str] = []
        answered = 0
        for group, result in zip(groups, results, strict=True):
            if result.verdicts is None:
                reasons.append(result.reason)
                continue
            think_verdicts = result.verdicts["think"]
            action_verdicts = next(v for dimension, v in result.verdicts.items() if dimension != "think")
            for (think_key, action_key), think, action in zip(group, think_verdicts, action_verdicts, strict=True):
                for key, verdict in ((think_key, think), (action_key, action)):
                    if key not in outcomes:  # a thinking shared by two candidates keeps its first verdict
                        outcomes[key] = _Outcome(verdict)
                        answered += 0 if result.is_from_cache else 1
        if reasons:
            self._stats.add(group_fallbacks=len(reasons))
            logger.warning("judge %s: %d/%d step-group replies held no valid score for each candidate and dimension; "
                           "judging their items in per-dimension groups; first reason: %s", self.model, len(reasons),
                           len(groups), reasons[0])
        return [key for key in pending if key not in outcomes], answered

    async def _ask_step_group(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore,
                              steps: list[Step]) -> _StepGroupResult:
        structured = self._response_format is not None
        dimensions = step_dimensions(steps[0])
        messages = build_step_group_messages(steps, structured=structured)
        params = self.step_group_params(len(steps), dimensions)
        key = cache_key(self.model, messages, params)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            parsed = parse_step_group_reply(cached, len(steps), dimensions, structured)
            if not isinstance(parsed, str):
                return _StepGroupResult(parsed, is_from_cache=True)
        reply = await self._request(client, semaphore, messages, params)
        self._stats.add(group_calls=1)
        if reply.text is None:
            if reply.is_unreachable:
                return _StepGroupResult({d: [JudgeVerdict.failure(reply.error)] * len(steps) for d in dimensions})
            return _StepGroupResult(None, reason=reply.error)
        parsed = parse_step_group_reply(reply.text, len(steps), dimensions, structured)
        if isinstance(parsed, str):
            logger.debug("step-group reply did not parse (%s): %r", parsed, reply.text[:500])
            return _StepGroupResult(None, reason=parsed)
        if self.cache is not None:
            self.cache.put(key, reply.text)
        return _StepGroupResult(parsed)

    async def _ask_group(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore,
                         items: list[JudgeItem]) -> _GroupResult:
        structured = self._response_format is not None
        messages = build_group_messages(items, structured=structured)
        params = self.request_params(group_size=len(items))
        key = cache_key(self.model, messages, params)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            parsed = parse_group_reply(cached, len(items), structured)
            if not isinstance(parsed, str):
                return _GroupResult(parsed, is_from_cache=True)
        reply = await self._request(client, semaphore, messages, params)
        self._stats.add(group_calls=1)
        if reply.text is None:
            if reply.is_unreachable:
                return _GroupResult([JudgeVerdict.failure(reply.error)] * len(items))
            return _GroupResult(None, reason=reply.error)
        parsed = parse_group_reply(reply.text, len(items), structured)
        if isinstance(parsed, str):
            logger.debug("group reply did not parse (%s): %r", parsed, reply.text[:500])
            return _GroupResult(None, reason=parsed)
        if self.cache is not None:
            self.cache.put(key, reply.text)
        return _GroupResult(parsed)

    async def _ask(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, key: str,
                   item: JudgeItem) -> _Outcome:
        structured = self._response_format is not None
        reply = await self._request(client, semaphore, build_messages(item, structured=structured),
                                    self.request_params())
        if reply.text is None:
            return _Outcome(JudgeVerdict.failure(reply.error))
        verdict = parse_reply(reply.text, structured)
        if verdict.failed:
            logger.debug("judge reply did not parse (%s): %r", verdict.explanation, reply.text[:500])
            return _Outcome(verdict, is_parse_failure=True)
        if self.cache is not None:
            self.cache.put(key, reply.text)
        return _Outcome(verdict)

    async def _request(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, messages: list[Message],
                       params: dict[str, Any]) -> _Reply:
        """One chat completion with retries: the reply text, or why there is none."""
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "timeout": self.timeout_s, **params}
        where = self.base_url or "api.openai.com"
        error = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_base_delay_s * 2 ** (attempt - 1))
            try:
                async with semaphore:
                    self._stats.add(calls=0 if attempt else 1, retries=1 if attempt else 0)
                    response = await client.chat.completions.create(**kwargs)
            except (openai.OpenAIError, ValueError) as exc:
                # The client raises json's ValueError, not an OpenAIError, for a 200 whose body is empty or not JSON.
                error = f"{type(exc).__name__} from {where}: {str(exc)[:300]}"
                if not _is_retryable(exc):
                    return _Reply(None, f"request not retried: {error}. Check judge.base_url, judge.model and the "
                                  "key.")
                logger.debug("judge request attempt %d/%d failed: %s", attempt + 1, self.max_retries + 1, error)
                continue
            if not isinstance(response, ChatCompletion):  # a body without a JSON content type comes back as text
                return _Reply(None, f"reply from {where} is not a chat completion: {str(response)[:200]!r}")
            usage = response.usage
            if usage is not None:
                self._stats.add(prompt_tokens=usage.prompt_tokens or 0,
                                completion_tokens=usage.completion_tokens or 0)
            if not response.choices:
                return _Reply(None, f"reply from {where} has no choices")
            return _Reply(response.choices[0].message.content or "")
        return _Reply(None, f"request failed after {self.max_retries + 1} attempts: {error}", is_unreachable=True)
