from __future__ import annotations

import json
from pathlib import Path

import pytest

from slate.data.records import ChainHop
from slate.errors import ConfigError
from slate.judge.oracle import OracleJudge, solved_hops
from slate.judge.types import JudgeItem

# In which country lies the birthplace of the mayor of Ostrava?  Ostrava -> Lena Vargo -> Port Talis -> Meridia.
CHAIN = (
    ChainHop("Who is the mayor of Ostrava?", "Ostrava", "mayor", "Lena Vargo", "d-ostrava"),
    ChainHop("Where was Lena Vargo born?", "Lena Vargo", "born_in", "Port Talis", "d-vargo"),
    ChainHop("In which country is Port Talis located?", "Port Talis", "located_in", "Meridia", "d-talis"),
)
QUESTION = "In which country lies the birthplace of the mayor of Ostrava?"
SOLVED = {0: (), 1: ("d-ostrava", "d-x"), 2: ("d-x", "d-vargo", "d-ostrava"), 3: ("d-talis", "d-ostrava", "d-vargo")}


def score(kind: str, text: str, solved: int, context: str = "") -> tuple[int, str]:
    item = JudgeItem(kind, QUESTION, text, context=context, golden_answers=("Meridia",),  # type: ignore[arg-type]
                     retrieved_ids=SOLVED[solved], chain=CHAIN)
    verdict = OracleJudge().score([item])[0]
    assert not verdict.failed
    return verdict.score, verdict.explanation


def test_solved_hops_is_the_retrieved_prefix() -> None:
    assert [solved_hops(CHAIN, ids) for ids in SOLVED.values()] == [0, 1, 2, 3]
    assert solved_hops(CHAIN, ("d-vargo", "d-talis")) == 0  # later passages without the first hop: nothing solved


@pytest.mark.parametrize(("text", "solved", "expected"), [
    ("I must find out who the mayor of Ostrava is.", 0, 1),          # targets the next hop
    ("The mayor is surely Lena Vargo.", 0, -1),                       # guesses hop 0's answer before retrieving it
    ("Let me think step by step.", 0, 0),                             # vague
    ("Now I need the birthplace of Lena Vargo.", 1, 1),
    ("I should double-check Ostrava first.", 1, -1),                  # re-targets a solved hop only
    ("Vargo was probably born in Port Talis.", 1, -1),                # guesses hop 1's answer
    ("Port Talis is a city; which country is it in?", 2, 1),
    ("So the country is Meridia.", 2, -1),                            # final answer before its passage
    ("Port Talis lies in Meridia, that is the answer.", 3, 1),        # all solved, names the final answer
    ("Lena Vargo was born in Port Talis.", 3, -1),                    # all solved, re-targets solved hops
    ("I have what I need.", 3, 0),
])
def test_think_rubric(text: str, solved: int, expected: int) -> None:
    assert score("think", text, solved)[0] == expected


@pytest.mark.parametrize(("text", "solved", "context", "expected"), [
    ("mayor of Ostrava", 0, "", 1),
    ("Lena Vargo", 0, "", -1),                                        # a guess at hop 0's answer
    ("mayor", 0, "", -1),                                             # lone generic word
    ("famous people born in cities", 0, "", -1),                      # names no chain entity
    ("Ostrava mayor", 1, "<search>mayor of Ostrava</search>", -1),   # targets the solved hop only
    ("Vargo birthplace", 1, "", 0),                                   # part of "Lena Vargo"
    ("Lena Vargo birthplace", 1, "<search>Lena Vargo  birthplace!</search><information>..", -1),  # a repeat
    ("Lena Vargo birthplace", 1, "<search>mayor of Ostrava</search><information>..", 1),
    ("Talis", 2, "", 0),                                              # look-alike root of "Port Talis"
    ("Port Talis country", 2, "", 1),
    ("Meridia", 3, "", -1),                                           # everything retrieved: should answer
])
def test_query_rubric(text: str, solved: int, context: str, expected: int) -> None:
    assert score("query", text, solved, context)[0] == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Meridia", 1), ("the meridia.", 1),   # EM after normalisation
    ("Republic of Meridia", 0),              # F1 = 2·(1/2·1)/(1/2+1) = 2/3 > 0: partly right
    ("Port Talis", -1), ("", -1),
])
def test_answer_rubric(text: str, expected: int) -> None:
    assert score("answer", text, 0)[0] == expected


def test_items_without_chain_fail_but_answers_need_none() -> None:
    judge = OracleJudge()
    verdicts = judge.score([JudgeItem("think", "Q?", "t"), JudgeItem("answer", "Q?", "x", golden_answers=("x",))])
    assert (verdicts[0].failed, verdicts[0].score, verdicts[1].failed, verdicts[1].score) == (True, 0, False, 1)
    assert judge.metrics()["judge/failures"] == 1


def test_noise_changes_about_two_thirds_of_noise_rate_and_is_deterministic() -> None:
    items = [JudgeItem("answer", f"question {i}?", "Meridia", golden_answers=("Meridia",)) for i in range(3000)]
    clean = [v.score for v in OracleJudge().score(items)]
    assert set(clean) == {1}
    noisy = [v.score for v in OracleJudge(noise=0.3, seed=1).score(items)]
    changed = sum(a != b for a, b in zip(clean, noisy, strict=True)) / len(items)
    assert abs(changed - 0.3 * 2 / 3) < 0.03  # binomial std at p = 0.2, n = 3000 is 0.0073
    assert noisy == [v.score for v in OracleJudge(noise=0.3, seed=1).score(items)]  # same items, same scores
    assert noisy != [v.score for v in OracleJudge(noise=0.3, seed=2).score(items)]
    all_random = [v.score for v in OracleJudge(noise=1.0).score(items)]
    assert abs(sum(s != 1 for s in all_random) / len(items) - 2 / 3) < 0.03
    with pytest.raises(ConfigError, match="noise"):
        OracleJudge(noise=1.5)


def test_gold_steps_of_the_tiny_world_all_score_plus_one(tiny_world: Path) -> None:
    judge = OracleJudge()
    items = []
    for line in (tiny_world / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        chain = tuple(ChainHop(**hop) for hop in row["metadata"]["chain"])
        for solved, hop in enumerate(chain):
            retrieved = tuple(h.doc_id for h in chain[:solved])
            items.append(JudgeItem("query", row["question"], hop.sub_question, retrieved_ids=retrieved, chain=chain))
            items.append(JudgeItem("think", row["question"], f"Next: {hop.sub_question}", retrieved_ids=retrieved,
                                   chain=chain))
        items.append(JudgeItem("answer", row["question"], row["golden_answers"][0],
                               golden_answers=tuple(row["golden_answers"])))
    verdicts = judge.score(items)
    wrong = [(item.kind, item.text, v.explanation) for item, v in zip(items, verdicts, strict=True) if v.score != 1]
    assert len(items) > 50 and not wrong, wrong[:5]
