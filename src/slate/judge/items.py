"""What the judge sees of a step: its ``JudgeItem``s, built from the step in its context.

Each judged step becomes two items: a ``think`` item for its ``<think>`` text and a ``query`` item (a search) or an
``answer`` item (an answer). Both carry the question, the trajectory before the step as text (``render_context``),
the ids of the passages retrieved before the step and the gold chain (for the oracle); a query item also carries the
preceding thinking, an answer item the golden answers. ``judge_items`` serves SLATE's reward
(``rewards/judged.py``); ``items_from_episodes`` the audit of a judge on whole episodes (``slate judge audit``).

Steps the reward never sends to the judge are skipped by ``items_from_episodes``: invalid steps (no parsable action;
the reward gives them −2 without a judge call) and answers forced at the step budget (not scored, as in the paper).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from slate.judge.types import JudgeItem
from slate.rollout.actions import render_information
from slate.rollout.episode import Episode, StepToScore


def render_context(episode: Episode, upto: int, max_passage_chars: int | None = None) -> str:
    """The trajectory before step ``upto`` (0-based) as text: each step followed by what the environment said,
    each retrieved passage cut to its first ``max_passage_chars`` characters (None: in full)."""
    parts = []
    for step in episode.steps[:upto]:
        parts.append(step.text.strip())
        if step.action == "search":
            hits = step.hits if max_passage_chars is None else [
                replace(hit, text=hit.text[:max_passage_chars]) for hit in step.hits]
            parts.append(render_information(hits).strip())
    return "\n".join(parts)


def context_cut(episode: Episode, upto: int, max_passage_chars: int | None) -> tuple[int, int]:
    """(passages cut, characters removed) when ``render_context`` cuts the passages before step ``upto``."""
    if max_passage_chars is None:
        return 0, 0
    lengths = [len(hit.text) for step in episode.steps[:upto] if step.action == "search" for hit in step.hits]
    over = [n - max_passage_chars for n in lengths if n > max_passage_chars]
    return len(over), sum(over)


def judge_items(target: StepToScore, max_context_chars: int | None = None) -> list[JudgeItem]:
    """The think item and the query or answer item of one step, as the judge sees them.

    Only the steps of ``target.episode`` before ``target.step_index`` (t, from 1) are read, so the judge never sees
    the step's own results (the query's novelty is judged before its retrieval) or anything after it.
    ``max_context_chars`` cuts each retrieved passage of that trajectory (``render_context``).
    """
    episode, step = target.episode, target.step
    upto = target.step_index - 1
    record = episode.record
    common = {"question": record.question, "context": render_context(episode, upto, max_context_chars),
              "retrieved_ids": tuple(episode.retrieved_ids(before_step=upto)), "chain": tuple(record.chain)}
    think = JudgeItem(kind="think", text=step.parsed.think, **common)
    if step.action == "search":
        return [think, JudgeItem(kind="query", text=step.parsed.content, think=step.parsed.think, **common)]
    return [think, JudgeItem(kind="answer", text=step.parsed.content, golden_answers=record.golden_answers,
                             **common)]


def items_from_episodes(episodes: Iterable[Episode], max_context_chars: int | None = None) -> list[JudgeItem]:
    """Two items per judged step (think, then query or answer), episode by episode, step by step.

    Invalid steps and forced answers are skipped: the SLATE reward does not ask the judge about them.
    ``max_context_chars`` cuts the retrieved passages of each item's context as ``judge.max_context_chars`` does.
    """
    items: list[JudgeItem] = []
    for episode in episodes:
        for index, step in enumerate(episode.steps):
            if step.action == "invalid" or step.is_forced:
                continue
            items += judge_items(StepToScore(episode, step, index + 1), max_context_chars)
    return items
