"""Learning-curve measures by hand: stratified questions, tokens to a threshold, AUC, the ratio interval."""

from __future__ import annotations

import math

import pytest

from slate.data.records import QARecord
from slate.eval.curves import area_under_curve, ratio_interval, stratified, threshold, tokens_to_threshold


def test_stratified_takes_the_first_of_each_hop_count_in_file_order() -> None:
    records = [QARecord(id=f"q{i}", question="?", golden_answers=("a",), metadata={"hops": 1 + i % 3})
               for i in range(30)]
    chosen = stratified(records, 6)  # 3 hop counts: 2 each, the first two of each in file order
    assert [r.id for r in chosen] == ["q0", "q3", "q1", "q4", "q2", "q5"]
    plain = [QARecord(id=f"p{i}", question="?", golden_answers=("a",)) for i in range(5)]
    assert [r.id for r in stratified(plain, 3)] == ["p0", "p1", "p2"]


def test_threshold_and_tokens_to_it_by_hand() -> None:
    assert threshold(0.2, 0.7) == pytest.approx(0.6)  # 0.2 + 0.8 * 0.5
    curve = [(0, 0.2), (10_000, 0.4), (20_000, 0.7), (30_000, 0.65)]
    # 0.6 is crossed between 10k (0.4) and 20k (0.7): 10k + (0.6 - 0.4) / 0.3 * 10k = 16,666.7
    tokens, reached = tokens_to_threshold(curve, 0.6, budget=40_000)
    assert reached and tokens == pytest.approx(16_666.667, abs=0.01)
    assert tokens_to_threshold(curve, 0.2, 40_000) == (0.0, True)  # the start is already there
    assert tokens_to_threshold(curve, 0.9, 40_000) == (40_000.0, False)  # never: censored at the budget
    assert tokens_to_threshold(curve, 0.6, 15_000) == (15_000.0, False)  # reached only after the budget


def test_area_under_the_curve_by_hand() -> None:
    curve = [(0, 0.0), (10, 1.0), (20, 1.0)]
    # trapezoids: 10 * 0.5 + 10 * 1.0 = 15, then flat at 1.0 from 20 to 40: +20; / 40 = 0.875
    assert area_under_curve(curve, 40) == pytest.approx(35 / 40)
    # cut at 15: 5 + 5 * 1.0 = 10, / 15
    assert area_under_curve(curve, 15) == pytest.approx(10 / 15)
    # cut inside a rising segment: at 5 the curve is 0.5, area 5 * 0.25 = 1.25, / 5 = 0.25
    assert area_under_curve(curve, 5) == pytest.approx(0.25)


def test_ratio_interval_by_hand() -> None:
    a, b = [2.0, 4.0], [1.0, 1.0]
    ratio, low, high = ratio_interval(a, b)
    # mean 3 / 1; var(log) = s_a^2 / (n_a a^2) = 2 / (2 * 9) = 1/9 (b has none); t(0.975, df 2) = 4.3027
    half = 4.302653 * math.sqrt(1 / 9)
    assert ratio == 3.0
    assert low == pytest.approx(3 * math.exp(-half), rel=1e-5) and high == pytest.approx(3 * math.exp(half), rel=1e-5)
    assert ratio_interval([2.0], [1.0, 3.0]) == (1.0, None, None)
