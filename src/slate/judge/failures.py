"""Stop a run when the judge fails on too many items of one step, instead of training on fallback zeros.

A failed verdict scores 0 and is counted (``judge/failures``); a few are tolerable, but when the share of failed
verdicts in one batch passes ``judge.max_failure_share`` the judge is treated as unavailable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from slate.errors import JudgeError
from slate.judge.types import JudgeVerdict

logger = logging.getLogger(__name__)

DEFAULT_HINT = ("Check that the judge server at judge.base_url is up and serves judge.model, that the environment "
                "variable named by judge.api_key_env holds a valid key, and the log for parse failures (a model "
                "that does not end its reply with <score>N</score>; try judge.structured_output).")


def failure_share(verdicts: Sequence[JudgeVerdict]) -> float:
    """Share of verdicts with ``failed=True``; 0.0 for an empty batch."""
    if not verdicts:
        return 0.0
    return sum(v.failed for v in verdicts) / len(verdicts)


def check_failures(verdicts: Sequence[JudgeVerdict], max_failure_share: float, where: str,
                   hint: str = DEFAULT_HINT) -> None:
    """Raise ``JudgeError("judge unavailable: …")`` when more than ``max_failure_share`` of the verdicts failed.

    ``where`` names the place (e.g. "step 12, group 3"); ``hint`` says what to check (a backend may pass its URL).
    A share exactly equal to the limit passes.
    """
    check_failure_counts(sum(v.failed for v in verdicts), len(verdicts), max_failure_share, where, hint)


def check_failure_counts(failed: int, total: int, max_failure_share: float, where: str,
                         hint: str = DEFAULT_HINT) -> None:
    """``check_failures`` on counts: ``failed`` of ``total`` verdicts (the trainer sums them over processes)."""
    if total <= 0 or failed <= 0:
        return
    share = failed / total
    if share > max_failure_share:
        raise JudgeError(f"judge unavailable: {failed}/{total} verdicts failed ({share:.0%}, above "
                         f"judge.max_failure_share={max_failure_share:g}) at {where}; the step was not trained. "
                         f"{hint or DEFAULT_HINT}")
    logger.warning("%s: %d/%d judge verdicts failed and scored 0 (%.0f%%).", where, failed, total, 100 * share)
