"""``HttpRetriever``: the ``Retriever`` protocol over a ``/retrieve`` server (ours, or Search-R1's own).

It posts ``{"queries", "topk", "return_scores": true}`` and reads ``result[i][j].document.contents`` and ``.score``
(a reply without scores, where each element is the document itself, is accepted too). Connection errors,
timeouts and 5xx replies are retried ``max_retries`` times, waiting ``backoff_s · 2^(r-1)`` before retry r;
then a ``RetrievalError`` names the URL and the last failure. A 4xx reply is not retried: the request itself is
wrong, and the server's ``detail`` is shown. Hits that are faiss padding (a Search-R1 dense server asked for more
passages than it can reach sends ``corpus[-1]`` with score -3.4e38, repeated), with a negative id, or repeating an
id of the same query are dropped and counted in ``dropped_hits``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from slate.errors import RetrievalError
from slate.retrieval.base import Hit, drop_invalid_hits, hit_from_contents

logger = logging.getLogger(__name__)


class HttpRetriever:
    def __init__(self, url: str, timeout_s: float = 30.0, max_retries: int = 3, backoff_s: float = 0.5,
                 batch_size: int = 512) -> None:
        if not url.startswith(("http://", "https://")):
            raise RetrievalError(f"retrieval url {url!r} must start with http:// or https:// "
                                 "(e.g. http://127.0.0.1:8000/retrieve).")
        if max_retries < 0 or timeout_s <= 0 or batch_size < 1:
            raise RetrievalError(f"HttpRetriever({url}): need timeout_s > 0, max_retries >= 0, batch_size >= 1; "
                                 f"got {timeout_s}, {max_retries}, {batch_size}.")
        self.url = url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.batch_size = batch_size
        self.client = httpx.Client(timeout=timeout_s)
        self.retries = 0  # requests re-sent after a failure, for the caller's metrics
        self.dropped_hits = 0  # padding or duplicate hits removed from replies

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> HttpRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def metrics(self) -> dict[str, float]:
        """Requests re-sent and hits dropped since the last call; the counts restart from 0."""
        counts = {"retrieval/retries": float(self.retries), "retrieval/dropped_hits": float(self.dropped_hits)}
        self.retries = self.dropped_hits = 0
        return counts

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        results: list[list[Hit]] = []
        for start in range(0, len(queries), self.batch_size):
            batch = queries[start:start + self.batch_size]
            reply = self._post({"queries": batch, "topk": k, "return_scores": True})
            results.extend(self._parse(reply, len(batch)))
        return results

    def _post(self, payload: dict[str, Any]) -> Any:
        last_failure = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.retries += 1
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.client.post(self.url, json=payload)
            except httpx.TransportError as exc:  # connection refused/reset, timeouts
                last_failure = f"{type(exc).__name__}: {exc}"
                logger.warning("retrieval %s failed (attempt %d/%d): %s", self.url, attempt + 1,
                               self.max_retries + 1, last_failure)
                continue
            if response.status_code >= 500:
                last_failure = f"HTTP {response.status_code}: {response.text[:200]}"
                logger.warning("retrieval %s failed (attempt %d/%d): %s", self.url, attempt + 1,
                               self.max_retries + 1, last_failure)
                continue
            if response.status_code >= 400:
                raise RetrievalError(f"retrieval server {self.url} refused the request with HTTP "
                                     f"{response.status_code}: {_detail(response)}. Fix the request (fewer queries "
                                     "per batch, smaller topk) or the server's limits.")
            try:
                return response.json()
            except ValueError:
                raise RetrievalError(f"retrieval server {self.url} replied with non-JSON: {response.text[:200]!r}. "
                                     "Check that the URL points at a /retrieve endpoint.") from None
        raise RetrievalError(f"retrieval server {self.url} did not answer after {self.max_retries + 1} attempts "
                             f"(timeout {self.timeout_s} s each); last failure: {last_failure}. Start the server "
                             "(slate serve-retriever --index DIR) or fix retrieval.url.")

    def _parse(self, reply: Any, expected: int) -> list[list[Hit]]:
        rows = reply.get("result") if isinstance(reply, dict) else None
        if not isinstance(rows, list) or len(rows) != expected:
            got = f"{len(rows)} result lists" if isinstance(rows, list) else f"no 'result' list ({str(reply)[:120]})"
            raise RetrievalError(f"retrieval server {self.url} sent {got} for {expected} queries; expected "
                                 '{"result": [[...], ...]} with one list per query.')
        results = []
        for row in rows:
            hits, dropped = drop_invalid_hits([self._hit(item) for item in row])
            if dropped:
                self.dropped_hits += dropped
                logger.warning("retrieval %s sent %d invalid hit(s) (faiss padding, negative or repeated ids); "
                               "dropped", self.url, dropped)
            results.append(hits)
        return results

    def _hit(self, item: Any) -> Hit:
        document, score = (item.get("document"), item.get("score", 0.0)) if isinstance(item, dict) and \
            "document" in item else (item, 0.0)
        if not isinstance(document, dict):
            raise RetrievalError(f"retrieval server {self.url} sent a passage that is not an object: {item!r:.120}.")
        contents = document.get("contents")
        if contents is None and "text" in document:  # some FlashRAG corpora split title and text
            contents = f"{document.get('title', '')}\n{document['text']}"
        if not isinstance(contents, str):
            raise RetrievalError(f"retrieval server {self.url} sent a passage without 'contents': {document!r:.120}.")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise RetrievalError(f"retrieval server {self.url} sent a passage whose score is not a number: "
                                 f"{item!r:.120}.")
        return hit_from_contents(str(document.get("id", "")), contents, float(score))


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)[:300]
