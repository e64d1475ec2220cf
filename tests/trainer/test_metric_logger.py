from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from slate.config import load_config
from slate.trainer.metrics import MetricLogger, reduce_over_processes


def test_metrics_reach_tensorboard_through_accelerate_and_jsonl_stays_the_record(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = MetricLogger(tmp_path, report_to=["tensorboard"], config={"trainer": {"lr": 1e-6, "steps": [1, 2]}})
    logger.log(1, {"loss/policy": 0.5, "rollout/em": 0.25})
    logger.log(2, {"loss/policy": 0.125, "rollout/em": float("nan")})  # not finite: text in the jsonl, no scalar
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "loss/policy": 0.5, "rollout/em": 0.25},
                    {"step": 2, "loss/policy": 0.125, "rollout/em": "nan"}]
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss/policy")] == [(1, 0.5), (2, 0.125)]
    assert [e.step for e in events.Scalars("rollout/em")] == [1]


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed here")
def test_a_tracker_that_is_not_installed_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        logger = MetricLogger(tmp_path, report_to=["mlflow"])
    assert logger.trackers == [] and "pip install mlflow" in caplog.text
    logger.log(1, {"loss/kl": 0.1})
    assert (tmp_path / "metrics.jsonl").is_file()


def test_trackers_of_the_config() -> None:
    assert load_config(None).trainer.trackers == []
    config = load_config(None, ["trainer.report_to=[mlflow]", "trainer.tensorboard=true", "trainer.wandb_project=p"])
    assert config.trainer.trackers == ["mlflow", "tensorboard", "wandb"]


def test_one_process_reduces_to_itself() -> None:
    class One:
        num_processes = 1

    assert reduce_over_processes({"rollout/samples": 3.0}, One()) == {"rollout/samples": 3.0}


class _TwoRanks:
    """Two ranks in two threads, whose gathers meet at a barrier: enough of a process group for the reduction."""

    def __init__(self) -> None:
        import threading

        self.barrier, self.slots, self.local = threading.Barrier(2, timeout=10), [None, None], threading.local()

    def exchange(self, value):
        rank = self.local.rank
        self.slots[rank] = value
        self.barrier.wait()
        both = list(self.slots)
        self.barrier.wait()
        return both

    def accelerator(self):
        import torch

        group = self

        class Rank:
            num_processes, device = 2, "cpu"

            def gather(self, tensor):
                return torch.cat(group.exchange(tensor))

        return Rank()


def test_ranks_with_different_keys_reduce_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 0 judged a search (a mean query score), rank 1 did not; a count only rank 1 has; a NaN stays NaN. Before,
    keys that differed between ranks gathered tensors of two lengths and gloo aborted the run."""
    import threading

    import slate.trainer.metrics as metrics_module

    group = _TwoRanks()
    monkeypatch.setattr(metrics_module, "gather_object", lambda objects: [o for pair in group.exchange(objects)
                                                                          for o in pair])
    mine = [{"reward/query": 0.5, "rollout/samples": 3.0, "loss/policy": 1.0},
            {"rollout/samples": 5.0, "judge/failures": 2.0, "loss/policy": float("nan")}]
    results: list[dict | None] = [None, None]

    def run(rank: int) -> None:
        group.local.rank = rank
        results[rank] = reduce_over_processes(mine[rank], group.accelerator())

    threads = [threading.Thread(target=run, args=(rank,)) for rank in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    for result in results:
        assert result is not None
        assert result["reward/query"] == 0.5  # the mean over the one rank that has it, not (0.5 + 0) / 2
        assert result["rollout/samples"] == 8.0 and result["judge/failures"] == 2.0  # counts summed, missing = 0
        assert result["loss/policy"] != result["loss/policy"]  # NaN: never averaged away
    assert set(results[0]) == set(results[1]) == {"reward/query", "rollout/samples", "judge/failures", "loss/policy"}
