"""Choosing a warm start among SFT seeds: evaluate each candidate checkpoint on dev, keep the best.

Why: one seed of the tiny preset can land far from the others (on one CPU kind seed 0 ended at dev EM 0.23 where
seeds 1 and 2 reached 0.71 / 0.74, docs/experiments.md "Warm start"); a comparison that starts every arm from such a
seed measures the seed. Selection uses dev only, so test stays untouched, and every arm then starts from the one
checkpoint chosen here. The choice is written next to it (``warm_start.json``) so that a report can name it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from slate.config import RunConfig
from slate.data.records import QARecord
from slate.errors import ConfigError
from slate.eval.evaluate import evaluate
from slate.retrieval.base import Retriever
from slate.rollout.engine import RolloutEngine
from slate.rollout.policy import load_policy

logger = logging.getLogger(__name__)

SELECTION_FILE = "warm_start.json"


def best_candidate(scores: list[float]) -> int:
    """Index of the highest score; the first one wins a tie (candidates are listed in seed order, so a tie keeps the
    lower seed and the choice does not depend on the order the runs finished in)."""
    if not scores:
        raise ConfigError("no warm-start candidates to choose from")
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` → ``[0, 1, 2]``; a clear error for anything else (a repeated seed would train the same run twice)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: expected distinct comma-separated integers, e.g. 0,1,2")
    return seeds


def select_warm_start(candidates: list[Path], dev: list[QARecord], retriever: Retriever, config: RunConfig,
                      out_dir: Path) -> dict[str, Any]:
    """Greedy dev EM of every candidate under one config (the same retriever and rollout settings for all), the best
    one copied to ``out_dir`` with ``warm_start.json`` beside it. Returns what that file holds."""
    if not dev:
        raise ConfigError("warm-start selection: no dev questions to evaluate on")
    for path in candidates:  # all checked before any is evaluated: a typo should not cost minutes of evaluation
        if not (Path(path) / "config.json").is_file():
            raise ConfigError(f"{path}: not a checkpoint directory (no config.json)")
    rows = []
    for path in candidates:
        engine = RolloutEngine(load_policy(config.model, path), retriever, config.rollout, config.retrieval.top_k,
                               max_retries=config.retrieval.max_retries)
        result, _ = evaluate(engine, dev)
        row = {"path": str(path), "em": result["em"], "valid_rate": result["valid_rate"],
               "searches": result["searches"],
               "by_hops": {hops: r["em"] for hops, r in result.get("by_hops", {}).items()}}
        seed = _saved_seed(Path(path))
        if seed is not None:
            row["seed"] = seed
        logger.info("warm-start candidate %s: dev EM %.3f on %d questions", path, row["em"], len(dev))
        rows.append(row)
    chosen = best_candidate([row["em"] for row in rows])
    out_dir = Path(out_dir)
    source = Path(candidates[chosen])
    if source.resolve() != out_dir.resolve():
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():  # files only: an SFT output is flat, and out_dir may hold the candidates
            if item.is_file():
                shutil.copy2(item, out_dir / item.name)
    selection = {"selected_on": "dev", "questions": len(dev), "chosen": rows[chosen]["path"],
                 "chosen_em": rows[chosen]["em"], "candidates": rows}
    (out_dir / SELECTION_FILE).write_text(json.dumps(selection, indent=2) + "\n")
    logger.info("warm start: %s (dev EM %.3f) copied to %s", source, rows[chosen]["em"], out_dir)
    return selection


def _saved_seed(path: Path) -> int | None:
    """The ``sft.seed`` saved with an SFT output, if it has a saved config."""
    import yaml

    saved = path / "slate_config.yaml"
    if not saved.is_file():
        return None
    seed = (yaml.safe_load(saved.read_text()) or {}).get("sft", {}).get("seed")
    return int(seed) if seed is not None else None
