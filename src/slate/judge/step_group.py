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
"query": [...]}`` with exactly k entries under each dimension asked and no other key (read by ``replies.py``,
schema in ``schemas.py``). A reply that does not fails the whole step group; the backend then judges its items in
per-dimension groups, and those that fail again item by item, each fallback counted in ``group_fallbacks``.

Candidate text is neutralised and fenced as in group mode (``prompts.fenced``): a candidate cannot close its fence,
open another's or another dimension's, or plant a score tag; the parser reads only the judge's reply.
"""

from __future__ import annotations

from typing import Any

from slate.judge.group import GROUP_PREAMBLE, shared_part
from slate.judge.prompts import RUBRICS, SYSTEM_PROMPT, Message, fenced
from slate.judge.types import JudgeItem, JudgeKind

StepItems = tuple[JudgeItem, JudgeItem]  # (think item, query or answer item) of one candidate step

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


def step_dimensions(step: StepItems) -> tuple[JudgeKind, JudgeKind]:
    return ("think", step[1].kind)


def step_shared_part(step: StepItems) -> tuple[Any, ...]:
    """Equal for sibling steps of one prefix with the same action kind (answers also share the ground truth)."""
    think, action = step
    return (action.kind, shared_part(think), action.golden_answers)


def step_groups(steps: list[StepItems], max_group_size: int, max_prefixes: int = 1) -> list[list[int]]:
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


def step_cases(steps: list[StepItems]) -> list[list[int]]:
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


def _candidate_block(number: int, step: StepItems) -> str:
    think, action = step
    return (f"Candidate {number}:\n" + fenced(f"CANDIDATE_{number}_THINKING", think.text)
            + "\n" + fenced(f"CANDIDATE_{number}_{_LABELS[action.kind]}", action.text))


def _context_blocks(step: StepItems, case: int | None = None) -> list[str]:
    """The question, trajectory and (for answers) ground truth of one prefix, fenced; named per case when packed."""
    think, action = step
    prefix = "" if case is None else f"CASE_{case}_"
    blocks = [fenced(f"{prefix}QUESTION", think.question),
              fenced(f"{prefix}TRAJECTORY_SO_FAR", think.context or "(this is the first step)")]
    if action.kind == "answer":
        blocks.append(fenced(f"{prefix}GROUND_TRUTH",
                             "\n".join(f"- {a}" for a in action.golden_answers) or "(none given)"))
    return blocks


def build_step_group_messages(steps: list[StepItems], structured: bool = False) -> list[Message]:
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
