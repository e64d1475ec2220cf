"""Rollouts on vLLM: the ``Generator`` protocol over the OpenAI-compatible completions API of one or more servers.

One request per prefix: ``prompt`` = the prefix's token ids, ``n`` = k continuations (SLATE's siblings, or the
first step of k full trajectories), the step tags as ``stop`` strings, ``logprobs=0`` and ``return_token_ids`` so
every choice comes back as the exact sampled ids with their log-probs, and a ``seed`` drawn from the run's seeded
generator, so a seeded run repeats. The k siblings of one prompt share its prefix cache on the server. Requests go
round-robin over ``rollout.server_urls`` with at most ``max_concurrent_requests`` in flight.

vLLM stops on a stop string but keeps the token that holds it in ``token_ids`` (only the text is trimmed). The ids
are used as they come, never re-tokenised from text, so the trainer trains on exactly what was sampled.

Policy versions: each ``PolicyServer`` knows the model name requests use (LoRA: one adapter name per version) and
the policy version it serves, which only the weight sync sets (``rollout/weight_sync.py``). Every continuation is
stamped with the version that produced it: with LoRA, the adapter named in the reply; with full weights, the
version the server held from before the request until its reply. A server whose sync failed, or that dropped a
connection (it may come back restarted with other weights), holds version ``None`` and is re-synced before it is
used again; a reply that cannot be attributed never becomes a training sample.

Failures: connection errors, timeouts, 5xx replies and replies with fewer choices than asked are retried with
back-off; a model name the server no longer knows (a restarted server lost its adapters) is re-synced and
retried; anything else, and a failure that outlasts the retries, is one ``RolloutServerError`` naming the server
and the fix.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import torch

from slate.errors import RolloutServerError
from slate.rollout.generate import Continuation, FinishReason, SamplingParams, StopCondition

logger = logging.getLogger(__name__)

START_HINT = "start one with `slate serve-policy --policy DIR --port P` (docs/vllm.md) or fix rollout.server_urls"
_SEED_LIMIT = 2**31 - 1


def error_detail(response: httpx.Response) -> str:
    """The server's error message (vLLM: {"error": {"message"}}, FastAPI: {"detail"}), else the raw text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if body.get("message") or body.get("detail"):
            return str(body.get("message") or body.get("detail"))[:300]
    return response.text[:300]


def is_unknown_model(response: httpx.Response) -> bool:
    """vLLM answers a request for a model (or LoRA adapter) it does not serve with 404 'does not exist'."""
    return response.status_code == 404 and "does not exist" in error_detail(response)


class PolicyServer:
    """One vLLM server: its URL, the model name requests use, and the policy version it serves (None: unknown)."""

    def __init__(self, url: str, timeout_s: float = 300.0, retries: int = 3, backoff_s: float = 1.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise RolloutServerError(f"rollout server url {url!r} must start with http:// or https:// "
                                     "(e.g. http://127.0.0.1:8100).")
        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport)
        self.base_model: str | None = None  # the checkpoint the server was started with
        self.max_model_len: int | None = None
        self.model: str | None = None  # the name requests use: the base model, or this version's adapter
        self.version: int | None = None
        self.lock = threading.Lock()  # one re-sync at a time

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        """One call with retries on connection errors, timeouts and 5xx; a 4xx is returned for the caller to read."""
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.http.request(method, path, json=body)
            except httpx.TransportError as error:  # refused, reset, timed out
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code < 500:
                    return response
                problem = f"HTTP {response.status_code}: {error_detail(response)}"
            logger.warning("rollout server %s%s failed (attempt %d/%d): %s", self.url, path, attempt + 1,
                           self.retries + 1, problem)
        raise RolloutServerError(f"rollout server {self.url} did not answer {method} {path} after "
                                 f"{self.retries + 1} tries ({problem}). Is it running? {START_HINT}.")

    def connect(self, context_tokens: int | None = None) -> None:
        """Read the served base model and its context length; a server that is down is an error naming its URL."""
        response = self.request("GET", "/v1/models")
        if response.status_code != 200:
            raise RolloutServerError(f"rollout server {self.url}/v1/models answered HTTP {response.status_code}: "
                                     f"{error_detail(response)}. Is it a vLLM OpenAI-compatible server? {START_HINT}.")
        try:
            models = response.json()["data"]
            base = next(m for m in models if not m.get("parent"))
        except (ValueError, KeyError, TypeError, StopIteration):
            raise RolloutServerError(f"rollout server {self.url}/v1/models: no base model in the reply "
                                     f"{response.text[:200]!r}. {START_HINT}.") from None
        self.base_model = str(base["id"])
        self.max_model_len = base.get("max_model_len")
        if self.model is None:
            self.model = self.base_model
        if context_tokens is not None and self.max_model_len is not None and self.max_model_len < context_tokens:
            raise RolloutServerError(f"rollout server {self.url} serves {self.base_model} with a context of "
                                     f"{self.max_model_len} tokens, shorter than the policy's {context_tokens}; "
                                     f"restart it with --max-model-len {context_tokens}.")


def _finish_reason(choice: dict[str, Any], token_ids: list[int], eos_token_id: int) -> FinishReason:
    if token_ids and token_ids[-1] == eos_token_id:
        return "eos"
    return "stop" if choice.get("finish_reason") == "stop" else "length"


def parse_choices(reply: Any, n: int, eos_token_id: int, where: str) -> list[Continuation] | str:
    """The n continuations of one completions reply, or a string saying what is missing (the caller decides
    whether retrying can help)."""
    choices = reply.get("choices") if isinstance(reply, dict) else None
    if not isinstance(choices, list):
        return f"no choices in the reply {str(reply)[:200]!r}"
    if len(choices) < n:
        return f"{len(choices)} choices for n={n}"
    out: list[Continuation] = []
    for choice in sorted(choices, key=lambda c: c.get("index", 0))[:n]:
        token_ids = choice.get("token_ids")
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
        if not isinstance(token_ids, list) or not isinstance(logprobs, list):
            raise RolloutServerError(f"{where}: a choice without token_ids or log-probs. The trainer needs the "
                                     "sampled ids and their log-probs: the server must be vLLM >= 0.10 (it honours "
                                     "return_token_ids and logprobs=0).")
        if len(token_ids) != len(logprobs) or any(v is None or not math.isfinite(v) for v in logprobs):
            raise RolloutServerError(f"{where}: {len(token_ids)} token ids but {len(logprobs)} log-probs, or a "
                                     "missing/non-finite log-prob; the reply cannot be trained on.")
        ids = [int(t) for t in token_ids]
        out.append(Continuation(token_ids=ids, logprobs=[float(v) for v in logprobs],
                                finish_reason=_finish_reason(choice, ids, eos_token_id)))
    return out


class VllmGenerator:
    """``Generator`` over vLLM servers. ``seed_source`` (the engine's seeded generator) draws each request's seed;
    ``resync(server)`` re-pushes the current policy version to a server that lost it."""

    def __init__(self, servers: list[PolicyServer], seed_source: torch.Generator, eos_token_id: int,
                 max_concurrency: int = 16, retries: int = 3, backoff_s: float = 1.0,
                 resync: Callable[[PolicyServer], None] | None = None) -> None:
        if not servers:
            raise RolloutServerError(f"rollout.backend=vllm without servers: {START_HINT}.")
        self.servers = servers
        self.seed_source = seed_source
        self.eos_token_id = eos_token_id
        self.max_concurrency = max_concurrency
        self.retries = retries
        self.backoff_s = backoff_s
        self.resync = resync
        self.counters: Counter[str] = Counter()  # since the start
        self._read: dict[str, int] = {}  # the counters at the last metrics()
        self._next_server = itertools.count()

    def __call__(self, prefixes: list[list[int]], num_branches: int, params: SamplingParams,
                 stop: StopCondition) -> list[list[Continuation]]:
        seeds = torch.randint(0, _SEED_LIMIT, (len(prefixes),), generator=self.seed_source,
                              device=self.seed_source.device).tolist()
        first = next(self._next_server)  # rotate, so small batches do not all land on the first server
        jobs = [(self.servers[(first + i) % len(self.servers)], prefix, seed)
                for i, (prefix, seed) in enumerate(zip(prefixes, seeds, strict=True))]
        sampling = {"max_tokens": params.max_new_tokens, "stop": list(stop.stop_strings), "logprobs": 0,
                    "return_token_ids": True, "skip_special_tokens": False}
        if params.greedy:
            sampling["temperature"] = 0.0
        else:
            sampling.update(temperature=params.temperature, top_p=params.top_p)
        if len(jobs) == 1:
            return [self._complete(*jobs[0], num_branches, sampling)]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs))) as pool:
            return list(pool.map(lambda job: self._complete(*job, num_branches, sampling), jobs))

    def metrics(self) -> dict[str, float]:
        """Requests re-sent and servers given the version again since the last call (reset on read); the counts
        stay in ``counters`` too, for a run's total."""
        counts = {key: float(self.counters[key] - self._read.get(key, 0)) for key in
                  ("rollout/server_retries", "rollout/server_resyncs")}
        self._read = dict(self.counters)
        return counts

    def _ensure_attributable(self, server: PolicyServer) -> None:
        with server.lock:
            if server.version is None and self.resync is not None:
                self.resync(server)
                self.counters["rollout/server_resyncs"] += 1

    def _complete(self, server: PolicyServer, prefix: list[int], seed: int, n: int,
                  sampling: dict[str, Any]) -> list[Continuation]:
        where = f"rollout server {server.url}/v1/completions"
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.counters["rollout/server_retries"] += 1
                logger.warning("%s (attempt %d/%d): %s", where, attempt, self.retries + 1, problem)
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                self._ensure_attributable(server)
            except RolloutServerError as error:  # still down: wait and try again
                problem = f"re-sync failed: {error}"
                continue
            model, version = server.model, server.version
            try:
                response = server.http.post("/v1/completions", json={"model": model, "prompt": prefix, "n": n,
                                                                      "seed": seed, **sampling})
            except httpx.TransportError as error:
                server.version = None  # it may come back restarted, serving other weights: re-sync it first
                problem = f"{type(error).__name__}: {error}"
                continue
            if response.status_code >= 500:
                problem = f"HTTP {response.status_code}: {error_detail(response)}"
                continue
            if is_unknown_model(response):
                if self.resync is None or server.model != model:
                    raise RolloutServerError(f"{where}: the server does not serve model {model!r} "
                                             f"({error_detail(response)}). Point rollout.server_urls at the server "
                                             "started for this run's policy.")
                server.version = None  # a restarted server lost its adapters: load this version again
                problem = f"model {model!r} unknown to the server"
                continue
            if response.status_code >= 400:
                raise RolloutServerError(f"{where} refused the request with HTTP {response.status_code}: "
                                         f"{error_detail(response)}. Check the server's --max-model-len and the "
                                         "rollout.max_step_tokens / max_information_tokens limits.")
            try:
                reply = response.json()
            except ValueError:
                problem = f"a reply that is not JSON: {response.text[:200]!r}"
                continue
            parsed = parse_choices(reply, n, self.eos_token_id, where)
            if isinstance(parsed, str):
                problem = parsed
                continue
            answered_by = reply.get("model")
            if answered_by is not None and answered_by != model:
                raise RolloutServerError(f"{where}: asked for model {model!r}, the reply came from {answered_by!r}; "
                                         "its samples cannot be attributed to a policy version.")
            if server.version != version:  # re-synced while the request ran: which weights answered is unknown
                problem = f"policy version changed from {version} to {server.version} during the request"
                continue
            for continuation in parsed:
                continuation.policy_version = version
            return parsed
        raise RolloutServerError(f"{where} failed {self.retries + 1} times (last: {problem}). Is the server up and "
                                 f"serving this run's policy? {START_HINT}.")
