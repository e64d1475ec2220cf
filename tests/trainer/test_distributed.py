"""Two gloo CPU processes as one run (``torchrun``, tests/trainer/ddp_worker.py): uneven shares of questions, a failure
on one rank, failure counts summed over ranks, and a rank stuck past the collective timeout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from slate.rollout.policy import load_hf_policy

PORTS = iter(range(29517, 29600))


def _launch(tiny_world: Path, policy_dir: Path, out: Path, scenario: str, *extra: str,
            timeout: float = 300) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).parent / "torchrun"
    worker = Path(__file__).parent / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", str(next(PORTS)), str(worker),
                           str(tiny_world), str(policy_dir), str(out), scenario, *extra],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_two_gloo_processes_with_uneven_shares_end_with_identical_parameters(tiny_world: Path, tiny_policy_dir: Path,
                                                                             tmp_path: Path) -> None:
    result = _launch(tiny_world, tiny_policy_dir, tmp_path, "plain")  # 5 questions per step: 3 and 2 per rank
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = (tmp_path / "params_rank0.txt").read_text()
    rank1 = (tmp_path / "params_rank1.txt").read_text()
    assert rank0.startswith("2 ")  # really two processes
    assert rank0 == rank1  # the rank with fewer questions ran as many passes (zero-weight ones), nothing hung
    initial = torch.cat([p.detach().flatten() for p in load_hf_policy(tiny_policy_dir).model.parameters()])
    assert rank0.split()[1] != f"{initial.double().sum().item():.12e}"  # and they trained
    reports = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["params_sha256"] == reports[1]["params_sha256"]
    assert [len(r["questions"]) for r in reports] == [6, 4]  # 2 steps x (3, 2)
    assert not set(reports[0]["questions"]) & set(reports[1]["questions"])  # each rank its own questions
    assert [r["weight_pushes"] for r in reports] == [0, 0]  # in-process rollouts: nothing to push


def test_a_failure_on_one_rank_stops_both_with_one_error_naming_it(tiny_world: Path, tiny_policy_dir: Path,
                                                                  tmp_path: Path) -> None:
    started = time.monotonic()
    result = _launch(tiny_world, tiny_policy_dir, tmp_path, "fail")
    assert result.returncode != 0 and time.monotonic() - started < 240
    assert "RuntimeError: the judge server went away" in (tmp_path / "error_rank1.txt").read_text()
    # the other rank did not wait in a collective: it stopped too, saying which rank failed and where
    assert (tmp_path / "error_rank0.txt").read_text().startswith(
        "TrainingError: rank 0 stops with the run: rank 1 failed while sampling step 2: RuntimeError: the judge "
        "server went away")
    assert (tmp_path / "checkpoints" / "step-000001" / "trainer_state.pt").is_file()  # the last checkpoint intact
    assert not (tmp_path / "checkpoints" / "step-000002").exists()


@pytest.mark.parametrize(("max_share", "stops"), [(0.6, False), (0.3, True)])
def test_judge_failures_are_summed_over_ranks_before_the_share_check(tiny_world: Path, tiny_policy_dir: Path,
                                                                    tmp_path: Path, max_share: float,
                                                                    stops: bool) -> None:
    # rank 1's judge fails every verdict, rank 0's none: about half of the run's verdicts fail. Alone, rank 1 would
    # stop at any share below 1; summed, 0.6 passes and 0.3 stops, on both ranks with the same message
    result = _launch(tiny_world, tiny_policy_dir, tmp_path, "judge_half", str(max_share))
    if not stops:
        assert result.returncode == 0, result.stderr[-3000:]
        steps = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
        for metrics in steps:
            assert 0.3 < metrics["judge/failed_verdicts"] / metrics["judge/verdicts"] < 0.6  # sums over both ranks
        return
    assert result.returncode != 0
    errors = [(tmp_path / f"error_rank{r}.txt").read_text() for r in (0, 1)]
    assert all(e.startswith("JudgeError: judge unavailable: ") and "at step 1" in e for e in errors)
    assert errors[0] == errors[1]  # the same numbers, the same decision


def test_a_rank_stuck_past_the_collective_timeout_is_named_not_waited_for(tiny_world: Path, tiny_policy_dir: Path,
                                                                         tmp_path: Path) -> None:
    started = time.monotonic()
    result = _launch(tiny_world, tiny_policy_dir, tmp_path, "stuck", timeout=240)
    assert result.returncode != 0 and time.monotonic() - started < 200  # bounded: no one waits forever
    error = (tmp_path / "error_rank0.txt").read_text()
    assert error.startswith("TrainingError: rank 0 of 2 waited for the other processes while sampling step 1")
    assert "trainer.collective_timeout_s=15" in error
