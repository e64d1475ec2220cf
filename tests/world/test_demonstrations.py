"""The scripted searcher's demonstrations: the gold chain step by step, with the hop countdown in each think."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from slate.data.records import read_qa_jsonl
from slate.rollout.actions import parse_step
from slate.world.demonstrations import MistakeRates, ScriptedSearcher, hops_to_go

COUNTDOWN = re.compile(r"\((last hop|\d hops to go)\)\.$")


@pytest.fixture(scope="module")
def world(tiny_world: Path, tiny_retriever):
    return tiny_world, tiny_retriever, read_qa_jsonl(tiny_world / "train.jsonl")


def test_hops_to_go_by_value() -> None:
    assert hops_to_go(1) == "(last hop)"
    assert hops_to_go(2) == "(2 hops to go)"
    assert hops_to_go(4) == "(4 hops to go)"


def test_perfect_demonstration_follows_the_chain_and_counts_down(world) -> None:
    world_dir, retriever, train = world
    searcher = ScriptedSearcher(world_dir, retriever, MistakeRates(0, 0, 0, 0), max_steps=5, top_k=3, seed=0)
    seen_hops = set()
    for record in train[:40]:
        steps = searcher.demonstrate(record)
        hops = len(record.chain)
        seen_hops.add(hops)
        assert len(steps) == hops + 1  # one search per hop, then the answer
        for index, (step, hop) in enumerate(zip(steps[:-1], record.chain, strict=True)):
            parsed = parse_step(step.text)
            assert parsed.action == "search" and hop.entity in parsed.content  # the hop's own entity is queried
            assert parsed.think.endswith(hops_to_go(hops - index) + ".")
            assert step.hits  # every search carries what it retrieved
        answer = parse_step(steps[-1].text)
        assert answer.action == "answer" and answer.content == record.chain[-1].answer
        assert not COUNTDOWN.search(answer.think)
    assert len(seen_hops) >= 2  # the check covered chains of several lengths


def test_a_repeated_search_keeps_its_countdown(world) -> None:
    world_dir, retriever, train = world
    searcher = ScriptedSearcher(world_dir, retriever, MistakeRates(1.0, 0, 0, 0), max_steps=10, top_k=3, seed=0)
    record = next(r for r in train if len(r.chain) >= 2)
    thinks = [parse_step(step.text).think for step in searcher.demonstrate(record)[:-1]]
    # every hop: a vague search, then "That did not help." and the proper one, both with the same count
    counts = [COUNTDOWN.search(think).group(1) for think in thinks]
    expected = [hops_to_go(len(record.chain) - i)[1:-1] for i in range(len(record.chain)) for _ in range(2)]
    assert counts == expected
    assert all(think.startswith("That did not help.") for think in thinks[1::2])


def test_a_long_chain_is_given_up_at_its_last_hop_and_a_short_one_is_not(world) -> None:
    world_dir, retriever, train = world
    always = ScriptedSearcher(world_dir, retriever, MistakeRates(0, 0, 0, 0, give_up=1.0, give_up_min_hops=3),
                              max_steps=5, top_k=3, seed=0)
    lengths = set()
    for record in train[:40]:
        steps = always.demonstrate(record)
        hops = len(record.chain)
        lengths.add(hops >= 3)
        answer = parse_step(steps[-1].text)
        if hops >= 3:  # every hop but the last searched, then the last hop's subject given as the answer
            assert len(steps) == hops
            assert answer.action == "answer" and answer.content == record.chain[-1].entity
            assert answer.content != record.chain[-1].answer
        else:
            assert len(steps) == hops + 1 and answer.content == record.chain[-1].answer
    assert lengths == {True, False}  # both kinds of chain were checked


def test_giving_up_off_leaves_every_other_mistake_where_it_was(world) -> None:
    # presets measured before the habit existed must keep their demonstrations (and so their checkpoints)
    world_dir, retriever, train = world
    default = ScriptedSearcher(world_dir, retriever, MistakeRates(), max_steps=5, top_k=3, seed=3)
    off = ScriptedSearcher(world_dir, retriever, MistakeRates(give_up=0.0), max_steps=5, top_k=3, seed=3)
    half = ScriptedSearcher(world_dir, retriever, MistakeRates(give_up=0.5), max_steps=5, top_k=3, seed=3)
    texts = {name: [[s.text for s in searcher.demonstrate(r)] for r in train[:60]]
             for name, searcher in (("default", default), ("off", off), ("half", half))}
    assert texts["off"] == texts["default"]
    assert texts["half"] != texts["default"]


def test_the_vague_habit_wastes_one_step_at_every_hop_whatever_the_budget(world) -> None:
    world_dir, retriever, train = world
    # max_steps = 5 leaves no spare step on a 4-hop question: a random vague query would be skipped, the habit is not
    always = ScriptedSearcher(world_dir, retriever, MistakeRates(0, 0, 0, 0, vague_habit=1.0), max_steps=9, top_k=3,
                              seed=0)
    record = next(r for r in train if len(r.chain) == 4)
    steps = always.demonstrate(record)
    assert len(steps) == 2 * 4 + 1  # a vague and a proper search per hop, then the answer
    for hop_index, hop in enumerate(record.chain):
        vague, proper = (parse_step(s.text) for s in steps[2 * hop_index: 2 * hop_index + 2])
        assert vague.content == hop.relation.replace("_", " ")  # one form: the bare relation
        assert proper.think.startswith("That did not help.") and hop.entity in proper.content
    assert parse_step(steps[-1].text).content == record.chain[-1].answer


def test_the_vague_habit_off_leaves_the_demonstrations_unchanged(world) -> None:
    world_dir, retriever, train = world
    default = ScriptedSearcher(world_dir, retriever, MistakeRates(), max_steps=5, top_k=3, seed=4)
    off = ScriptedSearcher(world_dir, retriever, MistakeRates(vague_habit=0.0), max_steps=5, top_k=3, seed=4)
    texts = [[[s.text for s in searcher.demonstrate(r)] for r in train[:60]] for searcher in (default, off)]
    assert texts[0] == texts[1]


def test_the_vague_habit_rate_is_kept_above_one_half(world) -> None:
    # 0.6 per hop over every hop of 200 demonstrations: the share of hops searched vaguely first is 0.6 ± 0.05
    world_dir, retriever, train = world
    searcher = ScriptedSearcher(world_dir, retriever, MistakeRates(0, 0, 0, 0, vague_habit=0.6), max_steps=13,
                                top_k=3, seed=1)
    hops = vague = 0
    for record in train[:200]:
        thinks = [parse_step(s.text).think for s in searcher.demonstrate(record)[:-1]]
        hops += len(record.chain)
        vague += sum(t.startswith("That did not help.") for t in thinks)
    assert abs(vague / hops - 0.6) < 0.05
