"""benchmarks/infogain_agreement.py: the agreement measures between the information gain and the oracle, by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _agreement_module():
    path = REPO_ROOT / "benchmarks" / "infogain_agreement.py"
    spec = importlib.util.spec_from_file_location("infogain_agreement", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cand(gain, oracle, query=None, action="search", hops=2):
    return {"action": action, "hops": hops, "step": 1, "infogain": gain, "oracle": oracle, "query_score": query}


def test_best_candidate_agreement_and_its_chance_level() -> None:
    agreement = _agreement_module()
    # the gain's best (0.5) is one of the oracle's two best (2.0): agrees; a random pick would land there 2 in 3
    group = [cand(0.5, 2.0, 1), cand(0.1, 2.0, 1), cand(-0.3, -1.0, -1)]
    assert agreement.best_agrees(group, "infogain", "oracle") is True
    assert agreement.chance_of_best(group, "oracle") == pytest.approx(2 / 3)
    # the gain prefers the oracle's worst: disagrees
    assert agreement.best_agrees([cand(0.9, -1.0), cand(0.1, 1.0)], "infogain", "oracle") is False
    # the oracle does not tell them apart: no verdict, and no chance level
    assert agreement.best_agrees([cand(0.9, 1.0), cand(0.1, 1.0)], "infogain", "oracle") is None
    assert agreement.chance_of_best([cand(0.9, 1.0), cand(0.1, 1.0)], "oracle") is None
    # an unscored candidate (None: the gold answer did not fit) is left out, one left is no group
    assert agreement.best_agrees([cand(None, 1.0), cand(0.1, -1.0)], "infogain", "oracle") is None


def test_summary_by_hand() -> None:
    agreement = _agreement_module()
    groups = [
        [cand(0.4, 2.0, 1, hops=1), cand(0.0, 0.0, 0, hops=1), cand(-0.2, -2.0, -1, hops=1)],  # agrees
        [cand(0.3, -2.0, -1, hops=3), cand(0.1, 2.0, 1, hops=3), cand(1.0, 1.1, action="answer", hops=3)],
    ]
    summary = agreement.summarise(groups)
    assert summary["groups"] == 2 and summary["search_candidates"] == 5
    # whole groups: group 1 agrees; group 2's best gain is the answer (1.0, oracle 1.1), the oracle's best is 2.0
    assert summary["best_same_share"] == 0.5 and summary["groups_compared"] == 2
    assert summary["best_same_share_by_chance"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    # searches alone: group 2's best search gain (0.3) has query score -1: disagrees
    assert summary["best_same_share_searches"] == 0.5
    assert summary["best_same_by_hops"]["1"]["best_same_share"] == 1.0
    assert summary["best_same_by_hops"]["3"]["best_same_share_searches"] == 0.0
    # pooled ranks of the five searches: gains (0.4, 0.0, -0.2, 0.3, 0.1) rank (5, 2, 1, 4, 3); query scores
    # (1, 0, -1, -1, 1) rank (4.5, 3, 1.5, 1.5, 4.5), ties averaged; deviations from 3: (2, -1, -2, 1, 0) and
    # (1.5, 0, -1.5, -1.5, 1.5): rho = 4.5 / sqrt(10 * 9)
    assert summary["spearman_gain_vs_query_score"] == pytest.approx(4.5 / 90 ** 0.5)
    assert summary["gain_by_query_score"]["-1"] == {"mean": pytest.approx(0.05), "n": 2}
