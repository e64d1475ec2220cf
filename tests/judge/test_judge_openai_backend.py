from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from judge_chat_server import USAGE, ScriptedChatServer, judge_counts

from slate.errors import JudgeError
from slate.judge.cache import JudgeCache
from slate.judge.openai_backend import OpenAIJudge
from slate.judge.schemas import VERDICT_SCHEMA
from slate.judge.types import JudgeItem, JudgeVerdict


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLATE_TEST_JUDGE_KEY", "test-key")


def make_judge(server: ScriptedChatServer, **overrides: Any) -> OpenAIJudge:
    kwargs: dict[str, Any] = {"model": "judge-model", "base_url": server.base_url,
                              "api_key_env": "SLATE_TEST_JUDGE_KEY", "max_retries": 2, "retry_base_delay_s": 0.01,
                              "timeout_s": 0.5, "max_concurrency": 8, "max_new_tokens": 64}
    kwargs.update(overrides)
    return OpenAIJudge(**kwargs)


def item(case: str, kind: str = "query") -> JudgeItem:
    return JudgeItem(kind, "Where was the mayor of Ostrava born?", f"case={case}", golden_answers=("Brno",))  # type: ignore[arg-type]


def test_scripted_replies_retries_and_fallbacks(chat_server: ScriptedChatServer) -> None:
    judge = make_judge(chat_server)
    cases = ["plus", "minus", "malformed", "rate", "error500", "stall", "always500", "badrequest"]
    verdicts = judge.score([item(c) for c in cases])
    got = {case: (v.score, v.failed) for case, v in zip(cases, verdicts, strict=True)}
    assert got == {"plus": (1, False), "minus": (-1, False), "malformed": (0, True), "rate": (1, False),
                   "error500": (0, False), "stall": (1, False), "always500": (0, True), "badrequest": (0, True)}
    assert verdicts[0] == JudgeVerdict(1, "The step names the right entity.", False)
    # 429, 500 and the stall are retried once; a persistent 500 uses all 2 retries; a 400 is not retried.
    assert dict(chat_server.attempts) == {"plus": 1, "minus": 1, "malformed": 1, "rate": 2, "error500": 2,
                                          "stall": 2, "always500": 3, "badrequest": 1}
    assert "after 3 attempts" in verdicts[6].explanation and "InternalServerError" in verdicts[6].explanation
    assert "not retried" in verdicts[7].explanation
    stats = judge_counts(judge)
    # Six requests got a 200 reply with usage (10 prompt + 5 completion tokens each); the stalled one timed out.
    assert stats == {"calls": 8, "retries": 5, "cache_hits": 0, "failures": 3, "parse_failures": 1,
                     "prompt_tokens": 6 * USAGE["prompt_tokens"], "completion_tokens": 6 * USAGE["completion_tokens"],
                     "group_calls": 0, "group_fallbacks": 0}
    assert judge.metrics()["judge/calls"] == 0  # reset on read
    body = chat_server.bodies[0]
    assert body["model"] == "judge-model" and body["temperature"] == 0.0 and body["max_tokens"] == 64
    assert "response_format" not in body


def test_cache_hits_skip_the_server_and_persist(chat_server: ScriptedChatServer, tmp_path: Path) -> None:
    path = tmp_path / "judge.sqlite"
    judge = make_judge(chat_server, cache=JudgeCache(path))
    items = [item("plus"), item("minus"), item("plus"), item("malformed")]
    first = judge.score(items)
    assert [v.score for v in first] == [1, -1, 1, 0]
    assert chat_server.request_count == 3  # the duplicate "plus" is sent once
    assert judge.metrics()["judge/cache_hits"] == 1
    second = judge.score(items)
    assert second == first
    assert chat_server.request_count == 4  # only the malformed reply (never cached) is asked again
    assert judge_counts(judge) == {"calls": 1, "retries": 0, "cache_hits": 3, "failures": 1, "parse_failures": 1,
                                  "prompt_tokens": 10, "completion_tokens": 5, "group_calls": 0, "group_fallbacks": 0}
    other = make_judge(chat_server, cache=JudgeCache(path))
    assert other.score([item("plus")])[0].score == 1
    assert chat_server.request_count == 4
    changed = make_judge(chat_server, cache=JudgeCache(path), max_new_tokens=65)  # other parameters: a miss
    changed.score([item("plus")])
    assert chat_server.request_count == 5


CAPPED_VERDICT_SCHEMA = {**VERDICT_SCHEMA, "properties": {"reasoning": {"type": "string", "maxLength": 400},
                                                           "score": VERDICT_SCHEMA["properties"]["score"]}}


def test_the_reasoning_cap_is_the_configured_one(chat_server: ScriptedChatServer) -> None:
    from slate.config import JudgeConfig

    config = JudgeConfig(backend="openai", model="judge-model", base_url=chat_server.base_url,
                         api_key_env="SLATE_TEST_JUDGE_KEY", structured_output="vllm", max_reasoning_chars=120)
    judge = OpenAIJudge.from_config(config)
    judge.score([item("json", kind="answer")])
    schema = chat_server.bodies[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["reasoning"] == {"type": "string", "maxLength": 120}
    group = judge.request_params(group_size=2)["response_format"]["json_schema"]["schema"]
    assert all(entry["properties"]["reasoning"]["maxLength"] == 120 for entry in group["properties"]["scores"]
               ["prefixItems"])


@pytest.mark.parametrize(("dialect", "expected"), [
    ("json_schema", {"type": "json_schema",
                     "json_schema": {"name": "judge_verdict", "strict": True, "schema": VERDICT_SCHEMA}}),
    ("json_object", {"type": "json_object", "schema": CAPPED_VERDICT_SCHEMA}),
    # vLLM: the capped schema in the json_schema body (its json_object means any JSON, schema dropped)
    ("vllm", {"type": "json_schema",
              "json_schema": {"name": "judge_verdict", "strict": True, "schema": CAPPED_VERDICT_SCHEMA}}),
])
def test_structured_output_request_bodies(chat_server: ScriptedChatServer, dialect: str,
                                          expected: dict[str, Any]) -> None:
    judge = make_judge(chat_server, structured_output=dialect)
    verdicts = judge.score([item("json", kind="answer")])
    assert verdicts == [JudgeVerdict(1, "matches the ground truth", False)]
    assert chat_server.bodies[0]["response_format"] == expected
    assert VERDICT_SCHEMA["properties"]["score"]["enum"] == [-1, 0, 1]


def test_concurrency_is_bounded(chat_server: ScriptedChatServer) -> None:
    chat_server.delay_s = 0.1
    judge = make_judge(chat_server, max_concurrency=2)
    items = [JudgeItem("think", f"question {i}?", "case=plus") for i in range(6)]
    assert [v.score for v in judge.score(items)] == [1] * 6
    assert chat_server.max_in_flight == 2


def test_score_works_from_a_thread_and_inside_a_running_loop(chat_server: ScriptedChatServer) -> None:
    judge = make_judge(chat_server)
    results: list[list[JudgeVerdict]] = []
    thread = threading.Thread(target=lambda: results.append(judge.score([item("plus")])))
    thread.start()
    thread.join(timeout=10)
    assert [v.score for v in results[0]] == [1]

    async def inside_loop() -> tuple[list[JudgeVerdict], list[JudgeVerdict]]:
        return judge.score([item("minus")]), await judge.ascore([item("zero")])

    blocking, awaited = asyncio.run(inside_loop())
    assert (blocking[0].score, awaited[0].score) == (-1, 0)


def test_a_server_that_goes_away_fails_every_item_after_retries(chat_server: ScriptedChatServer) -> None:
    judge = make_judge(chat_server, max_retries=1)
    assert judge.score([item("plus")])[0].score == 1  # the first contact (GET /models) and one request
    judge_counts(judge)
    chat_server.stop()  # an outage after the first contact: items fail, check_failures decides
    verdicts = judge.score([item("plus"), item("minus")])
    assert all(v.failed and v.score == 0 for v in verdicts)
    assert "127.0.0.1" in verdicts[0].explanation or "Connection" in verdicts[0].explanation
    stats = judge_counts(judge)
    assert (stats["calls"], stats["retries"], stats["failures"], stats["parse_failures"]) == (2, 2, 2, 0)
    assert chat_server.model_list_requests == 1  # checked once per judge


def test_a_server_that_never_answers_is_one_error_naming_the_url() -> None:
    server = ScriptedChatServer()  # bound but never serving, then closed: connection refused
    server.httpd.server_close()
    judge = make_judge(server, max_retries=1)
    with pytest.raises(JudgeError) as error:
        judge.score([item("plus"), item("minus")])
    message = str(error.value)
    assert f"judge server {server.base_url} does not answer" in message and "2 attempts" in message
    assert "judge.model='judge-model'" in message and "slate serve-judge" in message
    assert server.request_count == 0


def test_a_model_the_server_does_not_serve_is_one_error_naming_the_fix(chat_server: ScriptedChatServer) -> None:
    chat_server.served_models = ["smollm2-judge"]
    for mode in ("item", "group", "group_steps"):
        judge = make_judge(chat_server, model="smollm2", mode=mode)
        items = [JudgeItem("think", "Who founded Velmora Labs?", f"case=plus {i}") for i in range(3)]
        with pytest.raises(JudgeError) as error:
            judge.score(items)
        message = str(error.value)
        assert f"judge server {chat_server.base_url} does not serve judge.model='smollm2'" in message, message
        assert "The model `smollm2` does not exist" in message and "it serves 'smollm2-judge'" in message
        assert "Set judge.model=smollm2-judge" in message and "--served-model-name smollm2" in message
    assert chat_server.request_count == 0  # 404s are refused before a body is recorded
    # a base_url without /v1: the same 404, another fix
    judge = make_judge(chat_server, model="smollm2-judge", base_url=chat_server.base_url.removesuffix("/v1"))
    with pytest.raises(JudgeError, match=r"answered HTTP 404 .*Not Found.*ending in /v1"):
        judge.score([item("plus")])
    # a cached batch needs no server at all
    assert make_judge(chat_server, model="smollm2-judge").score([]) == []


def test_missing_api_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLATE_TEST_JUDGE_KEY")
    with pytest.raises(JudgeError, match="SLATE_TEST_JUDGE_KEY is not set"):
        OpenAIJudge(model="m", base_url="http://127.0.0.1:9/v1", api_key_env="SLATE_TEST_JUDGE_KEY")
