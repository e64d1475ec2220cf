"""The run's metrics: what one step's batch says, the average over processes, and where they are written.

One rule for counters: every component that counts (the rollout engine and its retriever, the sampler and its
reward strategy and judge) exposes ``metrics()``, which returns its counters since the last call under namespaced
keys (``rollout/invalid_actions``, ``judge/calls``) and resets them; ``Trainer.step`` merges them with the batch's
and the update's metrics. ``MetricLogger`` writes every step to ``metrics.jsonl`` (the source of truth, rank 0) and,
through accelerate's trackers, to TensorBoard, Weights & Biases or MLflow (``trainer.report_to``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from slate.eval.metrics import exact_match
from slate.samples import SampledBatch

logger = logging.getLogger(__name__)
# counts are totals over processes (the judge calls of the run, not of an average rank); rates and means are averaged
SUMMED_PREFIXES = ("judge/", "retrieval/")
SUMMED = {"rollout/step_generated_tokens", "rollout/samples", "rollout/invalid_actions", "rollout/forced_answers",
          "rollout/context_overflow", "rollout/carried_tokens", "rollout/server_retries", "rollout/server_resyncs",
          "reward/infogain_forward_tokens", "reward/infogain_scored", "reward/infogain_skipped", "slate/groups",
          "slate/unscored_groups", "stepsearch/format_gated"}


def is_summed(key: str) -> bool:
    return key in SUMMED or key.startswith(SUMMED_PREFIXES)


def batch_metrics(batch: SampledBatch) -> dict[str, float]:
    """Rewards, exact match, valid rate and searches of one step's episodes, and its number of samples."""
    episodes = batch.episodes
    rewards = [s.reward for e in episodes for s in e.steps if s.reward is not None]
    metrics = {"reward/mean": float(np.mean(rewards)) if rewards else 0.0,
               "rollout/em": float(np.mean([exact_match(e.final_answer, e.record.golden_answers)
                                            for e in episodes])) if episodes else 0.0,
               "rollout/valid_rate": float(np.mean([e.is_valid for e in episodes])) if episodes else 0.0,
               "rollout/searches": float(np.mean([e.num_searches for e in episodes])) if episodes else 0.0,
               "rollout/samples": float(len(batch.samples))}
    for kind in ("think_score", "query_score", "answer_score"):
        values = [s.scores[kind] for e in episodes for s in e.steps if kind in s.scores]
        if values:
            metrics[f"reward/{kind.removesuffix('_score')}"] = float(np.mean(values))
    return metrics


def reduce_over_processes(metrics: dict[str, float], accelerator: Accelerator) -> dict[str, float]:
    """Average metrics over processes; counts (``is_summed``: judge and retrieval counters, tokens, samples) are
    summed. The processes need not report the same keys (a mean query score exists only where some candidate was a
    search): a mean is taken over the processes that have the key, a count missing on a process adds 0. A NaN on
    any process stays NaN."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(set().union(*gather_object([sorted(metrics)])))
    values = torch.tensor([[metrics.get(k, 0.0) for k in keys], [float(k in metrics) for k in keys]],
                          dtype=torch.float64, device=accelerator.device)
    gathered = accelerator.gather(values[None]).reshape(accelerator.num_processes, 2, -1)
    sums, present = (gathered[:, 0] * gathered[:, 1]).sum(0), gathered[:, 1].sum(0)
    return {k: float(sums[i] if is_summed(k) else sums[i] / present[i]) for i, k in enumerate(keys)}


def max_over_processes(accelerator: Accelerator, count: int) -> int:
    """The largest ``count`` of any process: every process then runs that many passes, so collectives align."""
    if accelerator.num_processes == 1:
        return count
    return int(accelerator.gather(torch.tensor([count], device=accelerator.device)).max())


@contextlib.contextmanager
def timed(times: dict[str, float], key: str) -> Iterator[None]:
    """Add the seconds the block takes to ``times[key]`` (a ``time/*_s`` metric)."""
    start = time.perf_counter()
    yield
    times[key] = times.get(key, 0.0) + time.perf_counter() - start


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"trainer": {"lr": 1e-6}}`` → ``{"trainer.lr": 1e-6}``, lists and None as text: what trackers accept as
    hyperparameters."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, bool | int | float | str) else str(value)
    return flat


def start_trackers(names: list[str], out_dir: Path, project: str | None, config: dict[str, Any]) -> list[Any]:
    """accelerate's trackers for ``trainer.report_to``, started, the run's config stored as hyperparameters.
    TensorBoard writes to ``<out>/tb``, MLflow to ``<out>/mlruns``; W&B and MLflow name the project (experiment)
    ``trainer.wandb_project`` or the run directory's name. A tracker whose package is missing is a warning."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    name = project or out_dir.resolve().name
    trackers = []
    for kind in dict.fromkeys(names):
        try:
            if kind == "tensorboard":
                tracker = TensorBoardTracker("tb", out_dir)
            elif kind == "wandb":
                tracker = WandBTracker(name, dir=str(out_dir))
            else:
                tracker = MLflowTracker(experiment_name=name, logging_dir=str(out_dir / "mlruns"))
            tracker.start()
            tracker.store_init_configuration(_flat(config))
        except ImportError as error:
            logger.warning("trainer.report_to names %s but it is not installed (%s); pip install %s. Metrics still "
                           "go to metrics.jsonl.", kind, error, kind)
            continue
        trackers.append(tracker)
    return trackers


class MetricLogger:
    """``metrics.jsonl`` (one JSON object per step) and the trackers of ``report_to``. Only the main process
    writes (``enabled``)."""

    def __init__(self, out_dir: Path, enabled: bool = True, report_to: list[str] | None = None,
                 project: str | None = None, config: dict[str, Any] | None = None) -> None:
        self.enabled = enabled
        self.path = out_dir / "metrics.jsonl"
        self.trackers: list[Any] = []
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        if report_to:
            self.trackers = start_trackers(report_to, out_dir, project, config or {})

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, int | float) and math.isfinite(v) else str(v))
                 for k, v in metrics.items()}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **clean}) + "\n")
        numbers = {k: v for k, v in clean.items() if isinstance(v, float)}
        for tracker in self.trackers:
            tracker.log(numbers, step=step)

    def truncate_after(self, step: int) -> int:
        """Drop the lines of steps after ``step`` (and a line cut short by a kill); returns how many were dropped.

        Called on resume from the checkpoint of ``step``: the steps after it are run again and logged again, so
        metrics.jsonl ends with each step exactly once.
        """
        if not self.enabled or not self.path.is_file():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row_step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                row_step = None
            if isinstance(row_step, int) and row_step <= step:
                kept.append(line + "\n")
            else:
                dropped += 1
        temporary = self.path.with_suffix(".jsonl.tmp")
        temporary.write_text("".join(kept), encoding="utf-8")
        temporary.replace(self.path)  # atomic: a kill here leaves the old file or the new one, not half of either
        if dropped:
            logger.info("metrics.jsonl: dropped %d line(s) after step %d, which will be run again", dropped, step)
        return dropped

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
