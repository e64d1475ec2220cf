"""``slate eval``: greedy rollouts, then EM / F1 / valid rate / searches, overall and by hop count or dataset."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from slate.data.records import QARecord
from slate.eval.metrics import exact_match, token_f1
from slate.rollout.engine import RolloutEngine
from slate.rollout.episode import Episode


@dataclass
class EpisodeScore:
    em: float
    f1: float
    is_valid: bool
    searches: int


def score_episode(episode: Episode) -> EpisodeScore:
    answer = episode.final_answer
    return EpisodeScore(em=exact_match(answer, episode.record.golden_answers),
                        f1=token_f1(answer, episode.record.golden_answers),
                        is_valid=episode.is_valid, searches=episode.num_searches)


def summarize(scores: list[EpisodeScore]) -> dict[str, float]:
    n = len(scores)
    if n == 0:
        return {"n": 0, "em": 0.0, "f1": 0.0, "valid_rate": 0.0, "searches": 0.0}
    return {"n": n, "em": sum(s.em for s in scores) / n, "f1": sum(s.f1 for s in scores) / n,
            "valid_rate": sum(s.is_valid for s in scores) / n, "searches": sum(s.searches for s in scores) / n}


def report(episodes: list[Episode]) -> dict[str, Any]:
    """Overall metrics plus ``by_hops`` (records with metadata.hops) and ``by_dataset`` (several datasets)."""
    scores = [score_episode(e) for e in episodes]
    result: dict[str, Any] = summarize(scores)
    by_hops: dict[str, list[EpisodeScore]] = defaultdict(list)
    by_dataset: dict[str, list[EpisodeScore]] = defaultdict(list)
    for episode, score in zip(episodes, scores, strict=True):
        if episode.record.hops is not None:
            by_hops[str(episode.record.hops)].append(score)
        by_dataset[episode.record.dataset or "data"].append(score)
    if by_hops:
        result["by_hops"] = {hops: summarize(by_hops[hops]) for hops in sorted(by_hops)}
    if len(by_dataset) > 1:
        result["by_dataset"] = {name: summarize(rows) for name, rows in sorted(by_dataset.items())}
        datasets = result["by_dataset"].values()
        result["macro"] = {key: sum(d[key] for d in datasets) / len(by_dataset)
                           for key in ("em", "f1", "valid_rate", "searches")}
    return result


def evaluate(engine: RolloutEngine, records: list[QARecord], batch_questions: int = 64) -> tuple[dict, list[Episode]]:
    """Greedy decoding, one trajectory per question."""
    episodes: list[Episode] = []
    for start in range(0, len(records), batch_questions):
        episodes += engine.rollout(records[start:start + batch_questions], copies=1, greedy=True)
    return report(episodes), episodes


def eval_metrics(engine: RolloutEngine, records: list[QARecord]) -> dict[str, float]:
    """A periodic evaluation during training, as metrics: ``eval/em``, ``eval/valid_rate``, ``eval/em_<h>hop``. Its
    rollouts are not training rollouts: the engine's counters are read and dropped."""
    result, _ = evaluate(engine, records)
    engine.metrics()
    return {"eval/em": result["em"], "eval/valid_rate": result["valid_rate"],
            **{f"eval/em_{hops}hop": values["em"] for hops, values in result.get("by_hops", {}).items()}}
