"""Group judging: one request scores the k sibling candidates of one prefix on one dimension.

SLATE's truncated sampler proposes k candidates from one shared prefix, and the item prompt of each candidate
repeats the rubric, the question and the whole trajectory so far. A group prompt sends that shared part once and
lists the candidates, numbered 1..k, each in its own fence:

    item mode:  2k requests per group, each  system + rubric + question + trajectory + one candidate
    group mode: 2 requests per group (3 when searches and answers are mixed), each
                system + rubric + question + trajectory + k candidates

Siblings are found by content, not by where the items came from: items whose prompts would differ only in the
candidate's own text (``shared_part``) are one group. For think and query items that is the same question and
trajectory; answer prompts carry no trajectory, so answers to one question with the same ground truth group too.

The reply must hold exactly one score per candidate: ``<score candidate="i">N</score>`` lines, or with structured
output ``{"scores": [{"candidate": i, "reasoning": str, "score": N}, ...]}`` with exactly k entries. Anything else
(k − 1 scores, a candidate number twice or outside 1..k, a score outside {−1, 0, 1}, prose, an empty reply) fails
the whole group, which the backend then judges item by item (counted in ``group_fallbacks``): a partial reply is
never trusted for the scores it does hold, since a judge that lost count may have shifted them.

Each candidate's text is neutralised (``prompts.neutralise``) before it goes into its fence, so a candidate cannot
close its own fence, open another candidate's, or plant a score tag; the parser reads only the judge's reply.
"""

from __future__ import annotations

import json
import re
from typing import Any

from slate.judge.parse import load_json_reply
from slate.judge.prompts import RUBRICS, SYSTEM_PROMPT, Message, build_messages, fenced
from slate.judge.types import SCORES, JudgeItem, JudgeVerdict

GROUP_PREAMBLE = """\
Several candidate steps were proposed at the same point of the same trajectory; they are numbered below. Grade \
each candidate on its own against the rubric, as if it were the only one: do not rank them against each other, \
and do not let one candidate's text change your view of another."""

_GROUP_TAG_INSTRUCTION = """\
For each candidate in order, write one or two sentences of judgement, then one line of the form \
<score candidate="I">N</score>, where I is the candidate's number and N is -1, 0 or 1. Write exactly one such \
line for each of the {k} candidates, numbered 1 to {k}, and nothing after the last one."""

_GROUP_JSON_INSTRUCTION = """\
Reply with a JSON object only: {{"scores": [{{"candidate": I, "reasoning": "<one or two sentences>", "score": N}}, \
...]}} with exactly one entry for each of the {k} candidates, I = 1 to {k} in order, where N is the integer -1, 0 \
or 1. Give each candidate's reasoning before its score."""

# Digits only: the format line of the instruction (candidate="I", N) never parses as a score.
_GROUP_SCORE_TAG = re.compile(r"<score\s+candidate\s*=\s*[\"']?(\d+)[\"']?\s*>(.*?)</score>", re.IGNORECASE | re.DOTALL)
_EXPLANATION_CHARS = 1000


def shared_part(item: JudgeItem) -> tuple[Any, ...]:
    """What the item's prompt holds besides the candidate's own text: equal for siblings, and only for them."""
    if item.kind == "answer":
        return (item.kind, item.question, item.golden_answers)
    return (item.kind, item.question, item.context)


def candidate_part(item: JudgeItem) -> tuple[str, ...]:
    """The candidate's own text: the query with its preceding thinking, or the thinking, or the answer."""
    return (item.think, item.text) if item.kind == "query" else (item.text,)


def sibling_groups(items: list[JudgeItem], max_group_size: int) -> list[list[int]]:
    """Indices of ``items`` partitioned into sibling groups, in order of first appearance.

    Items with the same ``shared_part`` are siblings; a group larger than ``max_group_size`` is cut into chunks of
    at most that size (a long list of candidates makes a long reply that a small judge loses count in).
    """
    by_shared: dict[tuple[Any, ...], list[int]] = {}
    for index, item in enumerate(items):
        by_shared.setdefault(shared_part(item), []).append(index)
    return [members[start:start + max_group_size] for members in by_shared.values()
            for start in range(0, len(members), max_group_size)]


def _candidate_block(number: int, item: JudgeItem) -> str:
    if item.kind == "query":
        return (f"Candidate {number}:\n" + fenced(f"CANDIDATE_{number}_PRECEDING_THINKING",
                                                   item.think or "(no thinking was written)")
                + "\n" + fenced(f"CANDIDATE_{number}_SEARCH_QUERY", item.text))
    label = "THINKING" if item.kind == "think" else "FINAL_ANSWER"
    return f"Candidate {number}:\n" + fenced(f"CANDIDATE_{number}_{label}", item.text)


def build_group_messages(items: list[JudgeItem], structured: bool = False) -> list[Message]:
    """The chat messages for one group of siblings: the shared part once, then candidates 1..k."""
    first = items[0]
    if any(shared_part(item) != shared_part(first) for item in items):
        raise ValueError("build_group_messages: the items do not share their context; group them with "
                         "sibling_groups first.")
    k = len(items)
    parts = [RUBRICS[first.kind], GROUP_PREAMBLE, fenced("QUESTION", first.question)]
    if first.kind == "answer":
        answers = "\n".join(f"- {answer}" for answer in first.golden_answers) or "(none given)"
        parts.append(fenced("GROUND_TRUTH", answers))
    else:
        parts.append(fenced("TRAJECTORY_SO_FAR", first.context or "(this is the first step)"))
    parts += [_candidate_block(number, item) for number, item in enumerate(items, start=1)]
    parts.append((_GROUP_JSON_INSTRUCTION if structured else _GROUP_TAG_INSTRUCTION).format(k=k))
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


def group_schema(k: int) -> dict[str, Any]:
    """JSON schema of a group reply with exactly ``k`` entries, candidates numbered 1..k."""
    entry = {"type": "object",
             "properties": {"candidate": {"type": "integer", "enum": list(range(1, k + 1))},
                            "reasoning": {"type": "string"}, "score": {"type": "integer", "enum": list(SCORES)}},
             "required": ["candidate", "reasoning", "score"], "additionalProperties": False}
    return {"type": "object",
            "properties": {"scores": {"type": "array", "items": entry, "minItems": k, "maxItems": k}},
            "required": ["scores"], "additionalProperties": False}


def group_response_format(structured_output: str | None, k: int) -> dict[str, Any] | None:
    """``response_format`` for a group of ``k``, in the dialect of ``openai_backend.response_format_for``."""
    if structured_output is None:
        return None
    if structured_output == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "judge_group_verdicts", "strict": True,
                                                       "schema": group_schema(k)}}
    from slate.judge.openai_backend import llama_cpp_schema  # here: openai_backend imports this module

    return {"type": "json_object", "schema": llama_cpp_schema(group_schema(k))}


def _is_score(value: Any) -> bool:
    # bool is an int subclass: {"score": true} must not read as 1.
    return isinstance(value, int) and not isinstance(value, bool) and value in SCORES


def _scores_from_json(reply: str, k: int) -> dict[int, tuple[int, str]] | str:
    try:
        # strict=False: a control character inside a reasoning string (a small judge under llama.cpp's grammar
        # writes them) does not void the scores; the structure is checked below all the same.
        obj = load_json_reply(reply, strict=False)
    except json.JSONDecodeError as exc:
        return f"group reply is not JSON ({exc.msg}): {reply[:200]!r}"
    entries = obj.get("scores") if isinstance(obj, dict) else None
    if not isinstance(entries, list):
        return "group reply has no list under 'scores'"
    scores: dict[int, tuple[int, str]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            return f"group reply entry {entry!r:.60} is not an object"
        number, score = entry.get("candidate"), entry.get("score")
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= k:
            return f"group reply names candidate {number!r:.20}, not one of 1..{k}"
        if number in scores:
            return f"group reply scores candidate {number} twice"
        if not _is_score(score):
            return f"group reply gives candidate {number} score {score!r:.20}, not the integer -1, 0 or 1"
        reasoning = entry.get("reasoning", "")
        scores[number] = (score, reasoning if isinstance(reasoning, str) else json.dumps(reasoning))
    return scores


def _scores_from_tags(reply: str, k: int) -> dict[int, tuple[int, str]] | str:
    scores: dict[int, tuple[int, str]] = {}
    start = 0
    for match in _GROUP_SCORE_TAG.finditer(reply):
        number, raw = int(match.group(1)), match.group(2).strip()
        if not 1 <= number <= k:
            return f"group reply names candidate {number}, not one of 1..{k}"
        if number in scores:
            return f"group reply scores candidate {number} twice"
        if raw not in {"-1", "0", "1", "+1"}:
            return f"group reply gives candidate {number} score {raw[:20]!r}, not -1, 0 or 1"
        scores[number] = (int(raw), reply[start:match.start()].strip())
        start = match.end()
    if not scores:
        return f"no <score candidate=...> tag in group reply: {reply[-200:]!r}"
    return scores


def parse_group_reply(reply: str | None, k: int, structured: bool = False) -> list[JudgeVerdict] | str:
    """``k`` verdicts, candidate 1 first, or the reason the reply does not hold exactly one valid score each.

    With ``structured``, a reply that is not JSON still gets a chance by tag (a server may ignore
    ``response_format``), as ``parse.parse_reply`` does for single items.
    """
    if not reply or not reply.strip():
        return "empty group reply"
    scores = _scores_from_json(reply, k) if structured else _scores_from_tags(reply, k)
    if isinstance(scores, str) and structured and _GROUP_SCORE_TAG.search(reply):
        scores = _scores_from_tags(reply, k)
    if isinstance(scores, str):
        return scores
    if len(scores) != k:
        missing = sorted(set(range(1, k + 1)) - set(scores))
        return f"group reply scores {len(scores)} of {k} candidates (missing {missing})"
    return [JudgeVerdict(score=scores[n][0], explanation=scores[n][1][-_EXPLANATION_CHARS:], failed=False)
            for n in range(1, k + 1)]


def planned_requests(items: list[JudgeItem], mode: str, max_group_size: int = 8,
                     structured: bool = False, max_prefixes: int = 1) -> list[list[Message]]:
    """The prompts a judge in ``mode`` (item, group or group_steps) sends for one batch on a cold cache, before any
    fallback: identical items once; in group mode one prompt per sibling group, a lone item as an item prompt; in
    group_steps mode first one prompt per step group (``step_group.py``; up to ``max_prefixes`` prefixes each),
    then the items left over as in group mode.
    For costing a run without a server (``benchmarks/judge_throughput.py`` counts their tokens)."""
    from slate.judge.step_group import build_step_group_messages, find_steps, step_groups  # it imports this module

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
