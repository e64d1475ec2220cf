"""How far a judge agrees with the oracle, per dimension: confusion matrix, accuracy and Cohen's kappa.

kappa = (p_o - p_e) / (1 - p_e): p_o is the observed share of agreement, p_e the agreement expected by chance from
the two judges' label frequencies (scikit-learn's ``cohen_kappa_score``, unweighted). When both sides use one and
the same label throughout, p_e = 1 and kappa is 0/0; we report 1.0 there (perfect agreement), not NaN.
Failed verdicts of the audited judge count as the 0 they are scored as in training, and are also reported apart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sklearn.metrics import cohen_kappa_score, confusion_matrix

from slate.judge.types import JUDGE_KINDS, SCORES, Judge, JudgeItem

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Agreement:
    """Agreement on one dimension. ``confusion[i][j]``: items the oracle scored ``SCORES[i]`` and the judge
    ``SCORES[j]`` (rows oracle, columns judge, labels -1, 0, 1)."""

    kind: str
    count: int
    accuracy: float
    kappa: float
    confusion: tuple[tuple[int, ...], ...]
    failures: int = 0


@dataclass(frozen=True)
class AuditReport:
    judge_name: str
    oracle_name: str
    dimensions: dict[str, Agreement]


def agreement(judge_scores: Sequence[int], oracle_scores: Sequence[int], kind: str = "",
              failures: int = 0) -> Agreement:
    """Confusion matrix (rows oracle, columns judge), accuracy and Cohen's kappa of paired scores."""
    if len(judge_scores) != len(oracle_scores):
        raise ValueError(f"agreement({kind}): {len(judge_scores)} judge scores but {len(oracle_scores)} oracle "
                         "scores; the two lists must be paired item by item.")
    labels = list(SCORES)
    if not judge_scores:
        return Agreement(kind=kind, count=0, accuracy=float("nan"), kappa=float("nan"),
                         confusion=tuple(tuple(0 for _ in labels) for _ in labels), failures=failures)
    matrix = confusion_matrix(list(oracle_scores), list(judge_scores), labels=labels)
    accuracy = sum(int(j == o) for j, o in zip(judge_scores, oracle_scores, strict=True)) / len(judge_scores)
    if accuracy == 1.0:
        kappa = 1.0  # also covers the single-label case, where sklearn's 0/0 gives NaN
    else:
        kappa = float(cohen_kappa_score(list(oracle_scores), list(judge_scores), labels=labels))
    return Agreement(kind=kind, count=len(judge_scores), accuracy=accuracy, kappa=kappa,
                     confusion=tuple(tuple(int(v) for v in row) for row in matrix), failures=failures)


def audit(judge: Judge, oracle: Judge, items: list[JudgeItem]) -> AuditReport:
    """Score ``items`` with both judges and compare them per dimension (think, query, answer)."""
    judged = judge.score(items)
    reference = oracle.score(items)
    dimensions: dict[str, Agreement] = {}
    for kind in JUDGE_KINDS:
        picked = [i for i, item in enumerate(items) if item.kind == kind]
        if not picked:
            continue
        unscorable = sum(reference[i].failed for i in picked)
        if unscorable:
            logger.warning("audit: the oracle could not score %d %s items (no gold chain); they are left out.",
                           unscorable, kind)
        picked = [i for i in picked if not reference[i].failed]
        dimensions[kind] = agreement([judged[i].score for i in picked], [reference[i].score for i in picked], kind,
                                     failures=sum(judged[i].failed for i in picked))
    return AuditReport(judge_name=judge.name, oracle_name=oracle.name, dimensions=dimensions)


def format_audit_markdown(report: AuditReport) -> str:
    """A summary table plus one confusion matrix per dimension, as Markdown."""
    lines = [f"## Judge audit: {report.judge_name} vs {report.oracle_name}", "",
             "| dimension | items | accuracy | Cohen's kappa | judge failures |", "|---|---:|---:|---:|---:|"]
    for kind, agr in report.dimensions.items():
        lines.append(f"| {kind} | {agr.count} | {agr.accuracy:.3f} | {agr.kappa:.3f} | {agr.failures} |")
    for kind, agr in report.dimensions.items():
        lines += ["", f"### {kind}: rows = oracle, columns = judge", "", "| oracle \\ judge | -1 | 0 | 1 |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {label} | " + " | ".join(str(v) for v in row) + " |"
                  for label, row in zip(SCORES, agr.confusion, strict=True)]
    return "\n".join(lines) + "\n"
