"""Several trainer processes as one run: they fail together, count together and never wait on each other forever.

- ``agree_on_error``: a phase without collectives (sampling: HTTP calls to the judge, the retriever, the rollout
  servers) may fail on one process only. Each process catches its own error, then all of them meet in one gather and
  every process raises, the failing ones their own error, the others one naming the failing rank: one clear error
  from every rank instead of a rank blocked in the next collective.
- ``check_failures_over_processes``: failure counts (judge verdicts, searches) are summed over ranks before the
  failure-share checks, so every rank takes the same decision on the same numbers.
- ``write_rank_report``: what each process trained on and ended with (``<out>/ranks/rank<i>.json``).
- ``make_accelerator`` bounds every collective by ``trainer.collective_timeout_s``; ``Phase`` records what the
  process is doing, so a collective that times out (a peer stuck, or gone) is reported by rank and by what it waited
  for (``collective_error``).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, gather_object

from slate.config import RunConfig
from slate.errors import SlateError, TrainingError
from slate.judge.failures import check_failure_counts
from slate.retrieval.failures import check_retrieval_failures

logger = logging.getLogger(__name__)
T = TypeVar("T")


def make_accelerator(collective_timeout_s: float) -> Accelerator:
    """The run's accelerator (a GPU when there is one), every collective bounded by ``collective_timeout_s``."""
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[
        InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=collective_timeout_s))])


def agree_on_error(accelerator: Accelerator, error: BaseException | None, phase: str) -> None:
    """Raise on every process if any process failed in ``phase``; return quietly if none did.

    A process that failed raises its own error; the others raise ``TrainingError`` naming the first failing rank
    and its message. One process: the error, if any, is raised as it is."""
    if accelerator.num_processes == 1:
        if error is not None:
            raise error
        return
    mine = None if error is None else f"{type(error).__name__}: {error}"
    reports = gather_object([mine])
    failed = [(rank, message) for rank, message in enumerate(reports) if message is not None]
    if not failed:
        return
    if error is not None:
        raise error
    rank, message = failed[0]
    raise TrainingError(f"rank {accelerator.process_index} stops with the run: rank {rank} failed while {phase}: "
                        f"{message}")


def sum_over_processes(accelerator: Accelerator, counts: dict[str, float]) -> dict[str, float]:
    """Each count summed over the processes (the same keys on every process)."""
    if accelerator.num_processes == 1:
        return dict(counts)
    keys = sorted(counts)
    values = torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64, device=accelerator.device)
    summed = accelerator.reduce(values, reduction="sum")
    return {k: float(summed[i]) for i, k in enumerate(keys)}


class Phase:
    """What this process is doing now, for the message of a collective that failed or timed out."""

    def __init__(self) -> None:
        self.name = "starting"

    def __call__(self, name: str) -> Phase:
        self.name = name
        return self


def is_collective_failure(error: BaseException) -> bool:
    """A failed or timed-out collective (gloo, NCCL), as torch reports it: a RuntimeError or DistBackendError whose
    message says so."""
    if isinstance(error, SlateError):
        return False
    text = str(error).lower()
    return isinstance(error, RuntimeError | ConnectionError) and any(
        marker in text for marker in ("timed out", "timeout", "connection closed", "connection reset",
                                      "broken pipe", "gloo", "nccl", "peer"))


def naming_failed_collectives(train: Callable[..., T]) -> Callable[..., T]:
    """Decorates ``Trainer.train``: a collective that fails or times out under several processes becomes
    ``collective_error`` (the rank, its phase, the timeout), raised from the original."""
    @functools.wraps(train)
    def wrapped(trainer, *args, **kwargs) -> T:
        try:
            return train(trainer, *args, **kwargs)
        except Exception as error:
            if trainer.accelerator.num_processes > 1 and is_collective_failure(error):
                raise collective_error(trainer.accelerator, trainer.phase,
                                       trainer.config.trainer.collective_timeout_s, error) from error
            raise

    return wrapped


def collective_error(accelerator: Accelerator, phase: Phase, timeout_s: float, error: BaseException) -> TrainingError:
    """The message of a collective that failed: which rank, what it was doing, and what to look at."""
    return TrainingError(f"rank {accelerator.process_index} of {accelerator.num_processes} waited for the other "
                         f"processes while {phase.name} and the collective failed ({type(error).__name__}: "
                         f"{str(error).splitlines()[0][:200]}); trainer.collective_timeout_s={timeout_s:g}. Another "
                         "rank stopped or is stuck: its log says why. Rerun with --resume once fixed: the last "
                         "checkpoint is intact.")


def check_failures_over_processes(accelerator: Accelerator, counted: dict[str, float], config: RunConfig,
                                  step: int) -> None:
    """The failure-share checks of one step on counts summed over the processes: searches that failed after their
    retries (``retrieval.max_failure_share``) and judge verdicts that failed (``judge.max_failure_share``). The sums
    are the same on every process, so every process raises, or none."""
    keys = ("retrieval/failed_searches", "retrieval/searches", "judge/failed_verdicts", "judge/verdicts")
    summed = sum_over_processes(accelerator, {key: counted.get(key, 0.0) for key in keys})
    check_retrieval_failures(int(summed["retrieval/failed_searches"]), int(summed["retrieval/searches"]),
                             config.retrieval.max_failure_share, step)
    check_failure_counts(int(summed["judge/failed_verdicts"]), int(summed["judge/verdicts"]),
                         config.judge.max_failure_share, where=f"step {step}", hint=config.judge.failure_hint)


def write_rank_report(out_dir: Path, accelerator: Accelerator, model: torch.nn.Module, questions: list[str],
                      steps: int, pushes: int) -> Path:
    """``<out>/ranks/rank<i>.json``: what this process trained on and what it ended with: the ids of its training
    questions, a SHA-256 of its parameters (equal on every rank after DDP) and the weight pushes it made (only the
    main process pushes)."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(parameter.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    report = {"rank": accelerator.process_index, "processes": accelerator.num_processes, "steps": steps,
              "questions": questions, "params_sha256": digest.hexdigest(), "weight_pushes": pushes}
    path = out_dir / "ranks" / f"rank{accelerator.process_index}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report) + "\n")
    return path
