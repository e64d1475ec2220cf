"""A judge served over the OpenAI chat-completions API: OpenAI itself, vLLM, SGLang or a llama.cpp server.

Per item: build the prompt (``prompts.build_messages``), look it up in the cache, else send one request at
temperature 0 and parse the reply (``parse.parse_reply``). Requests run concurrently, at most
``max_concurrency`` at a time; a timeout, connection error, 408/409/429, 5xx or a 200 whose body is not JSON is
retried up to ``max_retries`` times after ``retry_base_delay_s * 2**attempt`` seconds. Other errors (400, 401,
404) are not retried. An item whose request still fails, or whose reply holds no valid score, gets
``JudgeVerdict.failure`` (score 0, ``failed=True``) and is counted; nothing else raises from ``score`` —
``failures.check_failures`` decides when too many failures stop the run.

Identical items in one batch (k candidates often repeat a step) are sent once. The openai client's own retries are
off (``max_retries=0``) so that the policy above is the only one.

Two mistakes of configuration raise, as one ``JudgeError`` naming the URL, the model and the fix, because no retry
mends them (``server_check.py``): a server that does not answer the judge's first contact (``GET /models`` before
its first request, with the same retries), and a 404 to a chat request (a model the server does not serve, or a
``base_url`` without ``/v1``). A server that goes away after the first contact is an outage: its items fail and
``failures.check_failures`` stops the run.

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
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletion

from slate.config import JudgeConfig
from slate.errors import JudgeError
from slate.judge.cache import JudgeCache, cache_key
from slate.judge.group import build_group_messages, shared_part, sibling_groups
from slate.judge.parse import parse_reply
from slate.judge.prompts import Message, build_messages
from slate.judge.replies import GROUP, read_verdicts
from slate.judge.schemas import (
    LLAMA_CPP_REASONING_CHARS,
    VERDICT_SCHEMA,
    StructuredOutput,
    group_schema,
    response_format,
    step_group_schema,
)
from slate.judge.server_check import refusal, served_models
from slate.judge.step_group import StepItems, build_step_group_messages, find_steps, step_dimensions, step_groups
from slate.judge.types import JudgeItem, JudgeStats, JudgeVerdict

logger = logging.getLogger(__name__)

JudgeMode = Literal["item", "group", "group_steps"]
_RETRY_STATUSES = frozenset({408, 409, 429})


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
class _BatchResult:
    """A group or step group's verdicts per dimension, candidate 1 first, or None with the reason to fall back to
    smaller requests."""

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
                 mode: JudgeMode = "item", max_group_size: int = 8, max_prefixes_per_request: int = 1,
                 max_reasoning_chars: int = LLAMA_CPP_REASONING_CHARS) -> None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise JudgeError(f"judge: environment variable {api_key_env} is not set (the API key for "
                             f"{base_url or 'api.openai.com'}). Export it — any non-empty value works for a local "
                             "vLLM, SGLang or llama.cpp server — or name another variable in judge.api_key_env.")
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
        self.max_reasoning_chars = max_reasoning_chars
        self._response_format = response_format(structured_output, VERDICT_SCHEMA, "judge_verdict",
                                                max_reasoning_chars)
        self._api_key = api_key
        self._stats = JudgeStats()
        self._is_server_checked = False
        self._served_models: list[str] | None = None  # what GET /models listed; None: not listed
        self._refusal: JudgeError | None = None  # a 404 in the current batch: raised once the batch is done

    @classmethod
    def from_config(cls, config: JudgeConfig) -> OpenAIJudge:
        """The judge ``config`` (``judge.backend=openai``) describes, with its reply cache if it names one."""
        return cls(model=config.model, base_url=config.base_url, api_key_env=config.api_key_env,
                   temperature=config.temperature, max_new_tokens=config.max_new_tokens,
                   max_concurrency=config.max_concurrency, max_retries=config.max_retries,
                   retry_base_delay_s=config.retry_base_delay_s, timeout_s=config.timeout_s,
                   cache=JudgeCache(config.cache_path) if config.cache_path else None,
                   structured_output=config.structured_output, mode=config.mode,
                   max_group_size=config.max_group_size, max_prefixes_per_request=config.max_prefixes_per_request,
                   max_reasoning_chars=config.max_reasoning_chars)

    def metrics(self) -> dict[str, float]:
        return self._stats.metrics()

    def request_params(self, group_size: int | None = None) -> dict[str, Any]:
        """Everything besides model and messages that shapes the reply; part of the cache key. ``group_size``:
        the parameters of a group request of that many candidates (its schema names them)."""
        # a group reply holds one verdict per candidate: its cap is that of one verdict times their number
        max_tokens = self.max_new_tokens * (group_size or 1)
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": max_tokens}
        body = (self._response_format if group_size is None
                else response_format(self.structured_output, group_schema(group_size), "judge_group_verdicts",
                                     self.max_reasoning_chars))
        if body is not None:
            params["response_format"] = body
        return params

    def step_group_params(self, k: int, dimensions: tuple[str, ...]) -> dict[str, Any]:
        """``request_params`` of a step-group request: one verdict's cap per candidate and dimension."""
        params: dict[str, Any] = {"temperature": self.temperature,
                                  "max_tokens": self.max_new_tokens * k * len(dimensions)}
        body = response_format(self.structured_output, step_group_schema(k, dimensions), "judge_step_group_verdicts",
                               self.max_reasoning_chars)
        if body is not None:
            params["response_format"] = body
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
        self._refusal = None
        if pending:
            if not self._is_server_checked:
                await self.check_server()
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
            if self._refusal is not None:
                raise self._refusal
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

    @property
    def where(self) -> str:
        """The API root requests go to."""
        return (self.base_url or "https://api.openai.com/v1").rstrip("/")

    async def check_server(self) -> list[str] | None:
        """The first contact (``server_check.served_models``): the served model names, or None when the server
        lists none. Raises ``JudgeError`` when the server does not answer at all."""
        self._served_models = await served_models(self.where, self.model, self._api_key, self.timeout_s,
                                                  self.max_retries, self.retry_base_delay_s)
        self._is_server_checked = True
        return self._served_models

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
            outcomes.update(zip(group, (_Outcome(v) for v in result.verdicts[GROUP]), strict=True))
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

    async def _ask_batched(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, messages: list[Message],
                           params: dict[str, Any], k: int, dimensions: tuple[str, ...]) -> _BatchResult:
        """One request scoring ``k`` candidates on ``dimensions`` (a group: ``(GROUP,)``), served from the cache when
        a valid reply is there. An unreachable server fails every verdict; any other failure asks for a fallback."""
        structured = self._response_format is not None
        key = cache_key(self.model, messages, params)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            parsed = read_verdicts(cached, k, dimensions, structured)
            if not isinstance(parsed, str):
                return _BatchResult(parsed, is_from_cache=True)
        reply = await self._request(client, semaphore, messages, params)
        self._stats.add(group_calls=1)
        if reply.text is None:
            if reply.is_unreachable:
                return _BatchResult({d: [JudgeVerdict.failure(reply.error)] * k for d in dimensions})
            return _BatchResult(None, reason=reply.error)
        parsed = read_verdicts(reply.text, k, dimensions, structured)
        if isinstance(parsed, str):
            logger.debug("group reply did not parse (%s): %r", parsed, reply.text[:500])
            return _BatchResult(None, reason=parsed)
        if self.cache is not None:
            self.cache.put(key, reply.text)
        return _BatchResult(parsed)

    async def _ask_group(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore,
                         items: list[JudgeItem]) -> _BatchResult:
        messages = build_group_messages(items, structured=self._response_format is not None)
        return await self._ask_batched(client, semaphore, messages, self.request_params(group_size=len(items)),
                                       len(items), (GROUP,))

    async def _ask_step_group(self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore,
                              steps: list[StepItems]) -> _BatchResult:
        dimensions = step_dimensions(steps[0])
        messages = build_step_group_messages(steps, structured=self._response_format is not None)
        return await self._ask_batched(client, semaphore, messages, self.step_group_params(len(steps), dimensions),
                                       len(steps), dimensions)

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
            if self._refusal is not None:  # the batch ends in that error: send nothing more
                return _Reply(None, str(self._refusal), is_unreachable=True)
            try:
                async with semaphore:
                    self._stats.add(calls=0 if attempt else 1, retries=1 if attempt else 0)
                    response = await client.chat.completions.create(**kwargs)
            except (openai.OpenAIError, ValueError) as exc:
                # The client raises json's ValueError, not an OpenAIError, for a 200 whose body is empty or not JSON.
                error = f"{type(exc).__name__} from {where}: {str(exc)[:300]}"
                if isinstance(exc, openai.NotFoundError):
                    self._refusal = refusal(self.where, self.model, self._served_models, exc)
                    return _Reply(None, str(self._refusal), is_unreachable=True)
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


def planned_requests(items: list[JudgeItem], mode: str, max_group_size: int = 8,
                     structured: bool = False, max_prefixes: int = 1) -> list[list[Message]]:
    """The prompts a judge in ``mode`` (item, group or group_steps) sends for one batch on a cold cache, before any
    fallback: identical items once; in group mode one prompt per sibling group, a lone item as an item prompt; in
    group_steps mode first one prompt per step group (``step_group.py``; up to ``max_prefixes`` prefixes each),
    then the items left over as in group mode: the plan ``OpenAIJudge.ascore`` follows.
    For costing a run without a server (``benchmarks/judge_throughput.py`` counts their tokens)."""
    prompts = [json.dumps(build_messages(item, structured=structured)) for item in items]
    seen: set[str] = set()
    unique: list[JudgeItem] = []  # first occurrences, in order, as the backend sends them
    for item, prompt in zip(items, prompts, strict=True):
        if prompt not in seen:
            seen.add(prompt)
            unique.append(item)
    if mode == "item":
        return [build_messages(item, structured=structured) for item in unique]
    plan: list[list[Message]] = []
    if mode == "group_steps":
        pairs: list[tuple[str, str]] = []
        steps = []
        for think, action in find_steps(items):
            if (prompts[think], prompts[action]) not in pairs:
                pairs.append((prompts[think], prompts[action]))
                steps.append((items[think], items[action]))
        plan += [build_step_group_messages([steps[i] for i in members], structured)
                 for members in step_groups(steps, max_group_size, max_prefixes)]
        judged = {prompt for pair in pairs for prompt in pair}
        unique = [item for item in unique if json.dumps(build_messages(item, structured=structured)) not in judged]
    return plan + [build_group_messages([unique[i] for i in members], structured) if len(members) > 1
                   else build_messages(unique[members[0]], structured=structured)
                   for members in sibling_groups(unique, max_group_size)]
