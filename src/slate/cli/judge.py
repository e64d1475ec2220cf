"""``slate judge audit``: check a judge against the oracle on real steps before paying for training.

The steps come from policy rollouts (``--policy``, sampled as in training) or, before any training, from the
scripted demonstrations of ``world/demonstrations.py`` with their default mistake rates (vague queries, look-alike
entities, skipped hops, early answers), so every score of the oracle occurs. Each step becomes the judge items the
SLATE reward would send (``judge/items.py``); the judge and the oracle score them and ``judge/audit.py`` reports,
per dimension, the confusion matrix, the accuracy and Cohen's kappa. Like training, the audit stops with "judge
unavailable" (exit 1) when more than ``judge.max_failure_share`` of the items failed; failed items below that share
are left out of the agreement and counted. With ``judge.max_context_chars`` set, the items are judged twice, with the
retrieved passages in full and cut, and the report compares the two.

``register(app)`` adds the ``judge`` command group to the main typer app; heavy imports happen inside the command.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import typer

from slate.cli.common import console, fail, out, resolve_world
from slate.data.records import QARecord
from slate.errors import ConfigError, DataError, SlateError
from slate.retrieval.base import Retriever
from slate.rollout.actions import parse_step
from slate.rollout.episode import Episode, Step

judge_app = typer.Typer(no_args_is_help=True, help="Check an LLM judge against the oracle.")


def register(app: typer.Typer) -> None:
    app.add_typer(judge_app, name="judge")


def scripted_episodes(world_dir: Path, retriever: Retriever, records: list[QARecord], max_steps: int, top_k: int,
                      seed: int) -> list[Episode]:
    """Scripted demonstrations (default mistake rates) as text-only episodes: no token ids, hits kept."""
    from slate.world.demonstrations import MistakeRates, ScriptedSearcher

    searcher = ScriptedSearcher(world_dir, retriever, MistakeRates(), max_steps, top_k, seed=seed)
    episodes = []
    for record in records:
        steps = [Step(text=s.text, parsed=parse_step(s.text), token_ids=[], logprobs=[], hits=list(s.hits or []))
                 for s in searcher.demonstrate(record)]
        episodes.append(Episode(record=record, prompt_ids=[], steps=steps))
    return episodes


def policy_episodes(policy_dir: Path, fallback_config: Any, world_dir: Path, records: list[QARecord],
                    seed: int) -> list[Episode]:
    """One sampled rollout per question, with the model, rollout and retrieval settings saved beside the policy
    (its prompt template in particular), or those of ``fallback_config`` when it has none."""
    from slate.config import load_config
    from slate.retrieval.factory import build_retriever
    from slate.rollout.engine import RolloutEngine
    from slate.rollout.policy import load_policy

    if not policy_dir.is_dir():
        raise ConfigError(f"{policy_dir}: no such policy directory. Pass --policy with a directory written by "
                          "`slate sft` or `slate train`, or leave it out to audit on scripted demonstrations.")
    saved = policy_dir / "slate_config.yaml"
    config = load_config(saved) if saved.is_file() else fallback_config
    policy = load_policy(config.model, policy_dir)
    engine = RolloutEngine(policy, build_retriever(config.retrieval, world_dir), config.rollout,
                           top_k=config.retrieval.top_k, max_retries=config.retrieval.max_retries, seed=seed)
    return engine.rollout(records)


def _passages_cut(episodes: list[Episode], max_context_chars: int) -> tuple[int, int]:
    """(passages cut, characters left out) over the contexts of every judged step, as the reward counts them."""
    from slate.judge.items import context_cut

    cuts = [context_cut(episode, index, max_context_chars) for episode in episodes
            for index, step in enumerate(episode.steps) if step.action != "invalid" and not step.is_forced]
    return sum(c[0] for c in cuts), sum(c[1] for c in cuts)


@judge_app.command("audit")
def audit_cmd(
    judge_path: Path = typer.Option(..., "--judge", help="YAML with a `judge:` section (or a full run config); "
                                    "its rollout.max_steps and retrieval settings are used for scripted steps."),
    world: Path = typer.Option(..., "--world", help="A built world directory (`slate world build`)."),
    policy_dir: Path | None = typer.Option(None, "--policy", help="A checkpoint to roll out (SFT or RL output). "
                                           "Default: scripted demonstrations, so the audit works before training."),
    n: int = typer.Option(50, "--n", min=1, help="Dev questions to take steps from (the first N of dev.jsonl)."),
    seed: int = typer.Option(0, help="Seed of the demonstrations' mistakes or of the policy's sampling."),
    out_file: Path | None = typer.Option(None, "--out", help="Also write the report here (Markdown)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides of the --judge file, e.g. judge.noise=0.1."),
) -> None:
    """Score steps with a judge and with the oracle: confusion matrix, accuracy and Cohen's kappa per dimension."""
    from rich.markdown import Markdown

    from slate.config import load_config
    from slate.data.records import read_qa_jsonl
    from slate.judge import build_judge
    from slate.judge.audit import audit, format_audit_markdown, format_cut_comparison
    from slate.judge.items import items_from_episodes
    from slate.judge.oracle import OracleJudge
    from slate.retrieval.factory import build_retriever

    try:
        config = load_config(judge_path, overrides)
        world_dir = resolve_world(config, world)
        records = read_qa_jsonl(world_dir / "dev.jsonl")[:n]
        if not records:
            raise DataError(f"{world_dir / 'dev.jsonl'}: no questions. Rebuild the world with `slate world build`.")
        if policy_dir is not None:
            console.print(f"rolling out {policy_dir} on {len(records)} dev questions")
            episodes = policy_episodes(policy_dir, config, world_dir, records, seed)
            source = f"rollouts of {policy_dir} (sampled, seed {seed})"
        else:
            retriever = build_retriever(config.retrieval, world_dir)
            episodes = scripted_episodes(world_dir, retriever, records, config.rollout.max_steps,
                                         config.retrieval.top_k, seed)
            source = f"scripted demonstrations (default mistake rates, seed {seed})"
        items = items_from_episodes(episodes)
        if not items:
            raise DataError(f"no step to judge: all {sum(len(e.steps) for e in episodes)} steps of the "
                            f"{len(episodes)} episodes are invalid or forced answers. Check the policy with "
                            "`slate eval` (valid rate).")
        judge = build_judge(config.judge)
        budget = config.judge.max_context_chars
        checks = {"max_failure_share": config.judge.max_failure_share, "hint": config.judge.failure_hint}
        report = audit(judge, OracleJudge(), items, **checks)
        if budget is not None:
            cut_report = audit(judge, OracleJudge(), items_from_episodes(episodes, budget), **checks)
        stats = {key.removeprefix('judge/'): value for key, value in judge.metrics().items()}
    except SlateError as error:
        fail(error)
    steps = len(items) // 2  # two items per judged step
    text = (f"Steps: {source}, {len(episodes)} dev questions of {world_dir}: {steps} judged steps, {len(items)} "
            f"items ({date.today().isoformat()}).\n\n" + format_audit_markdown(report))
    if budget is not None:
        passages, chars = _passages_cut(episodes, budget)
        text += (f"\nWith judge.max_context_chars={budget}: {passages} retrieved passages of the judged steps' "
                 f"contexts cut, {chars} characters left out.\n\n" + format_cut_comparison(report, cut_report, budget))
    out.print(Markdown(text))
    console.print(f"judge {judge.name}: {stats['calls']:.0f} calls ({stats['group_calls']:.0f} for groups, "
                      f"{stats['group_fallbacks']:.0f} group fallbacks), {stats['cache_hits']:.0f} cache hits, "
                      f"{stats['failures']:.0f} failed ({stats['parse_failures']:.0f} unparsable), "
                      f"{stats['prompt_tokens']:.0f} prompt tokens")
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(text)
        console.print(f"wrote the report to {out_file}")
