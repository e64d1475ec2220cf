"""A scripted OpenAI-compatible chat server on 127.0.0.1, run in a thread for the backend tests.

Each request's behaviour is picked by a ``case=NAME`` marker in the prompt (the policy text carries it), and the
n-th attempt of a case can behave differently (429 then success, and so on). Every request body is recorded.
A test may instead set ``responder``, a function of the request body to (status, reply, stall seconds), to play a
judge that reads the prompt; a reply of ``EMPTY_BODY`` sends a 200 with an empty body. ``die_after = n`` makes the
server drop request n + 1 and stop listening, as a killed server does. ``GET /v1/models`` lists ``served_models``;
a request for another model gets vLLM's 404 ("The model `x` does not exist.").
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from slate.judge.openai_backend import OpenAIJudge

STALL_S = 1.5
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
EMPTY_BODY = "<an HTTP 200 with an empty body>"
Responder = Callable[[dict[str, Any]], tuple[int, str | None, float]]


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 drops bursts of concurrent connections, which the client sees as timeouts.
    request_queue_size = 128
    daemon_threads = True


class ScriptedChatServer:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_s = 0.0
        self.responder: Responder | None = None
        self.die_after: int | None = None
        self.served_models = ["judge-model", "m"]
        self.model_list_requests = 0
        self._lock = threading.Lock()
        self.httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        """Stop serving and close the listening socket: later connections are refused."""
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def request_count(self) -> int:
        return len(self.bodies)

    def behaviour(self, case: str, attempt: int) -> tuple[int, str | None, float]:
        """(HTTP status, reply content or None for an error body, seconds to stall first)."""
        replies = {
            "plus": "The step names the right entity.\n<score>1</score>",
            "minus": "Generic query.\n<score>-1</score>",
            "zero": "Vague. <score>0</score>",
            "malformed": "I am not sure what to say.",
            "json": '{"reasoning": "matches the ground truth", "score": 1}',
        }
        if case in replies:
            return 200, replies[case], 0.0
        if case == "rate":
            return (429, None, 0.0) if attempt == 0 else (200, "ok <score>1</score>", 0.0)
        if case == "error500":
            return (500, None, 0.0) if attempt == 0 else (200, "ok <score>0</score>", 0.0)
        if case == "stall":
            return (200, "late <score>-1</score>", STALL_S) if attempt == 0 else (200, "ok <score>1</score>", 0.0)
        if case == "always500":
            return 500, None, 0.0
        if case == "badrequest":
            return 400, None, 0.0
        raise AssertionError(f"unknown case {case!r}")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def send_json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path != "/v1/models":
                    self.send_json(404, {"detail": "Not Found"})
                    return
                with server._lock:
                    server.model_list_requests += 1
                self.send_json(200, {"object": "list", "data": [{"id": name, "object": "model"}
                                                                for name in server.served_models]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self.send_json(404, {"detail": "Not Found"})
                    return
                if body["model"] not in server.served_models:
                    self.send_json(404, {"error": {"message": f"The model `{body['model']}` does not exist.",
                                                   "type": "NotFoundError", "param": "model", "code": 404}})
                    return
                marker = re.search(r"case=(\w+)", body["messages"][-1]["content"])
                case = marker.group(1) if marker else ""
                with server._lock:
                    if server.die_after is not None and len(server.bodies) >= server.die_after:
                        threading.Thread(target=server.stop, daemon=True).start()
                        self.close_connection = True
                        return  # no reply: the client sees the connection drop
                    server.bodies.append(body)
                    attempt = server.attempts[case]
                    server.attempts[case] += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    responder = server.responder
                    status, content, stall = responder(body) if responder else server.behaviour(case, attempt)
                    time.sleep(stall + server.delay_s)
                    if content == EMPTY_BODY:
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    if content is None:
                        payload: dict[str, Any] = {"error": {"message": f"scripted {status}", "type": "test"}}
                    else:
                        payload = {"id": "cmpl-1", "object": "chat.completion", "created": 0,
                                   "model": body["model"], "usage": USAGE,
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": content}}]}
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left
                finally:
                    with server._lock:
                        server.in_flight -= 1

        return Handler




def user_prompt(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def keyword_judge(body: dict[str, Any]) -> tuple[int, str | None, float]:
    """A judge that reads the prompt as a model would: +1 for a candidate whose fence holds GOOD, else -1.

    It finds candidates by their fences, so a forged fence would show up as an extra or altered candidate. In a
    step-group prompt it scores each candidate's dimensions apart, each by the fence of that dimension.
    """
    prompt = user_prompt(body)
    blocks = re.findall(r"<<<BEGIN_CANDIDATE_(\d+)_\w+>>>\n(.*?)\n<<<END_CANDIDATE_\1_\w+>>>", prompt, re.DOTALL)
    if not blocks:  # an item prompt: the policy text is in its one fence
        text = re.search(r"<<<BEGIN_(?:THINKING|SEARCH_QUERY|FINAL_ANSWER)>>>\n(.*?)\n<<<END_", prompt, re.DOTALL)
        return 200, f"ok <score>{1 if 'GOOD' in text.group(1) else -1}</score>", 0.0
    step_blocks = re.findall(r"<<<BEGIN_CANDIDATE_(\d+)_(THINKING|SEARCH_QUERY|FINAL_ANSWER)>>>\n(.*?)\n"
                             r"<<<END_CANDIDATE_\1_\2>>>", prompt, re.DOTALL)
    if 'dimension="D"' in prompt:  # a step-group prompt: one score per candidate and dimension, by its own fence
        dimensions = {"THINKING": "think", "SEARCH_QUERY": "query", "FINAL_ANSWER": "answer"}
        step_good: dict[tuple[int, str], bool] = {}
        for number, label, text in step_blocks:
            step_good[(int(number), dimensions[label])] = step_good.get((int(number), dimensions[label]), False) \
                or "GOOD" in text
        lines = [f'Candidate {n}, {d}. <score candidate="{n}" dimension="{d}">{1 if g else -1}</score>'
                 for (n, d), g in sorted(step_good.items())]
        return 200, "\n".join(lines), 0.0
    good: dict[int, bool] = {}
    for number, text in blocks:
        good[int(number)] = good.get(int(number), False) or "GOOD" in text
    lines = [f'Candidate {n}. <score candidate="{n}">{1 if g else -1}</score>' for n, g in sorted(good.items())]
    return 200, "\n".join(lines), 0.0


def make_judge(server: ScriptedChatServer, mode: str, **overrides: Any) -> OpenAIJudge:
    """An OpenAI-protocol judge in ``mode`` against ``server``, with short retries (the key is in
    ``SLATE_TEST_JUDGE_KEY``, which the tests set)."""
    kwargs: dict[str, Any] = {"model": "judge-model", "base_url": server.base_url, "mode": mode,
                              "api_key_env": "SLATE_TEST_JUDGE_KEY", "max_retries": 1, "retry_base_delay_s": 0.01,
                              "timeout_s": 10.0, "max_concurrency": 8, "max_new_tokens": 64}
    kwargs.update(overrides)
    return OpenAIJudge(**kwargs)


def judge_counts(judge) -> dict[str, float]:
    """The judge's ``metrics()`` without the ``judge/`` namespace: {"calls": 2, ...}."""
    return {key.removeprefix("judge/"): value for key, value in judge.metrics().items()}
