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
