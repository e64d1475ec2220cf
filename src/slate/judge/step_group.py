"""Step-group judging: one request scores every dimension of the k sibling steps of one prefix.

Group mode (``group.py``) sends one request per sibling group *and dimension*, so each prompt still carries the
system prompt, a rubric and the trajectory. ``judge.mode=group_steps`` puts all of a step's dimensions in one
request: search steps are judged on thinking and query, answer steps on thinking and answer.

    group mode:       2 requests per prefix, each  system + one rubric + question + trajectory + k candidates
    group_steps mode: 1 request per prefix,        system + both rubrics + question + trajectory (+ ground truth)
                                                   + k candidates, each with its thinking and its query or answer

A step is a think item followed by its query or answer item with the same question and trajectory, as
``rewards/judged.py::judge_items`` emits them; a query item also carries that thinking. Steps whose action kind and
``shared_part`` agree are one step group (a prefix whose candidates mix searches and answers makes two); a group is
cut into chunks of at most ``max_group_size`` candidates. Items that are not part of such a pair are left to group
mode. A step group of one candidate is still one request instead of two.

Several prefixes per request (``max_prefixes``, ``judge.max_prefixes_per_request``): the system prompt, the preamble,
the rubrics and the instruction are most of a step-group prompt (about 3,300 of 4,800 characters on the tiny world),
so step groups of one action kind from different prefixes (other questions, in one sampler step) may share one
request, each prefix a numbered case with its own question, trajectory and ground truth, the candidates numbered
1..N across the cases:

    packed:           1 request per up to max_prefixes prefixes of one action kind (at most max_group_size
                      candidates in all): system + both rubrics + for each case its question + trajectory (+ ground
                      truth) + its candidates

The judge must grade each candidate against its own case only; whether a given judge keeps the cases apart is what
``slate judge audit`` with this setting measures (the reply format and the checks are those of one prefix).

The reply must hold exactly one score per candidate *and* dimension: ``<score candidate="i" dimension="think">N
</score>`` lines, or with structured output ``{"think": [{"candidate": i, "reasoning": str, "score": N}, ...],
"query": [...]}`` with exactly k entries under each dimension asked and no other key. Anything else (a dimension
missing or not asked, k − 1 scores in one dimension, a number twice or outside 1..k, a score outside {−1, 0, 1},
prose, an empty reply) fails the whole step group; the backend then judges its items in per-dimension groups, and
those that fail again item by item, each fallback counted in ``group_fallbacks``.

Candidate text is neutralised and fenced as in group mode (``prompts.fenced``): a candidate cannot close its fence,
open another's or another dimension's, or plant a score tag; the parser reads only the judge's reply.
"""

from __future__ import annotations

import json
import re
from typing import Any

from slate.judge.group import GROUP_PREAMBLE, shared_part
from slate.judge.parse import load_json_reply
from slate.judge.prompts import RUBRICS, SYSTEM_PROMPT, Message, fenced
from slate.judge.types import SCORES, JudgeItem, JudgeKind, JudgeVerdict

Step = tuple[JudgeItem, JudgeItem]  # (think item, query or answer item) of one candidate

STEP_PREAMBLE = """\
Each candidate step below is graded on {n} dimensions, each against its own rubric: {names}. Grade every \
dimension of every candidate on its own: one dimension's verdict must not change another's."""

CASES_PREAMBLE = """\
The candidates below come from {n} separate cases: each case has its own question and trajectory so far, followed \
by its own candidates. Grade each candidate only against its own case; the other cases are unrelated to it."""

_STEP_TAG_INSTRUCTION = """\
For each candidate in order and each of its dimensions ({names}), write one or two sentences of judgement, then \
one line of the form <score candidate="I" dimension="D">N</score>, where I is the candidate's number, D is the \
dimension's name ({names}) and N is -1, 0 or 1. Write exactly one such line for each of the {k} candidates, \
numbered 1 to {k}, and each dimension: {total} lines in all, and nothing after the last one."""

_STEP_JSON_INSTRUCTION = """\
Reply with a JSON object only, with one key per dimension ({names}); under each, a list with exactly one entry \
{{"candidate": I, "reasoning": "<one or two sentences>", "score": N}} for each of the {k} candidates, I = 1 to {k} \
in order, where N is the integer -1, 0 or 1. Give each reasoning before its score."""

_LABELS: dict[JudgeKind, str] = {"think": "THINKING", "query": "SEARCH_QUERY", "answer": "FINAL_ANSWER"}
# Digits only for the candidate: the format line of the instruction (candidate="I" dimension="D") never parses.
_STEP_SCORE_TAG = re.compile(r"<score\s+candidate\s*=\s*[\"']?(\d+)[\"']?\s+dimension\s*=\s*[\"']?(\w+)[\"']?\s*>"
                             r"(.*?)</score>", re.IGNORECASE | re.DOTALL)
_EXPLANATION_CHARS = 1000


def is_step(think: JudgeItem, action: JudgeItem) -> bool:
    """Whether ``think`` and ``action`` are the two items of one candidate step (``judge_items`` order)."""
    return (think.kind == "think" and action.kind in ("query", "answer") and think.question == action.question
            and think.context == action.context and (action.kind == "answer" or action.think == think.text))


def find_steps(items: list[JudgeItem]) -> list[tuple[int, int]]:
    """(think index, action index) of every think item directly followed by its query or answer item."""
    pairs: list[tuple[int, int]] = []
    index = 0
    while index + 1 < len(items):
        if is_step(items[index], items[index + 1]):
            pairs.append((index, index + 1))
            index += 2
        else:
            index += 1
    return pairs


def step_dimensions(step: Step) -> tuple[JudgeKind, JudgeKind]:
    return ("think", step[1].kind)


def step_shared_part(step: Step) -> tuple[Any, ...]:
    """Equal for sibling steps of one prefix with the same action kind (answers also share the ground truth)."""
    think, action = step
    return (action.kind, shared_part(think), action.golden_answers)


def step_groups(steps: list[Step], max_group_size: int, max_prefixes: int = 1) -> list[list[int]]:
    """Indices of ``steps`` partitioned into step groups, in order of first appearance, chunked to
    ``max_group_size``; with ``max_prefixes`` > 1, chunks of one action kind from different prefixes are then packed
    into one request (first fit, in order), up to ``max_prefixes`` prefixes and ``max_group_size`` candidates."""
    by_shared: dict[tuple[Any, ...], list[int]] = {}
    for index, step in enumerate(steps):
        by_shared.setdefault(step_shared_part(step), []).append(index)
    chunks = [members[start:start + max_group_size] for members in by_shared.values()
              for start in range(0, len(members), max_group_size)]
    if max_prefixes <= 1:
        return chunks
    packed: list[list[list[int]]] = []  # requests, each a list of chunks (one per prefix)
    for chunk in chunks:
        kind = steps[chunk[0]][1].kind
        home = next((request for request in packed if steps[request[0][0]][1].kind == kind
                     and len(request) < max_prefixes and sum(map(len, request)) + len(chunk) <= max_group_size), None)
        if home is None:
            packed.append([chunk])
        else:
            home.append(chunk)
    return [[index for chunk in request for index in chunk] for request in packed]


def step_cases(steps: list[Step]) -> list[list[int]]:
    """Indices of ``steps`` by prefix (case), in order; raises if one case's candidates are not contiguous, since the
    prompt lists each case's candidates under it, numbered in order."""
    cases: list[list[int]] = []
    shared_of: list[tuple[Any, ...]] = []
    for index, step in enumerate(steps):
        shared = step_shared_part(step)
        if shared_of and shared == shared_of[-1]:
            cases[-1].append(index)
        elif shared in shared_of:
            raise ValueError("build_step_group_messages: one prefix's candidates are not contiguous; group them with "
                             "step_groups first.")
        else:
            shared_of.append(shared)
            cases.append([index])
    return cases


def _candidate_block(number: int, step: Step) -> str:
    think, action = step
    return (f"Candidate {number}:\n" + fenced(f"CANDIDATE_{number}_THINKING", think.text)
            + "\n" + fenced(f"CANDIDATE_{number}_{_LABELS[action.kind]}", action.text))


def _context_blocks(step: Step, case: int | None = None) -> list[str]:
    """The question, trajectory and (for answers) ground truth of one prefix, fenced; named per case when packed."""
    think, action = step
    prefix = "" if case is None else f"CASE_{case}_"
    blocks = [fenced(f"{prefix}QUESTION", think.question),
              fenced(f"{prefix}TRAJECTORY_SO_FAR", think.context or "(this is the first step)")]
    if action.kind == "answer":
        blocks.append(fenced(f"{prefix}GROUND_TRUTH",
                             "\n".join(f"- {a}" for a in action.golden_answers) or "(none given)"))
    return blocks


def build_step_group_messages(steps: list[Step], structured: bool = False) -> list[Message]:
    """The chat messages for one step group: each dimension's rubric once, the shared context once, then
    candidates 1..k with their thinking and their query or answer. Steps of one action kind from several prefixes
    (``step_groups`` with ``max_prefixes`` > 1) become numbered cases, each with its context and its candidates."""
    first = steps[0]
    if any(step[1].kind != first[1].kind or not is_step(*step) for step in steps):
        raise ValueError("build_step_group_messages: the steps are not sibling steps of one kind; group them with "
                         "step_groups first.")
    cases = step_cases(steps)
    dimensions = step_dimensions(first)
    names = " and ".join(dimensions)
    k = len(steps)
    parts = [GROUP_PREAMBLE, STEP_PREAMBLE.format(n=len(dimensions), names=names)]
    if len(cases) > 1:
        parts.append(CASES_PREAMBLE.format(n=len(cases)))
    parts += [f'Dimension "{kind}":\n{RUBRICS[kind]}' for kind in dimensions]
    packed = len(cases) > 1
    for case, members in enumerate(cases, start=1):
        if packed:
            span = (f"candidate {members[0] + 1}" if len(members) == 1
                    else f"candidates {members[0] + 1} to {members[-1] + 1}")
            parts.append(f"Case {case} ({span}):")
        parts += _context_blocks(steps[members[0]], case if packed else None)
        parts += [_candidate_block(index + 1, steps[index]) for index in members]
    instruction = _STEP_JSON_INSTRUCTION if structured else _STEP_TAG_INSTRUCTION
    parts.append(instruction.format(names=names, k=k, total=k * len(dimensions)))
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


def step_group_schema(k: int, dimensions: tuple[str, ...]) -> dict[str, Any]:
    """JSON schema of a step-group reply: one list of exactly ``k`` entries per dimension, candidates 1..k."""
    entry = {"type": "object",
             "properties": {"candidate": {"type": "integer", "enum": list(range(1, k + 1))},
                            "reasoning": {"type": "string"}, "score": {"type": "integer", "enum": list(SCORES)}},
             "required": ["candidate", "reasoning", "score"], "additionalProperties": False}
    scores = {"type": "array", "items": entry, "minItems": k, "maxItems": k}
    return {"type": "object", "properties": {dimension: scores for dimension in dimensions},
            "required": list(dimensions), "additionalProperties": False}


def step_group_response_format(structured_output: str | None, k: int,
                               dimensions: tuple[str, ...]) -> dict[str, Any] | None:
    """``response_format`` for a step group, in the dialect of ``openai_backend.response_format_for``."""
    if structured_output is None:
        return None
    schema = step_group_schema(k, dimensions)
    if structured_output == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "judge_step_group_verdicts", "strict": True,
                                                       "schema": schema}}
    from slate.judge.openai_backend import llama_cpp_schema  # here: openai_backend imports this module

    return {"type": "json_object", "schema": llama_cpp_schema(schema)}


def _is_score(value: Any) -> bool:
    # bool is an int subclass: {"score": true} must not read as 1.
    return isinstance(value, int) and not isinstance(value, bool) and value in SCORES


Scores = dict[tuple[str, int], tuple[int, str]]  # (dimension, candidate) -> (score, reasoning)


def _scores_from_json(reply: str, k: int, dimensions: tuple[str, ...]) -> Scores | str:
    try:
        # strict=False: a control character inside a reasoning string (a small judge under llama.cpp's grammar
        # writes them) does not void the scores; the structure is checked below all the same.
        obj = load_json_reply(reply, strict=False)
    except json.JSONDecodeError as exc:
        return f"step-group reply is not JSON ({exc.msg}): {reply[:200]!r}"
    if not isinstance(obj, dict):
        return "step-group reply is not a JSON object"
    unknown = sorted(set(obj) - set(dimensions))
    if unknown:
        return f"step-group reply scores dimension {unknown[0]!r:.30}, not one of {', '.join(dimensions)}"
    scores: Scores = {}
    for dimension in dimensions:
        entries = obj.get(dimension)
        if not isinstance(entries, list):
            return f"step-group reply has no list under {dimension!r}"
        for entry in entries:
            if not isinstance(entry, dict):
                return f"step-group reply entry {entry!r:.60} is not an object"
            number, score = entry.get("candidate"), entry.get("score")
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= k:
                return f"step-group reply names candidate {number!r:.20}, not one of 1..{k}"
            if (dimension, number) in scores:
                return f"step-group reply scores candidate {number} twice on {dimension}"
            if not _is_score(score):
                return (f"step-group reply gives candidate {number} {dimension} score {score!r:.20}, not the "
                        "integer -1, 0 or 1")
            reasoning = entry.get("reasoning", "")
            scores[(dimension, number)] = (score, reasoning if isinstance(reasoning, str) else json.dumps(reasoning))
    return scores


def _scores_from_tags(reply: str, k: int, dimensions: tuple[str, ...]) -> Scores | str:
    scores: Scores = {}
    start = 0
    for match in _STEP_SCORE_TAG.finditer(reply):
        number, dimension, raw = int(match.group(1)), match.group(2).lower(), match.group(3).strip()
        if not 1 <= number <= k:
            return f"step-group reply names candidate {number}, not one of 1..{k}"
        if dimension not in dimensions:
            return f"step-group reply scores dimension {dimension!r:.30}, not one of {', '.join(dimensions)}"
        if (dimension, number) in scores:
            return f"step-group reply scores candidate {number} twice on {dimension}"
        if raw not in {"-1", "0", "1", "+1"}:
            return f"step-group reply gives candidate {number} {dimension} score {raw[:20]!r}, not -1, 0 or 1"
        scores[(dimension, number)] = (int(raw), reply[start:match.start()].strip())
        start = match.end()
    if not scores:
        return f"no <score candidate=... dimension=...> tag in step-group reply: {reply[-200:]!r}"
    return scores


def parse_step_group_reply(reply: str | None, k: int, dimensions: tuple[str, ...],
                           structured: bool = False) -> dict[str, list[JudgeVerdict]] | str:
    """Per dimension, ``k`` verdicts (candidate 1 first), or the reason the reply does not hold exactly one valid
    score for each candidate and dimension. A structured reply that is not JSON still gets a chance by tag."""
    if not reply or not reply.strip():
        return "empty step-group reply"
    scores = _scores_from_json(reply, k, dimensions) if structured else _scores_from_tags(reply, k, dimensions)
    if isinstance(scores, str) and structured and _STEP_SCORE_TAG.search(reply):
        scores = _scores_from_tags(reply, k, dimensions)
    if isinstance(scores, str):
        return scores
    for dimension in dimensions:
        missing = [n for n in range(1, k + 1) if (dimension, n) not in scores]
        if missing:
            return f"step-group reply scores {k - len(missing)} of {k} candidates on {dimension} (missing {missing})"
    return {dimension: [JudgeVerdict(score=scores[(dimension, n)][0], failed=False,
                                     explanation=scores[(dimension, n)][1][-_EXPLANATION_CHARS:])
                        for n in range(1, k + 1)] for dimension in dimensions}
