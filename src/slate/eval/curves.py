"""Learning curves by policy tokens: a stratified evaluation set, tokens to a threshold, the area under the curve,
and the ratio of two arms' means with an interval. Pure functions of numbers (and question records).

A curve is a list of (tokens, EM) points in token order, starting at (0, the start's EM). Definitions, fixed before
the hardness study's runs (docs/experiments.md):

- threshold = start EM + ``fraction`` · (best arm's final EM − start EM), fraction 0.8: the best arm is the one
  whose mean over seeds of the last evaluation's EM is highest in that setting.
- tokens to threshold: the first evaluation at or above the threshold, interpolated linearly from the evaluation
  before it; a run that never reaches it is censored at the budget (counted as the budget, and reported as such).
- AUC: the mean dev EM over the budget, (1/budget) ∫_0^budget EM(t) dt, by trapezoids between evaluations, flat
  from the last evaluation to the budget (a curve stops changing when training stops).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats

from slate.data.records import QARecord

Curve = Sequence[tuple[float, float]]


def stratified(records: list[QARecord], count: int) -> list[QARecord]:
    """``count`` questions balanced over hop counts: the first count // H of each of the H hop counts, in file
    order (the same questions for every arm and every run). Records without a hop count: the first ``count``."""
    hops = sorted({r.hops for r in records if r.hops is not None})
    if not hops:
        return records[:count]
    per_hop = max(1, count // len(hops))
    return [r for h in hops for r in [r for r in records if r.hops == h][:per_hop]]


def threshold(start_em: float, best_final_em: float, fraction: float = 0.8) -> float:
    """start + fraction · (best − start)."""
    return start_em + fraction * (best_final_em - start_em)


def tokens_to_threshold(curve: Curve, level: float, budget: float) -> tuple[float, bool]:
    """(tokens at which the curve first reaches ``level``, whether it did); (budget, False) if it never does."""
    previous: tuple[float, float] | None = None
    for tokens, em in curve:
        if tokens > budget:
            break
        if em >= level:
            if previous is None or previous[1] >= level:
                return float(tokens), True
            t0, e0 = previous
            return t0 + (level - e0) / (em - e0) * (tokens - t0), True
        previous = (tokens, em)
    return float(budget), False


def area_under_curve(curve: Curve, budget: float) -> float:
    """(1/budget) ∫_0^budget EM dt: trapezoids between points, the curve cut at the budget (interpolated there) and
    held at its last value up to it."""
    points = [(float(t), float(e)) for t, e in curve]
    area, (t0, e0) = 0.0, points[0]
    for t1, e1 in points[1:]:
        if t1 >= budget:
            e_cut = e0 + (e1 - e0) * (budget - t0) / (t1 - t0) if t1 > t0 else e1
            return (area + (budget - t0) * (e0 + e_cut) / 2) / budget
        area += (t1 - t0) * (e0 + e1) / 2
        t0, e0 = t1, e1
    return (area + (budget - t0) * e0) / budget


def ratio_interval(numerator: list[float], denominator: list[float],
                   confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """mean(numerator) / mean(denominator), with a t-interval on the log of the ratio by the delta method:
    var(log ratio) ≈ s_a² / (n_a · ā²) + s_b² / (n_b · b̄²), n_a + n_b − 2 degrees of freedom. No interval with
    fewer than two values on a side."""
    a, b = statistics.fmean(numerator), statistics.fmean(denominator)
    ratio = a / b
    if len(numerator) < 2 or len(denominator) < 2:
        return ratio, None, None
    variance = (statistics.variance(numerator) / (len(numerator) * a * a)
                + statistics.variance(denominator) / (len(denominator) * b * b))
    half = stats.t.ppf(0.5 + confidence / 2, len(numerator) + len(denominator) - 2) * math.sqrt(variance)
    return ratio, ratio * math.exp(-half), ratio * math.exp(half)
