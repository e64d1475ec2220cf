"""The production topology in miniature (benchmarks/topology.py --quick): a retrieval server, a vLLM rollout server,
a vLLM judge server and two trainer processes, run once in the background from the start of the session
(tests/background_topology.py); each test reads what the run showed.

Needs vLLM's CPU build (`make vllm`, .venv-vllm): skipped without it, unless CI is set (then it fails).
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def summary(background_topology) -> dict:
    """What the run started in the background at collection (tests/background_topology.py) showed, once it has
    finished."""
    try:
        code = background_topology.wait(timeout=2400)
    except TimeoutError as exc:
        pytest.fail(str(exc))
    assert code == 0, background_topology.log.read_text()[-6000:]
    return json.loads((background_topology.out / "summary.json").read_text())


def test_two_ranks_train_as_one_through_the_servers(summary: dict) -> None:
    slate = summary["slate_lora"]
    assert summary["ranks"] == 2 and summary["params_equal"]
    assert slate["questions_disjoint"]  # each rank trained on its own questions
    assert slate["weight_pushes"] == [3, 0]  # v0, v1, v2 from rank 0; rank 1 never pushes
    assert summary["policy_versions"] == [0, 1] and slate["synced_versions"] == [1, 2]  # one version per step


def test_the_server_serves_the_adapter_just_trained(summary: dict) -> None:
    slate = summary["slate_lora"]
    # step 1 moved the trainer's log-probs by more than 0.1 nats; the server's log-probs at step 2 follow the new
    # weights to within 1e-5 (a server on the old weights or the bare base model would be ~0.1 off)
    assert slate["update_shift"][0] > 0.1
    assert slate["logprob_gap"][1] <= 1e-5 and summary["logprob_gap_max"] <= 1e-5
    assert summary["logprob_gap_token_max"] <= 1e-4  # the worst single token: float32 kernels differ


def test_judge_calls_flow_and_none_fail(summary: dict) -> None:
    assert summary["judge_calls"] > 0 and summary["judge_failures"] == 0
    assert summary["slate_lora"]["judge_failed_verdicts"] == 0 and summary["slate_lora"]["failed_searches"] == 0


def test_full_sync_runs_through_the_servers(summary: dict) -> None:
    searchr1 = summary["searchr1_full"]
    assert searchr1["params_equal"] and searchr1["policy_versions"] == [0, 1]
    assert searchr1["logprob_gap_max"] <= 1e-5 and searchr1["logprob_gap_token_max"] <= 1e-4


@pytest.mark.parametrize("server", ["judge", "retriever", "policy"])
def test_a_server_killed_mid_step_stops_both_ranks_with_one_clear_error(summary: dict, server: str) -> None:
    fault = next(f for f in summary["faults"] if f["server"] == server)
    assert fault["killed"] and fault["exit_code"] != 0
    assert fault["seconds_after_kill"] < 600  # bounded: nobody waits on a collective forever
    # the failed step left nothing: every step logged has its checkpoint, the last one intact, and no more
    assert fault["last_checkpoint_intact"] and len(fault["checkpoints"]) == fault["steps_logged"] >= 1
    assert fault["steps_logged"] < 4  # the run of 4 steps did not finish
    assert len(fault["rank_errors"]) >= 2  # every rank says it
    expected = {"judge": "judge unavailable", "retriever": "retrieval unavailable", "policy": "rollout server"}
    assert any(expected[server] in line for line in fault["rank_errors"]), fault["rank_errors"]


def test_checkpoint_and_resume_through_the_servers_reproduce_the_uninterrupted_run(summary: dict) -> None:
    resumed = summary["resumed"]
    assert resumed["steps"] == [1, 2]  # each step logged once
    assert resumed["params_equal_to_uninterrupted"] and resumed["metrics_differing"] == []
