"""benchmarks/hardness.py: the report's threshold and per-run measures from compare rows, and wrong decisions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from slate.data.records import QARecord
from slate.retrieval.base import Hit
from slate.rollout.actions import parse_step
from slate.rollout.episode import Episode, Step

REPO_ROOT = Path(__file__).resolve().parents[2]


def _hardness():
    spec = importlib.util.spec_from_file_location("hardness_benchmark", REPO_ROOT / "benchmarks" / "hardness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(arm: str, seed: int, points: list[tuple[int, float]], test_em: float) -> dict:
    return {"arm": arm, "seed": seed, "policy_tokens": points[-1][0], "wall_s": 10.0, "policy_parameters": 1000,
            "curve": [{"tokens": t, "em": e, "em_by_hops": {}} for t, e in points],
            "test": {"em": test_em, "by_hops": {"1": {"em": test_em}}}, "config": {"trainer": {"token_budget": 100}}}


def test_the_threshold_is_80_percent_of_the_best_arms_gain_and_runs_are_measured_against_it() -> None:
    hardness = _hardness()
    rows = [{"arm": "start", "seed": 0, "dev": {"em": 0.2}, "test": {"em": 0.25, "by_hops": {}}},
            _run("slate", 0, [(0, 0.2), (50, 0.6), (100, 0.7)], 0.7),
            _run("slate", 1, [(0, 0.2), (50, 0.7), (100, 0.7)], 0.7),
            _run("searchr1", 0, [(0, 0.2), (50, 0.3), (100, 0.5)], 0.5),
            {**_run("searchr1", 0, [(0, 0.2), (100, 0.9)], 0.9), "sweep_lr": 1e-4}]  # a sweep run: left out
    out, info = hardness.study_rows("hard", "base", rows, budget=100)
    # best arm: slate, final mean 0.7; threshold 0.2 + 0.8 * 0.5 = 0.6
    assert info["best_arm"] == "slate" and info["threshold"] == pytest.approx(0.6)
    slate0, slate1, searchr1 = out
    assert slate0["tokens_to_threshold"] == pytest.approx(50) and slate0["reached_threshold"]
    # slate seed 1 crosses 0.6 between 0 (0.2) and 50 (0.7): 0.4 / 0.5 * 50 = 40
    assert slate1["tokens_to_threshold"] == pytest.approx(40)
    assert (searchr1["tokens_to_threshold"], searchr1["reached_threshold"]) == (100, False)  # censored
    # AUC of searchr1: (50 * 0.25 + 50 * 0.4) / 100 = 0.325
    assert searchr1["auc"] == pytest.approx(0.325)
    assert (slate0["setting"], slate0["size"], slate0["policy_size"]) == ("hard", "base", 1000)
    ratio, low, _ = hardness.slate_ratio(out)
    assert ratio == pytest.approx(45 / 100)  # mean(50, 40) / 100; one Search-R1 seed: no interval
    assert low is None


def test_report_reads_every_setting_and_size(tmp_path: Path) -> None:
    hardness = _hardness()
    for name in ("hard-base", "default-small", "notes"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "compare.json").write_text(json.dumps([{"arm": "start"}]))
    found = [(s, z) for s, z, _ in hardness.comparison_dirs(tmp_path)]
    assert found == [("default", "small"), ("hard", "base")]  # study order; a directory of another name ignored


def test_wrong_decisions_count_the_oracles_below_plus_one_actions_but_not_a_forced_answer() -> None:
    hardness = _hardness()
    chain = [{"sub_question": "Who founded Velmora Labs?", "entity": "Velmora Labs", "relation": "founded_by",
              "answer": "Kesh Fenn", "doc_id": "d1"},
             {"sub_question": "Where was Kesh Fenn born?", "entity": "Kesh Fenn", "relation": "born_in",
              "answer": "Port Dalvin", "doc_id": "d2"}]
    record = QARecord(id="q", question="Where was the founder of Velmora Labs born?",
                      golden_answers=("Port Dalvin",), metadata={"hops": 2, "chain": chain})

    def step(text: str, hits: list[Hit] | None = None, forced: bool = False) -> Step:
        return Step(text=text, parsed=parse_step(text), token_ids=[1], logprobs=[0.0], hits=hits or [],
                    is_forced=forced)

    episode = Episode(record=record, prompt_ids=[0], steps=[
        step("<think> x </think><search> founded by </search>"),  # vague: no chain entity (-1)
        step("<think> x </think><search> Who founded Velmora Labs? </search>", [Hit("d1", "V", "t", 1.0)]),  # +1
        step("<think> x </think><search> Velmora </search>"),  # a solved hop's entity, partly (-1)
        step("<answer> Kesh Fenn </answer>", forced=True)])  # the budget's answer: not a decision
    stats = hardness.decision_stats([episode])
    assert stats == {"trajectories": 1, "failed": 1, "wrong_decisions_per_failure": 2.0,
                     "wrong_decisions_per_success": 0.0}
