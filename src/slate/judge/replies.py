"""Read the scores out of a group or step-group reply: one score per (dimension, candidate), or why not.

Group mode asks one dimension of k candidates; group_steps mode asks every dimension of a step (thinking and query,
or thinking and answer). One reader serves both: group mode is the case of one unnamed dimension.

    group:       <score candidate="i">N</score>                  or {"scores": [{"candidate": i, "reasoning", "score"}]}
    step group:  <score candidate="i" dimension="d">N</score>    or {"think": [...], "query": [...]}

The reply must hold exactly one score in {−1, 0, 1} for each candidate 1..k on each dimension asked, and name no
other dimension. Anything else (k − 1 scores, a number twice or outside 1..k, a score outside {−1, 0, 1}, prose, an
empty reply) fails the whole reply, whose items the backend then judges again in smaller requests: a partial reply
is never trusted for the scores it does hold, since a judge that lost count may have shifted them. With structured
output a reply that is not JSON still gets a chance by tag (a server may ignore ``response_format``), as
``parse.parse_reply`` does for single items. Only the judge's reply is read: candidate text is neutralised in the
prompt (``prompts.fenced``), so a candidate cannot plant a score tag.
"""

from __future__ import annotations

import json
import re
from typing import Any

from slate.judge.parse import load_json_reply
from slate.judge.types import SCORES, JudgeVerdict

GROUP = "scores"  # the one dimension of a group reply: its JSON key
_EXPLANATION_CHARS = 1000
# Digits only for the candidate: the format line of an instruction (candidate="I" dimension="D") never parses.
_GROUP_TAG = re.compile(r"<score\s+candidate\s*=\s*[\"']?(\d+)[\"']?\s*>(.*?)</score>", re.IGNORECASE | re.DOTALL)
_STEP_TAG = re.compile(r"<score\s+candidate\s*=\s*[\"']?(\d+)[\"']?\s+dimension\s*=\s*[\"']?(\w+)[\"']?\s*>"
                       r"(.*?)</score>", re.IGNORECASE | re.DOTALL)

Scores = dict[tuple[str, int], tuple[int, str]]  # (dimension, candidate) -> (score, reasoning)


def _is_score(value: Any) -> bool:
    # bool is an int subclass: {"score": true} must not read as 1.
    return isinstance(value, int) and not isinstance(value, bool) and value in SCORES


class _Reader:
    """The wording of one reply shape: a group reply (``dimensions == (GROUP,)``) or a step-group reply."""

    def __init__(self, dimensions: tuple[str, ...]) -> None:
        self.dimensions = dimensions
        self.is_group = dimensions == (GROUP,)
        self.what = "group reply" if self.is_group else "step-group reply"
        self.tag = _GROUP_TAG if self.is_group else _STEP_TAG

    def on(self, dimension: str) -> str:
        return "" if self.is_group else f" on {dimension}"

    def score_of(self, dimension: str) -> str:
        return "score" if self.is_group else f"{dimension} score"

    def entry(self, scores: Scores, dimension: str, number: Any, score: Any, reasoning: str, k: int) -> str | None:
        """Record one score; the reason it is refused, or None."""
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= k:
            return f"{self.what} names candidate {number!r:.20}, not one of 1..{k}"
        if (dimension, number) in scores:
            return f"{self.what} scores candidate {number} twice{self.on(dimension)}"
        if not _is_score(score):
            return f"{self.what} gives candidate {number} {self.score_of(dimension)} {score!r:.20}, not the " \
                   "integer -1, 0 or 1"
        scores[(dimension, number)] = (score, reasoning)
        return None

    def from_json(self, reply: str, k: int) -> Scores | str:
        try:
            # strict=False: a control character inside a reasoning string (a small judge under llama.cpp's grammar
            # writes them) does not void the scores; the structure is checked below all the same.
            obj = load_json_reply(reply, strict=False)
        except json.JSONDecodeError as exc:
            return f"{self.what} is not JSON ({exc.msg}): {reply[:200]!r}"
        if not isinstance(obj, dict):
            return f"{self.what} is not a JSON object"
        unknown = [] if self.is_group else sorted(set(obj) - set(self.dimensions))
        if unknown:
            return f"{self.what} scores dimension {unknown[0]!r:.30}, not one of {', '.join(self.dimensions)}"
        scores: Scores = {}
        for dimension in self.dimensions:
            entries = obj.get(dimension)
            if not isinstance(entries, list):
                return f"{self.what} has no list under {dimension!r}"
            for entry in entries:
                if not isinstance(entry, dict):
                    return f"{self.what} entry {entry!r:.60} is not an object"
                reasoning = entry.get("reasoning", "")
                refused = self.entry(scores, dimension, entry.get("candidate"), entry.get("score"),
                                     reasoning if isinstance(reasoning, str) else json.dumps(reasoning), k)
                if refused:
                    return refused
        return scores

    def from_tags(self, reply: str, k: int) -> Scores | str:
        scores: Scores = {}
        start = 0
        for match in self.tag.finditer(reply):
            number = int(match.group(1))
            dimension = GROUP if self.is_group else match.group(2).lower()
            raw = match.group(match.lastindex or 0).strip()
            if not 1 <= number <= k:
                return f"{self.what} names candidate {number}, not one of 1..{k}"
            if dimension not in self.dimensions:
                return f"{self.what} scores dimension {dimension!r:.30}, not one of {', '.join(self.dimensions)}"
            if (dimension, number) in scores:
                return f"{self.what} scores candidate {number} twice{self.on(dimension)}"
            if raw not in {"-1", "0", "1", "+1"}:
                return f"{self.what} gives candidate {number} {self.score_of(dimension)} {raw[:20]!r}, not -1, 0 or 1"
            scores[(dimension, number)] = (int(raw), reply[start:match.start()].strip())
            start = match.end()
        if not scores:
            kind = "" if self.is_group else " dimension=..."
            return f"no <score candidate=...{kind}> tag in {self.what}: {reply[-200:]!r}"
        return scores


def read_verdicts(reply: str | None, k: int, dimensions: tuple[str, ...] = (GROUP,),
                  structured: bool = False) -> dict[str, list[JudgeVerdict]] | str:
    """Per dimension, ``k`` verdicts (candidate 1 first), or the reason the reply does not hold exactly one valid
    score for each candidate and dimension. ``dimensions=(GROUP,)``: a group reply."""
    reader = _Reader(dimensions)
    if not reply or not reply.strip():
        return f"empty {reader.what}"
    scores = reader.from_json(reply, k) if structured else reader.from_tags(reply, k)
    if isinstance(scores, str) and structured and reader.tag.search(reply):
        scores = reader.from_tags(reply, k)
    if isinstance(scores, str):
        return scores
    for dimension in dimensions:
        missing = [n for n in range(1, k + 1) if (dimension, n) not in scores]
        if missing:
            return (f"{reader.what} scores {k - len(missing)} of {k} candidates{reader.on(dimension)} "
                    f"(missing {missing})")
    return {dimension: [JudgeVerdict(score=scores[(dimension, n)][0], failed=False,
                                     explanation=scores[(dimension, n)][1][-_EXPLANATION_CHARS:])
                        for n in range(1, k + 1)] for dimension in dimensions}


def parse_group_reply(reply: str | None, k: int, structured: bool = False) -> list[JudgeVerdict] | str:
    """``k`` verdicts of a group reply, candidate 1 first, or the reason the reply does not hold exactly one valid
    score each."""
    verdicts = read_verdicts(reply, k, (GROUP,), structured)
    return verdicts if isinstance(verdicts, str) else verdicts[GROUP]


def parse_step_group_reply(reply: str | None, k: int, dimensions: tuple[str, ...],
                           structured: bool = False) -> dict[str, list[JudgeVerdict]] | str:
    """Per dimension, ``k`` verdicts of a step-group reply (candidate 1 first), or the reason it fails."""
    return read_verdicts(reply, k, dimensions, structured)
