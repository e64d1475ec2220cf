from __future__ import annotations

import math

import pytest

from slate.eval.evaluate import EpisodeScore, summarize
from slate.eval.tables import (
    diagnostics_table,
    first_evaluation_table,
    format_markdown,
    mean_ci,
    seed_table,
    training_diagnostics,
)


def test_markdown_table_by_value() -> None:
    result = {
        "n": 4, "em": 0.5, "f1": 0.625, "valid_rate": 0.75, "searches": 1.5,
        "by_dataset": {
            "hotpotqa": {"n": 2, "em": 0.0, "f1": 0.25, "valid_rate": 0.5, "searches": 2.0},
            "nq": {"n": 2, "em": 1.0, "f1": 1.0, "valid_rate": 1.0, "searches": 1.0},
        },
        "macro": {"em": 0.5, "f1": 0.625, "valid_rate": 0.75, "searches": 1.5},
    }
    assert format_markdown(result, "policy A") == (
        "### policy A\n"
        "\n"
        "| split | n | EM | F1 | valid rate | searches |\n"
        "|---|---:|---:|---:|---:|---:|\n"
        "| hotpotqa | 2 | 0.000 | 0.250 | 0.500 | 2.00 |\n"
        "| nq | 2 | 1.000 | 1.000 | 1.000 | 1.00 |\n"
        "| macro |  | 0.500 | 0.625 | 0.750 | 1.50 |\n"
        "| overall | 4 | 0.500 | 0.625 | 0.750 | 1.50 |\n"
    )


def test_hop_rows_come_first_and_rounding_is_fixed() -> None:
    # 1/3 = 0.333..., 2/3 = 0.666... -> three decimals for rates, two for searches (7/3 = 2.33)
    result = {"n": 3, "em": 1 / 3, "f1": 2 / 3, "valid_rate": 1.0, "searches": 7 / 3,
              "by_hops": {"1": {"n": 2, "em": 0.5, "f1": 1.0, "valid_rate": 1.0, "searches": 2.0},
                          "2": {"n": 1, "em": 0.0, "f1": 0.0, "valid_rate": 1.0, "searches": 3.0}}}
    lines = format_markdown(result, "t").splitlines()
    assert lines[4:] == ["| 1-hop | 2 | 0.500 | 1.000 | 1.000 | 2.00 |",
                         "| 2-hop | 1 | 0.000 | 0.000 | 1.000 | 3.00 |",
                         "| overall | 3 | 0.333 | 0.667 | 1.000 | 2.33 |"]
    assert not any(line.startswith("| macro") for line in lines)  # one dataset: no macro row


def test_summarize_and_table_agree_on_an_empty_split() -> None:
    empty = summarize([])
    assert format_markdown(empty, "none").splitlines()[-1] == "| overall | 0 | 0.000 | 0.000 | 0.000 | 0.00 |"
    one = summarize([EpisodeScore(em=1.0, f1=0.5, is_valid=False, searches=2)])
    assert format_markdown(one, "one").splitlines()[-1] == "| overall | 1 | 1.000 | 0.500 | 0.000 | 2.00 |"


def test_mean_ci_is_a_t_interval_by_hand() -> None:
    # [0.2, 0.3, 0.4]: mean 0.3, sample std 0.1, t(0.975, df=2) = 4.3027 -> half-width 4.3027 * 0.1 / sqrt(3) = 0.24842
    mean, half = mean_ci([0.2, 0.3, 0.4])
    assert math.isclose(mean, 0.3)
    assert math.isclose(half, 0.24842, abs_tol=1e-5)
    assert mean_ci([0.25]) == (0.25, None)


def test_seed_table_by_value() -> None:
    def run(arm: str, em: float, hops: list[float], tokens: int, wall: float) -> dict:
        by_hops = {str(h + 1): {"em": v} for h, v in enumerate(hops)}
        return {"arm": arm, "policy_tokens": tokens, "wall_s": wall, "test": {"em": em, "by_hops": by_hops}}

    rows = [run("start", 0.25, [0.5, 0.25, 0.125, 0.0], 0, 0.0),
            run("slate", 0.2, [0.6, 0.2, 0.0, 0.0], 1000, 10.0),
            run("slate", 0.4, [0.8, 0.4, 0.2, 0.2], 3000, 20.0)]
    # two seeds: t(0.975, df=1) = 12.706, std of [0.2, 0.4] = 0.1414 -> half-width 12.706 * 0.1414 / sqrt(2) = 1.2706
    assert seed_table(rows).splitlines() == [
        "| arm | seeds | 1-hop | 2-hop | 3-hop | 4-hop | all | policy tokens | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
        "| start | 1 | 0.500 | 0.250 | 0.125 | 0.000 | 0.250 | 0 | 0 |",
        "| slate | 2 | 0.700 ± 1.271 | 0.300 ± 1.271 | 0.100 ± 1.271 | 0.100 ± 1.271 | 0.300 ± 1.271 | 2,000 | 15 |",
    ]


def test_training_diagnostics_by_hand() -> None:
    metrics = [{"rollout/policy_tokens_total": 1000.0, "update/optimizer_steps": 4.0, "rollout/searches": 2.5,
                "slate/bonus_only_groups": 0.2},
               {"rollout/policy_tokens_total": 3000.0, "update/optimizer_steps": 6.0, "rollout/searches": 1.5,
                "slate/bonus_only_groups": 0.4}]
    out = training_diagnostics(metrics, wall_s=10.0)
    assert out == {"rl_steps": 2, "tokens_per_s": 300.0, "optimizer_steps_per_rl_step": 5.0,
                   "bonus_only_groups": pytest.approx(0.3), "searches_first": 2.5, "searches_last": 1.5}
    assert training_diagnostics([], wall_s=1.0) == {"rl_steps": 0}


def test_diagnostics_table_means_over_seeds_and_marks_what_was_not_logged() -> None:
    rows = [{"arm": "slate", "diagnostics": {"rl_steps": 10, "bonus_only_groups": 0.1}},
            {"arm": "slate", "diagnostics": {"rl_steps": 20, "bonus_only_groups": 0.3}},
            {"arm": "searchr1", "diagnostics": {"rl_steps": 5}}]
    lines = diagnostics_table(rows).splitlines()
    assert lines[2].startswith("| slate | 15 | – |") and "| 0.200 |" in lines[2]
    assert lines[3] == "| searchr1 | 5 | – | – | – | – | – | – |"


def test_first_evaluation_table_by_hand() -> None:
    def row(arm: str, em: float, tokens: float, four_hop: float) -> dict:
        start = {"tokens": 0.0, "em": 0.5, "em_by_hops": {"1": 0.9, "2": 0.9, "3": 0.1, "4": 0.0}}
        first = {"tokens": tokens, "em": em, "em_by_hops": {"1": 0.9, "2": 0.8, "3": 0.7, "4": four_hop}}
        later = {"tokens": 2 * tokens, "em": 0.99, "em_by_hops": {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0}}
        return {"arm": arm, "curve": [start, first, later]}

    rows = [row("slate", 0.6, 100.0, 0.5), row("slate", 0.8, 200.0, 0.7), row("searchr1", 0.75, 160.0, 0.25),
            {"arm": "start", "curve": [{"tokens": 0.0, "em": 0.5, "em_by_hops": {}}]}]
    lines = first_evaluation_table(rows).splitlines()
    assert len(lines) == 4  # header, rule, two arms: the start has no point after 0 tokens
    # mean 0.7; half-width t(0.975, df=1) · stdev(0.6, 0.8) / √2 = 12.7062 · 0.141421 / 1.414214 = 1.2706
    assert lines[2] == ("| slate | 2 | 150 | 0.900 ± 0.000 | 0.800 ± 0.000 | 0.700 ± 0.000 | 0.600 ± 1.271 | "
                        "0.700 ± 1.271 |")
    assert lines[3] == "| searchr1 | 1 | 160 | 0.900 | 0.800 | 0.700 | 0.250 | 0.750 |"
