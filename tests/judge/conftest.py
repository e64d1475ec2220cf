"""Fixtures for the judge tests: the scripted chat server of ``judge_chat_server`` on a free local port."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from judge_chat_server import ScriptedChatServer


@pytest.fixture
def chat_server() -> Iterator[ScriptedChatServer]:
    server = ScriptedChatServer()
    thread = threading.Thread(target=server.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(timeout=5)
