"""The ``slate`` command line. Only this package prints; everything below it logs."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from slate.cli.common import console, duration, fail, out, print_eval_table, progress, resolve_world, setup_logging
from slate.cli.judge import register as register_judge
from slate.cli.retrieval import register as register_retrieval
from slate.cli.serve_judge import register as register_serve_judge
from slate.cli.serve_policy import register as register_serve_policy
from slate.errors import SlateError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="slate-rl: RL for search-augmented reasoning.")
world_app = typer.Typer(no_args_is_help=True, help="Build and inspect the synthetic multi-hop world.")
app.add_typer(world_app, name="world")
register_retrieval(app)
register_judge(app)
register_serve_policy(app)
register_serve_judge(app)
logger = logging.getLogger("slate.cli")


@app.callback()
def _configure(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug log lines too.")) -> None:
    """Runs before every command, however ``slate`` was started (the installed script calls ``app``)."""
    setup_logging(verbose)


@world_app.command("build")
def world_build(
    out_dir: Path = typer.Option(..., "--out", help="Directory to write corpus.jsonl, train/dev/test.jsonl."),
    seed: int = typer.Option(0, help="Random seed; the same seed and size give byte-identical files."),
    size: str = typer.Option("default", help="World size preset: micro, tiny, small or default."),
    max_hops: int | None = typer.Option(None, help="Longest chain (1-6); default: the size's own (4)."),
) -> None:
    """Build a synthetic world: a fictional corpus and 1–4-hop questions (up to 6 with --max-hops) with gold chains."""
    from slate.world.build import build_world, write_world

    try:
        summary = write_world(build_world(seed=seed, size=size, max_hops=max_hops), out_dir, seed=seed, size=size,
                              max_hops=max_hops)
    except SlateError as error:
        fail(error)
    out.print(f"wrote world to {out_dir}: {summary['passages']} passages, questions per split and hop "
              f"{summary['questions']}")


@app.command("search")
def search(
    queries: list[str] = typer.Argument(None, help="Queries to run (or use --queries-file)."),
    corpus: Path = typer.Option(..., help="Corpus jsonl ({id, contents})."),
    index: Path | None = typer.Option(None, help="BM25 index directory: loaded if present, else built and saved."),
    k: int = typer.Option(3, "--k", min=1, help="Passages per query."),
    queries_file: Path | None = typer.Option(None, help="A file with one query per line."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per query."),
) -> None:
    """Search a corpus with BM25."""
    from slate.retrieval.bm25 import Bm25Retriever

    try:
        all_queries = list(queries or [])
        if queries_file is not None:
            if not queries_file.is_file():
                raise SlateError(f"{queries_file}: no such file (--queries-file takes one query per line).")
            all_queries += [line.strip() for line in queries_file.read_text().splitlines() if line.strip()]
        if not all_queries:
            raise SlateError("no queries: pass them as arguments or with --queries-file FILE.")
        retriever = Bm25Retriever.from_corpus_cached(corpus, index)
        results = retriever.search(all_queries, k)
    except SlateError as error:
        fail(error)
    for query, hits in zip(all_queries, results, strict=True):
        if as_json:
            out.print_json(json.dumps({"query": query, "hits": [{"id": h.id, "title": h.title, "score": h.score}
                                                                for h in hits]}), indent=None)
            continue
        table = Table(title=f"[bold]{query}", show_lines=False)
        for column in ("rank", "id", "score", "title", "text"):
            table.add_column(column)
        for rank, hit in enumerate(hits, start=1):
            table.add_row(str(rank), hit.id, f"{hit.score:.2f}", hit.title, hit.text[:90])
        out.print(table)


@app.command("sft")
def sft(
    config_path: list[Path] = typer.Option(..., "--config", help="YAML preset, e.g. configs/tiny.yaml; repeat to "
                                                                "layer a setting over it (configs/hardness/)."),
    out_dir: Path = typer.Option(..., "--out", help="Where to save the warm-started policy."),
    world: Path | None = typer.Option(None, help="A built world directory (overrides world.dir)."),
    init: Path | None = typer.Option(None, help="Start from this checkpoint instead of a new tiny model."),
    seeds: str | None = typer.Option(None, help="Train one run per seed (e.g. 0,1,2) into OUT/seed_S, evaluate each "
                                                "on dev and copy the best to OUT (choice in OUT/warm_start.json)."),
    select_questions: int = typer.Option(200, help="With --seeds: how many dev questions pick the best seed."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. sft.epochs=1."),
) -> None:
    """Warm-start a policy on scripted demonstrations (loss on policy tokens only)."""
    from slate.config import load_config, save_config
    from slate.data.records import read_qa_jsonl
    from slate.retrieval.factory import build_retriever
    from slate.trainer.sft import train_sft
    from slate.trainer.warm_start import parse_seeds, select_warm_start

    try:
        config = load_config(config_path, overrides)
        world_dir = resolve_world(config, world)
        retriever = build_retriever(config.retrieval, world_dir)
        records = read_qa_jsonl(world_dir / "train.jsonl")
        runs = [(config, out_dir)]
        if seeds is not None:
            runs = [(config.model_copy(update={"sft": config.sft.model_copy(update={"seed": seed})}),
                     out_dir / f"seed_{seed}") for seed in parse_seeds(seeds)]
        with progress() as bar:
            for run_config, run_dir in runs:
                task = bar.add_task(f"SFT seed {run_config.sft.seed}", total=None, info="")

                def on_step(step: int, total: int, loss: float, task=task) -> None:
                    bar.update(task, completed=step, total=total, info=f"loss {loss:.3f}")

                train_sft(run_config, records, retriever, world_dir, run_dir, init=init, on_step=on_step)
                save_config(run_config, run_dir / "slate_config.yaml")
        if seeds is not None:
            dev = read_qa_jsonl(world_dir / "dev.jsonl")[:select_questions]
            selection = select_warm_start([run_dir for _, run_dir in runs], dev, retriever, config, out_dir)
    except SlateError as error:
        fail(error)
    if seeds is not None:
        print_selection(selection)
    out.print(f"saved the warm-started policy to {out_dir}")


@app.command("sft-select")
def sft_select(
    candidates: list[Path] = typer.Option(..., "--candidate", help="An SFT output; repeat for each seed's run."),
    out_dir: Path = typer.Option(..., "--out", help="Where to copy the best candidate (with warm_start.json)."),
    world: Path | None = typer.Option(None, help="A built world directory (overrides world.dir)."),
    config_path: Path | None = typer.Option(None, "--config", help="YAML preset for the evaluation; default: the "
                                                                  "one saved with the first candidate."),
    questions: int = typer.Option(200, help="How many dev questions to evaluate each candidate on."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. retrieval.top_k=5."),
) -> None:
    """Keep the best of several SFT runs on dev (runs trained side by side, one per core, then chosen here)."""
    from slate.config import load_config
    from slate.data.records import read_qa_jsonl
    from slate.retrieval.factory import build_retriever
    from slate.trainer.warm_start import select_warm_start

    try:
        saved = candidates[0] / "slate_config.yaml"
        config = load_config(config_path or (saved if saved.is_file() else None), overrides)
        world_dir = resolve_world(config, world)
        dev = read_qa_jsonl(world_dir / "dev.jsonl")[:questions]
        selection = select_warm_start(candidates, dev, build_retriever(config.retrieval, world_dir), config, out_dir)
    except SlateError as error:
        fail(error)
    print_selection(selection)
    out.print(f"saved the warm-started policy to {out_dir}")


def print_selection(selection: dict) -> None:
    table = Table(title=f"warm start: dev EM on {selection['questions']} questions")
    hops = sorted({h for row in selection["candidates"] for h in row["by_hops"]})
    for column in ["candidate", "seed", "EM", *[f"{h} hops" for h in hops], ""]:
        table.add_column(column)
    for row in selection["candidates"]:
        table.add_row(row["path"], str(row.get("seed", "")), f"{row['em']:.3f}",
                      *[f"{row['by_hops'].get(h, float('nan')):.3f}" for h in hops],
                      "chosen" if row["path"] == selection["chosen"] else "")
    out.print(table)


@app.command("train")
def train(
    config_path: list[Path] = typer.Option(..., "--config", help="YAML preset, e.g. configs/searchr1-tiny.yaml; "
                                                                "repeat to layer a setting over it."),
    init: Path | None = typer.Option(None, "--init", help="The starting policy: an SFT/RL output or any Hugging Face "
                                                         "causal LM directory. Default: the config's model "
                                                         "(model.source=hf + model.path, or smollm2)."),
    out_dir: Path | None = typer.Option(None, "--out", help="Run directory: metrics.jsonl, checkpoints/, policy/."),
    world: Path | None = typer.Option(None, help="A built world directory (overrides world.dir)."),
    data: list[Path] = typer.Option(None, "--data", help="Training question files, mixed with a seeded shuffle "
                                                        "(FlashRAG jsonl, Search-R1 parquet, {question, answer} "
                                                        "json/jsonl); overrides data.train. Default: the world's."),
    eval_data: list[Path] = typer.Option(None, "--eval-data", help="Periodic-evaluation files (overrides "
                                                                  "data.eval)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the config, resolve data, retriever and judge, "
                                                         "print the plan; load no weights, contact no server."),
    resume: bool = typer.Option(False, help="Continue from the last checkpoint in --out."),
    overwrite: bool = typer.Option(False, help="--out holds an earlier run: move it aside (OUT.replaced-TIME) and "
                                               "start again."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. trainer.steps=10 rollout.group_size=4."),
) -> None:
    """RL training with the configured method (searchr1, stepsearch, slate, ablations)."""
    from slate.config import load_config
    from slate.errors import ConfigError
    from slate.trainer.checkpoint import prepare_run_dir

    try:
        config = load_config(config_path, overrides)
        if data or eval_data:
            config = config.model_copy(update={"data": config.data.model_copy(update={
                "train": [str(p) for p in data] if data else config.data.train,
                "eval": [str(p) for p in eval_data] if eval_data else config.data.eval})})
        if dry_run:
            print_plan(config, init, world)
            return
        if out_dir is None:
            raise ConfigError("slate train needs --out DIR (the run directory), unless --dry-run.")
        if resume and overwrite:
            raise ConfigError("--resume continues the run in --out and --overwrite moves it aside: pass one.")
        aside = prepare_run_dir(out_dir, resume, overwrite)  # before anything is loaded or written
        if aside is not None:
            console.print(f"moved the previous run aside to {aside}")
        _run_training(config, init, out_dir, world, resume)
    except SlateError as error:
        fail(error)
    out.print(f"saved the trained policy to {out_dir / 'policy'}")


def _training_questions(config, world: Path | None):
    """(train, eval, world_dir): question files when the config names them, else the synthetic world's splits."""
    from slate.data.mixture import load_mixture
    from slate.data.records import read_qa_jsonl

    if config.data.train:
        needs_world = world is not None or (config.retrieval.backend == "bm25" and not config.retrieval.corpus)
        world_dir = resolve_world(config, world) if needs_world else None
        train_records = load_mixture(config.data.train, config.trainer.seed, config.data.max_questions)
        eval_records = load_mixture(config.data.eval, config.trainer.seed, config.trainer.eval_questions,
                                    what="eval") if config.data.eval else []
        return train_records, eval_records, world_dir
    world_dir = resolve_world(config, world)
    eval_records = read_qa_jsonl(world_dir / "dev.jsonl")[: config.trainer.eval_questions]
    return read_qa_jsonl(world_dir / "train.jsonl"), eval_records, world_dir


def _run_training(config, init: Path | None, out_dir: Path, world: Path | None, resume: bool) -> None:
    from slate.methods import check_gold_evidence
    from slate.retrieval.factory import build_retriever
    from slate.trainer.loop import Trainer

    train_records, eval_records, world_dir = _training_questions(config, world)
    check_gold_evidence(config, train_records)  # before any weights load: StepSearch / oracle need gold evidence
    retriever = build_retriever(config.retrieval, world_dir)
    trainer = Trainer(config, train_records, retriever, init, out_dir, world_dir, eval_records)
    if trainer.accelerator.is_main_process:
        console.print(f"[bold]{config.trainer.method}[/] for {config.trainer.steps} steps on "
                      f"{len(train_records)} questions → {out_dir}")
    # a bar on a terminal; elsewhere the log line of each step is the progress report
    bar = progress() if console.is_terminal else None
    task = bar.add_task(config.trainer.method, total=config.trainer.steps, info="") if bar is not None else None
    timing = {"seconds": 0.0, "steps": 0}  # the steps this process ran (a resumed run starts after its checkpoint)

    def on_step(step: int, total: int, m: dict[str, float]) -> None:
        took = m["time/rollout_s"] + m["time/update_s"]
        timing["seconds"] += took
        timing["steps"] += 1
        summary = (f"reward {m['reward/mean']:.2f} | EM {m['rollout/em']:.2f} | kl {m['loss/kl']:.4f} | "
                   f"clip {m['loss/clip_frac']:.3f} | {took:.1f} s")
        if bar is not None:
            bar.update(task, completed=step, info=summary)
        if trainer.accelerator.is_main_process:
            logger.info("step %d/%d | %s | ETA %s", step, total, summary,
                        duration(timing["seconds"] / timing["steps"] * (total - step)))

    with bar if bar is not None else contextlib.nullcontext():
        trainer.train(resume=resume, on_step=on_step)


def print_plan(config, init: Path | None, world: Path | None) -> None:
    from slate.trainer.plan import build_plan

    plan = build_plan(config, init, world)
    for section, rows in plan.sections.items():
        table = Table(title=f"[bold]{section}", show_header=False, title_justify="left")
        table.add_column("what", style="bold")
        table.add_column("value")
        for key, value in rows:
            table.add_row(key, value)
        out.print(table)
    for problem in plan.problems:
        out.print(Text.assemble(("not ready here: ", "bold yellow"), problem))
    out.print("dry run: config valid; no weights loaded, no server contacted.")


def eval_config(policy_dir: Path | None, config_paths: list[Path] | None, overrides: list[str] | None):
    """(config, where its settings came from, whether they were chosen rather than defaulted): ``--config``, else
    the config saved with the policy (``slate_config.yaml`` beside it, or a checkpoint's ``config.yaml`` above it),
    else the built-in defaults; the overrides apply to any of them."""
    from slate.config import load_config

    extra = f" + overrides {' '.join(overrides)}" if overrides else ""
    if config_paths:
        return load_config(config_paths, overrides), f"--config {', '.join(map(str, config_paths))}{extra}", True
    if policy_dir is not None:
        for saved in (policy_dir / "slate_config.yaml", policy_dir.parent / "config.yaml"):
            if saved.is_file():
                return load_config(saved, overrides), f"saved with the policy: {saved}{extra}", True
    return load_config(None, overrides), f"the built-in defaults{extra}", False


def describe_rollout(config) -> str:
    """The settings that change what an evaluation measures, in one line."""
    from slate.rollout.prompt import resolve_template

    rc, r = config.rollout, config.retrieval
    prompt = resolve_template(rc.prompt_template).strip()
    return (f"prompt {prompt[:60]!r}{'…' if len(prompt) > 60 else ''}, B = {rc.max_steps} steps, "
            f"{rc.max_step_tokens} tokens per step, {rc.max_information_tokens} information tokens, "
            f"{r.backend} top-{r.top_k}")


@app.command("eval")
def evaluate_cmd(
    policy_dir: Path | None = typer.Option(None, "--policy", help="A checkpoint directory (SFT output, or a run "
                                                                 "directory of slate train: its policy/); default: "
                                                                 "the config's model (model.source)."),
    data: list[Path] = typer.Option(None, "--data", help="Question files (FlashRAG jsonl, Search-R1 parquet, "
                                                        "{question, answer} json/jsonl). Default: the world's dev."),
    config_path: list[Path] = typer.Option(None, "--config", help="YAML preset (retrieval, rollout settings), "
                                                                "repeatable; default: the one saved with the "
                                                                "policy."),
    world: Path | None = typer.Option(None, help="A built world directory (corpus; dev split if no --data)."),
    limit: int | None = typer.Option(None, help="Evaluate at most this many questions per file."),
    out_json: Path | None = typer.Option(None, "--out", help="Write the metrics (and a .md table) here."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. retrieval.top_k=5."),
) -> None:
    """Greedy evaluation: EM, F1, valid rate and searches, by hop count or by dataset."""
    from slate.eval.evaluate import evaluate
    from slate.eval.tables import format_markdown
    from slate.retrieval.factory import build_retriever
    from slate.rollout.engine import RolloutEngine
    from slate.rollout.policy import load_policy, policy_dir_of

    try:
        policy_dir = policy_dir_of(policy_dir) if policy_dir is not None else None
        config, source, chosen = eval_config(policy_dir, config_path, overrides)
        console.print(Text(f"rollout settings ({source}): {describe_rollout(config)}"), soft_wrap=True)
        if policy_dir is not None and not chosen:
            console.print(Text.assemble(("warning: ", "bold yellow"), f"{policy_dir} carries no slate_config.yaml, "
                                        "so it is evaluated with the built-in rollout settings, which may not be those "
                                        "it was trained with (another prompt, budget or token caps change the "
                                        "scores); pass --config with its training preset."), soft_wrap=True)
        if data:  # the questions first, so a bad file is refused before anything else; never a world built for them
            records = _load_questions(data, limit)
            needs_world = world is not None or (config.retrieval.backend == "bm25" and not config.retrieval.corpus)
            world_dir = resolve_world(config, world, may_build=False) if needs_world else None
        else:
            world_dir = resolve_world(config, world)
            records = _load_questions([world_dir / "dev.jsonl"], limit)
        policy = load_policy(config.model, policy_dir)
        engine = RolloutEngine(policy, build_retriever(config.retrieval, world_dir), config.rollout,
                               top_k=config.retrieval.top_k, max_retries=config.retrieval.max_retries)
        result, _ = evaluate(engine, records)
    except SlateError as error:
        fail(error)
    result["rollout_counters"] = dict(engine.counters)
    result["rollout_settings"] = {"source": source, **config.rollout.model_dump(mode="json")}
    name = str(policy_dir) if policy_dir is not None else policy.name
    print_eval_table(result, name)
    if out_json is not None:
        out_json.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(result, indent=2) + "\n")
        out_json.with_suffix(".md").write_text(format_markdown(result, name))


def _load_questions(paths: list[Path], limit: int | None):
    from slate.data.loaders import load_qa

    return [record for path in paths for record in load_qa(path, limit=limit)]


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
