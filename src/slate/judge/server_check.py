"""The judge's first contact with its server, and the one error for mistakes that no retry mends.

``served_models``: ``GET {base_url}/models`` before the judge's first request, retried like a request; a server that
never answers is a ``JudgeError`` naming the URL, the model and how to start one. A server that answers without a
model list (not every OpenAI-compatible server has the endpoint) is not an error: the chat request speaks for it.

``refusal``: the ``JudgeError`` for a 404 to a chat request, either a model the server does not serve (vLLM and
SGLang refuse any other name; llama.cpp's servers answer every name with their one model) or a ``base_url``
without ``/v1``.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import openai

from slate.errors import JudgeError

logger = logging.getLogger(__name__)

SERVE_HINT = ("start one (SmolLM2 on vLLM: `slate serve-judge --model smollm2 --port 8200`, then "
              "judge.base_url=http://127.0.0.1:8200/v1) or point judge.base_url at a running server")


async def served_models(where: str, model: str, api_key: str, timeout_s: float, max_retries: int,
                        retry_base_delay_s: float) -> list[str] | None:
    """The model names the server at ``where`` (its API root, ending in /v1) lists, or None when it lists none.
    Raises ``JudgeError`` when it does not answer after ``max_retries`` retries."""
    error = ""
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        for attempt in range(max_retries + 1):
            if attempt:
                await asyncio.sleep(retry_base_delay_s * 2 ** (attempt - 1))
            try:
                response = await http.get(f"{where}/models", headers={"Authorization": f"Bearer {api_key}"})
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {str(exc)[:200] or 'no reply'}"
                logger.debug("judge server check attempt %d/%d failed: %s", attempt + 1, max_retries + 1, error)
                continue
            break
        else:
            raise JudgeError(f"judge server {where} does not answer ({error}, {max_retries + 1} attempts; "
                             f"judge.model={model!r}): {SERVE_HINT}.")
    try:
        listed = response.json()["data"] if response.status_code == 200 else None
        return [str(entry["id"]) for entry in listed] if isinstance(listed, list) else None
    except (ValueError, KeyError, TypeError):
        return None


def refusal(where: str, model: str, served: list[str] | None, exc: openai.NotFoundError) -> JudgeError:
    """The error for a 404 to a chat request for ``model``; ``served`` is what the server listed at first contact."""
    body = exc.body
    detail = (body.get("message") or body.get("detail")) if isinstance(body, dict) else None
    detail = str(detail or exc.message)[:300]
    if served and model not in served:
        return JudgeError(f"judge server {where} does not serve judge.model={model!r} (HTTP 404: {detail}); it "
                          f"serves {', '.join(map(repr, served))}. Set judge.model={served[0]}, or restart the "
                          f"server with --served-model-name {model}.")
    return JudgeError(f"judge server {where} answered HTTP 404 to a chat request for judge.model={model!r} "
                      f"({detail}). judge.base_url must be the server's API root, ending in /v1 (e.g. "
                      "http://127.0.0.1:8200/v1), and judge.model a model it serves (GET /v1/models lists them).")
