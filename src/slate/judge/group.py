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
output ``{"scores": [{"candidate": i, "reasoning": str, "score": N}, ...]}`` with exactly k entries (read by
``replies.py``, schema in ``schemas.py``). A reply that does not fails the whole group, which the backend then
judges item by item (counted in ``group_fallbacks``).

Each candidate's text is neutralised (``prompts.neutralise``) before it goes into its fence, so a candidate cannot
close its own fence, open another candidate's, or plant a score tag; the parser reads only the judge's reply.
"""

from __future__ import annotations

from typing import Any

from slate.judge.prompts import RUBRICS, SYSTEM_PROMPT, Message, fenced
from slate.judge.types import JudgeItem

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


def shared_part(item: JudgeItem) -> tuple[Any, ...]:
    """What the item's prompt holds besides the candidate's own text: equal for siblings, and only for them."""
    if item.kind == "answer":
        return (item.kind, item.question, item.golden_answers)
    return (item.kind, item.question, item.context)


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
