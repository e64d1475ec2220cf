from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from slate.eval.plots import aggregate_seeds, arm_colour, curve_panels, figure_rows, plot_curves

REPO = Path(__file__).resolve().parents[2]


def test_seeds_are_interpolated_onto_the_span_all_of_them_cover() -> None:
    # seed b is evaluated at 6 and 12 tokens, seed a at 10; the grid is {0, 6, 10} (12 lies past a's last point)
    a = [(0.0, 0.2), (10.0, 0.4)]
    b = [(0.0, 0.4), (6.0, 0.1), (12.0, 0.6)]
    agg = aggregate_seeds([a, b])
    assert agg.seeds == 2
    np.testing.assert_allclose(agg.tokens, [0, 6, 10])
    # a at 6: 0.2 + 0.6 * 0.2 = 0.32; b at 10: 0.1 + (4 / 6) * 0.5 = 0.4333...
    np.testing.assert_allclose(agg.mean, [0.3, (0.32 + 0.1) / 2, (0.4 + 0.1 + 4 / 6 * 0.5) / 2])
    np.testing.assert_allclose(agg.low, [0.2, 0.1, 0.4])
    np.testing.assert_allclose(agg.high, [0.4, 0.32, 0.1 + 4 / 6 * 0.5])


def test_three_seeds_starting_late_and_unsorted() -> None:
    curves = [[(20.0, 0.3), (10.0, 0.1)], [(10.0, 0.2), (20.0, 0.2)], [(5.0, 0.0), (15.0, 0.6), (30.0, 0.0)]]
    agg = aggregate_seeds(curves)
    np.testing.assert_allclose(agg.tokens, [10, 15, 20])  # the third seed starts earlier and ends later
    # third seed at 10: 0.3, at 20: 0.6 - 5/15 * 0.6 = 0.4
    np.testing.assert_allclose(agg.mean, [(0.1 + 0.2 + 0.3) / 3, (0.2 + 0.2 + 0.6) / 3, (0.3 + 0.2 + 0.4) / 3])
    np.testing.assert_allclose(agg.low, [0.1, 0.2, 0.2])
    np.testing.assert_allclose(agg.high, [0.3, 0.6, 0.4])


def test_disjoint_or_empty_curves_are_refused() -> None:
    with pytest.raises(ValueError, match="share no token span"):
        aggregate_seeds([[(0.0, 0.1), (5.0, 0.2)], [(6.0, 0.1), (9.0, 0.2)]])
    with pytest.raises(ValueError, match="no curve"):
        aggregate_seeds([[]])


def test_colours_are_stable_and_shared_across_starts() -> None:
    assert arm_colour("slate") == arm_colour("slate@sft_d160") != arm_colour("searchr1")
    assert arm_colour("some_new_arm") == arm_colour("some_new_arm")


def _point(tokens: float, em: float, hops: dict[str, float] | None = None) -> dict:
    return {"tokens": tokens, "em": em, **({"em_by_hops": hops} if hops is not None else {})}


def test_figure_rows_by_start_and_group() -> None:
    rows = [{"arm": arm, "seed": 0, "curve": [_point(0, 0.1)]}
            for arm in ("searchr1", "slate", "slate_em", "odd", "searchr1@big", "slate@big")]
    rows.append({"arm": "continued_sft", "seed": 0, "curve": []})
    groups = {"methods": ["searchr1", "slate"], "variants": ["slate", "slate_em"]}
    titled = [(title, [r["arm"] for r in members]) for title, members in figure_rows(rows, groups)]
    assert titled == [("methods, from the --sft start", ["searchr1", "slate"]),
                      ("variants, from the --sft start", ["slate", "slate_em"]),
                      ("other arms, from the --sft start", ["odd"]),
                      ("methods, from big", ["searchr1@big", "slate@big"])]  # "variants" would repeat slate@big
    assert [title for title, _ in figure_rows(rows)] == ["from the --sft start", "from big"]


def test_hop_panels_only_when_points_carry_them() -> None:
    old = [{"arm": "slate", "seed": 0, "curve": [_point(100, 0.2)]}]
    new = [{"arm": "slate", "seed": 0, "curve": [_point(0, 0.1, {"2": 0.1, "1": 0.3})]}]
    assert curve_panels(old) == ["all"]
    assert curve_panels(new) == ["all", "1", "2"]
    with_searches = [{**new[0], "searches_curve": [{"tokens": 50.0, "searches": 2.5}]}]
    assert curve_panels(with_searches) == ["all", "1", "2", "searches"]


def test_a_png_is_written_for_old_and_new_rows(tmp_path: Path) -> None:
    hops = {"1": 0.5, "2": 0.2, "3": 0.1, "4": 0.0}
    rows = [{"arm": arm, "seed": seed, "curve": [_point(0, 0.2, hops), _point(10 + seed, 0.3, hops)]}
            for arm in ("searchr1", "slate", "slate@sft_d160") for seed in (0, 1)]
    rows += [{"arm": "continued_sft", "seed": 0, "curve": []},
             {"arm": "stepsearch", "seed": 0, "curve": [_point(5, 0.1), _point(9, 0.2)]}]  # an old row
    rows[0]["searches_curve"] = [{"tokens": 4.0, "searches": 2.4}, {"tokens": 10.0, "searches": 2.6}]
    plot_curves(rows, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _compare_module():
    spec = importlib.util.spec_from_file_location("compare_benchmark", REPO / "benchmarks" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_replot_redraws_from_the_json_and_rejects_garbage(tmp_path: Path) -> None:
    replot = _compare_module().replot
    rows = [{"arm": "slate", "seed": 0, "curve": [_point(1, 0.2), _point(2, 0.3)]}]
    (tmp_path / "compare.json").write_text(json.dumps(rows))
    replot(tmp_path)
    assert (tmp_path / "compare_curves.png").stat().st_size > 0
    (tmp_path / "compare.json").write_text('[{"arm": "slate", "curve": [{"em": 0.1}]}]')
    with pytest.raises(SystemExit, match=r"compare\.json: a row is not a comparison result"):
        replot(tmp_path)
    (tmp_path / "compare.json").write_text("[{")
    with pytest.raises(SystemExit, match=r"compare\.json: cannot read"):
        replot(tmp_path)


def test_curve_points_from_the_trainer_metrics_and_the_start() -> None:
    compare = _compare_module()
    metrics = {"rollout/policy_tokens_total": 1234, "eval/em": 0.25, "eval/valid_rate": 1.0,
               "eval/em_1hop": 0.5, "eval/em_3hop": 0.0}
    assert compare.metrics_point(metrics) == {"tokens": 1234.0, "em": 0.25, "em_by_hops": {"1": 0.5, "3": 0.0}}
    start = {"em": 0.2, "n": 10, "by_hops": {1: {"em": 0.4, "n": 5}, 2: {"em": 0.0, "n": 5}}}
    assert compare.start_point(start) == {"tokens": 0.0, "em": 0.2, "em_by_hops": {"1": 0.4, "2": 0.0}}


def test_per_arm_learning_rates_parse_and_refuse_garbage() -> None:
    parse = _compare_module().parse_learning_rates
    assert parse(["slate=5e-5", "searchr1=0.0001"]) == {"slate": 5e-05, "searchr1": 0.0001}
    for bad, message in (("slat=1e-4", "unknown arm"), ("slate=fast", "not a number"), ("slate=0", "positive")):
        with pytest.raises(SystemExit, match=message):
            parse([bad])
