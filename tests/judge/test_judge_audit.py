from __future__ import annotations

import math

import pytest

from slate.judge.audit import agreement, audit, format_audit_markdown
from slate.judge.types import JudgeItem, JudgeVerdict


class ScriptedJudge:
    def __init__(self, name: str, scores: list[int], failed: tuple[int, ...] = ()) -> None:
        self.name = name
        self.scores = scores
        self.failed = failed

    def score(self, items: list[JudgeItem]) -> list[JudgeVerdict]:
        return [JudgeVerdict.failure("x") if i in self.failed else JudgeVerdict(s, "")
                for i, s in enumerate(self.scores[: len(items)])]

    def metrics(self) -> dict[str, float]:
        return {}


def test_perfect_agreement_is_kappa_one_even_with_one_label() -> None:
    assert agreement([1, 0, -1, 1], [1, 0, -1, 1]).kappa == 1.0
    single = agreement([1, 1, 1], [1, 1, 1])
    assert (single.kappa, single.accuracy) == (1.0, 1.0)  # sklearn alone gives NaN (0/0) here


def test_worked_example_by_hand() -> None:
    # oracle [1, 1, 0, -1], judge [1, 0, 0, -1]: p_o = 3/4.
    # Label shares: oracle (-1, 0, 1) = (1, 1, 2)/4; judge = (1, 2, 1)/4.
    # p_e = (1·1 + 1·2 + 2·1)/16 = 5/16;  kappa = (3/4 - 5/16)/(1 - 5/16) = (7/16)/(11/16) = 7/11.
    result = agreement(judge_scores=[1, 0, 0, -1], oracle_scores=[1, 1, 0, -1], kind="query")
    assert result.accuracy == 0.75
    assert result.kappa == pytest.approx(7 / 11, abs=1e-12)
    # rows = oracle (-1, 0, 1), columns = judge: the oracle's second +1 was judged 0.
    assert result.confusion == ((1, 0, 0), (0, 1, 0), (0, 1, 1))


def test_systematic_disagreement_is_negative() -> None:
    # judge flips every sign: p_o = 0, p_e = (1·1 + 1·1)/4 = 1/2, kappa = (0 - 1/2)/(1/2) = -1.
    assert agreement([-1, 1], [1, -1]).kappa == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="paired"):
        agreement([1], [1, 0])
    assert math.isnan(agreement([], []).kappa)


def test_audit_splits_by_dimension_and_formats_markdown() -> None:
    items = [JudgeItem("query", "Q", "a"), JudgeItem("query", "Q", "b"), JudgeItem("query", "Q", "c"),
             JudgeItem("query", "Q", "d"), JudgeItem("answer", "Q", "e"), JudgeItem("answer", "Q", "f")]
    oracle = ScriptedJudge("oracle", [1, 1, 0, -1, 1, -1])
    judge = ScriptedJudge("openai:m", [1, 0, 0, -1, 1, 0], failed=(5,))  # a failed verdict is left out
    report = audit(judge, oracle, items)
    assert list(report.dimensions) == ["query", "answer"]
    assert report.dimensions["query"].kappa == pytest.approx(7 / 11)
    answer = report.dimensions["answer"]
    # the failed answer item is not a 0 that agrees or disagrees: 1 scored item (1 vs 1), 1 failure apart
    assert (answer.count, answer.accuracy, answer.failures) == (1, 1.0, 1)
    text = format_audit_markdown(report)
    assert "## Judge audit: openai:m vs oracle" in text
    assert "| query | 4 | 0.750 | 0.636 | 0 |" in text
    assert "| 1 | 0 | 1 | 1 |" in text  # query confusion row of oracle label 1
