from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from slate.retrieval.base import Hit
from slate.rollout.actions import TAGS, parse_step, render_information
from slate.rollout.prompt import build_prompt


def test_search_and_answer_steps() -> None:
    step = parse_step("<think> I need the founder. </think><search> Who founded Velmora Labs? </search>")
    assert (step.think, step.action, step.content, step.has_think) == \
        ("I need the founder.", "search", "Who founded Velmora Labs?", True)
    step = parse_step("<think>done</think>\n<answer> Port Dalvin </answer> trailing")
    assert (step.action, step.content) == ("answer", "Port Dalvin")


def test_invalid_steps() -> None:
    assert parse_step("<think>no action</think>").action == "invalid"
    assert parse_step("<think>x</think><search>   </search>").action == "invalid"  # empty query
    assert parse_step("<think>x</think><search>a <answer>b</answer></search>").action == "invalid"  # nested
    assert parse_step("<search>unclosed").action == "invalid"
    # no think block is allowed but recorded
    step = parse_step("<answer>x</answer>")
    assert (step.action, step.has_think) == ("answer", False)


def test_first_action_after_think_wins() -> None:
    step = parse_step("<think>a</think><answer>first</answer><search>second</search>")
    assert (step.action, step.content) == ("answer", "first")


tag_soup = st.lists(st.one_of(st.sampled_from(TAGS), st.text(max_size=8)), max_size=12).map("".join)


@given(st.one_of(st.text(), tag_soup))
def test_parser_is_total(text: str) -> None:
    step = parse_step(text)
    assert step.action in ("search", "answer", "invalid")
    if step.action != "invalid":
        assert step.content and step.content == step.content.strip()
        assert not any(tag in step.content for tag in TAGS)


@given(st.text(alphabet=st.characters(blacklist_characters="<>"), min_size=1).filter(lambda s: s.strip()),
       st.sampled_from(["search", "answer"]))
def test_round_trip(content: str, action: str) -> None:
    step = parse_step(f"<think>t</think><{action}>{content}</{action}>")
    assert (step.action, step.content) == (action, content.strip())


def test_information_block_format() -> None:
    block = render_information([Hit("1", "Dalvin", "Dalvin is a city.", 2.0), Hit("2", "Orvania", "A country.", 1.0)])
    assert block == ("\n<information>Doc 1(Title: Dalvin) Dalvin is a city.\n"
                     "Doc 2(Title: Orvania) A country.</information>\n")


def test_prompt_template() -> None:
    assert build_prompt(" Who? ", "Q: {question}") == "Q: Who?"
    assert "<search>" in build_prompt("Who?")
