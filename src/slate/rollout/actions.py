"""Parse one generated step: ``<think>…</think>`` then ``<search>query</search>`` or ``<answer>…</answer>``.

``parse_step`` is total: any string parses to a ``ParsedStep`` and nothing raises, because the policy may write
anything. The first complete action tag after the think block wins; text after it is ignored (generation stops at
the closing tag anyway). A step without a complete action, or with an empty one, is ``invalid``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from slate.retrieval.base import Hit

Action = Literal["search", "answer", "invalid"]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SEARCH_OPEN, SEARCH_CLOSE = "<search>", "</search>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
INFO_OPEN, INFO_CLOSE = "<information>", "</information>"
TAGS = (THINK_OPEN, THINK_CLOSE, SEARCH_OPEN, SEARCH_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, INFO_OPEN, INFO_CLOSE)
STOP_STRINGS = (SEARCH_CLOSE, ANSWER_CLOSE)

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True)
class ParsedStep:
    think: str
    action: Action
    content: str
    has_think: bool

    @property
    def is_valid(self) -> bool:
        return self.action != "invalid"


def parse_step(text: str) -> ParsedStep:
    """One step's text → think, action and content. Total: never raises on any ``str``."""
    think_match = _THINK.search(text)
    think = think_match.group(1).strip() if think_match else ""
    rest = text[think_match.end():] if think_match else text
    action_match = _ACTION.search(rest)
    if action_match is None:
        return ParsedStep(think=think, action="invalid", content="", has_think=think_match is not None)
    content = action_match.group(2).strip()
    # A nested tag inside the action ("<search>a <answer>b</answer></search>") is malformed, not a search for it.
    if not content or any(tag in content for tag in TAGS):
        return ParsedStep(think=think, action="invalid", content=content, has_think=think_match is not None)
    kind: Action = "search" if action_match.group(1) == "search" else "answer"
    return ParsedStep(think=think, action=kind, content=content, has_think=think_match is not None)


def render_information(hits: list[Hit]) -> str:
    """The environment's reply to a search, as Search-R1 renders it: one ``Doc i(Title: …) text`` line per hit."""
    lines = [f"Doc {i}(Title: {hit.title}) {hit.text}" for i, hit in enumerate(hits, start=1)]
    return f"\n{INFO_OPEN}" + "\n".join(lines) + f"{INFO_CLOSE}\n"
