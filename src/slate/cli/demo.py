"""``make demo``: what the method comparison found, on a laptop. Build the default world, show it, take the
comparison's warm start, train it with SLATE (oracle judge) and with Search-R1 for a few RL steps each, and print dev
EM per hop before and after. Every stage reuses its output when it exists, so a second run is quick;
``rm -rf runs/demo`` starts over. ``--train-start`` trains the warm start itself first (the preset's SFT, about 45
minutes on 2 cores) instead of taking the shipped one; ``--quick`` checks an install in about a minute.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.table import Table

from slate.cli.common import console, fail, out, print_eval_table, setup_logging
from slate.config import load_config, save_config
from slate.data.records import read_qa_jsonl
from slate.errors import SlateError
from slate.eval.evaluate import evaluate
from slate.methods import method_of
from slate.retrieval.bm25 import Bm25Retriever
from slate.rollout.engine import RolloutEngine
from slate.rollout.policy import load_hf_policy
from slate.trainer.loop import Trainer
from slate.trainer.sft import train_sft
from slate.world.build import build_world, write_world

# The comparison's start (docs/experiments.md, "Warm start"): 4,500 SFT steps of configs/tiny.yaml, seed 0, whose
# demonstrator gives up at the last hop of most 3-4-hop questions; the world it was trained on is the preset's
# (seed 0, default size). Training it takes about 45 minutes here, longer than the demo may; `--train-start` does.
SHIPPED_START = Path("results/start_policy")
# 10 RL steps of 32 questions (about 160k policy tokens), the comparison's first evaluation: there SLATE and Search-R1
# had won back most of the 3-4-hop questions the start gives up on, and SLATE's judge over full trajectories
# (slate_full) far fewer (results/compare.md, "The first evaluation").
DEMO = ["trainer.steps=10"]
# the RL methods the demo trains, each from the same start: (name, preset, overrides)
DEMO_METHODS = [("SLATE", "configs/slate-tiny.yaml", []), ("Search-R1", "configs/searchr1-tiny.yaml", []),
                ("SLATE, full trajectories", "configs/slate-tiny.yaml", ["trainer.method=slate_full"])]
# `--quick`: the same stages in about a minute. The micro world (24 people, 1-2 hops) and one retrieved passage keep
# sequences short, and the demonstrations make no mistakes, so a 2-layer policy learns to copy names in 400 steps
# (dev EM clearly above 0); then 2 RL steps. It checks an install and shows a policy that learns.
QUICK = [
    "world.size=micro", "retrieval.top_k=1", "rollout.max_steps=3", "model.tiny.hidden_size=64",
    "model.tiny.num_layers=2", "model.tiny.num_heads=1", "model.tiny.intermediate_size=192",
    "sft.max_steps=400", "sft.lr=0.01", "sft.warmup_steps=10", "sft.batch_tokens=2048", "sft.vague_query_rate=0",
    "sft.wrong_entity_rate=0", "sft.skip_hop_rate=0", "sft.early_answer_rate=0",
    "trainer.steps=2", "trainer.questions_per_step=4",
]


def show_world(world_dir: Path, retriever: Bm25Retriever) -> None:
    dev = read_qa_jsonl(world_dir / "dev.jsonl")
    summary = json.loads((world_dir / "world.json").read_text())
    out.print(f"[bold]The world[/]: {summary['passages']} passages of fictional entities "
              f"{summary['entity_types']}; questions per split and hop {summary['questions']}")
    hop_counts = {r.hops for r in dev}
    for hops in sorted({1, 2, max(hop_counts)} & hop_counts):
        record = next(r for r in dev if r.hops == hops)
        table = Table(title=f"{hops}-hop: {record.question}  →  {record.golden_answers[0]}", title_justify="left")
        for column in ("hop", "sub-question", "answer", "passage"):
            table.add_column(column)
        for index, hop in enumerate(record.chain, start=1):
            table.add_row(str(index), hop.sub_question, hop.answer, hop.doc_id)
        out.print(table)
    hop = next(r for r in dev if r.hops == 2).chain[1]
    table = Table(title=f"BM25 top-3 for the sub-question {hop.sub_question!r} (gold passage {hop.doc_id})",
                  title_justify="left")
    for column in ("rank", "id", "score", "passage"):
        table.add_column(column)
    for rank, hit in enumerate(retriever.search([hop.sub_question], 3)[0], start=1):
        mark = " [green](gold)[/]" if hit.id == hop.doc_id else ""
        table.add_row(str(rank), hit.id + mark, f"{hit.score:.2f}", f"{hit.title}: {hit.text[:80]}…")
    out.print(table)


def dev_eval(policy_dir: Path, config, retriever: Bm25Retriever, world_dir: Path, cache: Path, limit: int) -> dict:
    if cache.is_file():
        return json.loads(cache.read_text())
    engine = RolloutEngine(load_hf_policy(policy_dir), retriever, config.rollout, config.retrieval.top_k)
    result, _ = evaluate(engine, read_qa_jsonl(world_dir / "dev.jsonl")[:limit])
    cache.write_text(json.dumps(result, indent=2) + "\n")
    return result


def warm_start(quick: bool, train_start: bool, root: Path, sft_config, world_dir: Path,
               retriever: Bm25Retriever) -> Path:
    """The policy every method starts from: trained here (``--quick``, ``--train-start``) or the shipped one."""
    if not (quick or train_start):
        if not (SHIPPED_START / "config.json").is_file():
            raise SlateError(f"{SHIPPED_START}/ (the comparison's warm start) is missing: run make demo from the "
                             "repository root, or train it with: python -m slate.cli.demo --train-start")
        out.print(f"[bold]Warm start[/]: {SHIPPED_START}/ (4,500 SFT steps of configs/tiny.yaml, seed 0; "
                  "`--train-start` trains it here)")
        return SHIPPED_START
    sft_dir = root / "sft"
    if not (sft_dir / "config.json").is_file():
        console.print("[bold]Warm-start[/]: SFT on scripted demonstrations…")
        stage = time.perf_counter()
        train_sft(sft_config, read_qa_jsonl(world_dir / "train.jsonl"), retriever, world_dir, sft_dir)
        save_config(sft_config, sft_dir / "slate_config.yaml")
        out.print(f"SFT finished in {time.perf_counter() - stage:.0f} s")
    return sft_dir


def main(argv: list[str] | None = None) -> None:
    flags = set(sys.argv[1:] if argv is None else argv)
    quick, train_start = "--quick" in flags, "--train-start" in flags
    root, dev_questions = (Path("runs/demo_quick"), 40) if quick else (Path("runs/demo"), 200)
    methods = DEMO_METHODS[:1] if quick else DEMO_METHODS
    setup_logging()
    start = time.perf_counter()
    try:
        extra = [f"world.dir={root / 'world'}", *(QUICK if quick else DEMO)]
        sft_config = load_config("configs/tiny.yaml", [o for o in extra if not o.startswith("trainer.")])
        world_dir = root / "world"
        if not (world_dir / "corpus.jsonl").is_file():
            write_world(build_world(sft_config.world.seed, sft_config.world.size), world_dir,
                        sft_config.world.seed, sft_config.world.size)
        retriever = Bm25Retriever.from_corpus_cached(world_dir / "corpus.jsonl", world_dir / "bm25_index")
        show_world(world_dir, retriever)

        sft_dir = warm_start(quick, train_start, root, sft_config, world_dir, retriever)
        results = {"start": dev_eval(sft_dir, sft_config, retriever, world_dir, root / "eval_sft.json",
                                     dev_questions)}
        print_eval_table(results["start"], f"Warm start, {dev_questions} dev questions (greedy)")

        for name, preset, overrides in methods:
            config = load_config(preset, [*overrides, *(o for o in extra if not o.startswith(("sft.", "model.")))])
            slug = config.trainer.method
            run_dir = root / slug
            if not (run_dir / "policy" / "config.json").is_file():
                console.print(f"[bold]{name}[/]: {config.trainer.steps} RL steps of "
                              f"{config.trainer.questions_per_step} questions, k = {config.rollout.group_size}"
                              + (", oracle judge" if method_of(config).needs_judge and config.judge.backend == "oracle"
                                 else "")
                              + "…")
                trainer = Trainer(config, read_qa_jsonl(world_dir / "train.jsonl"), retriever, sft_dir, run_dir,
                                  world_dir)
                stage = time.perf_counter()
                trainer.train(resume=True)
                out.print(f"{name} finished in {time.perf_counter() - stage:.0f} s "
                          f"({trainer.generated_tokens:,} policy tokens)")
            results[name] = dev_eval(run_dir / "policy", config, retriever, world_dir, root / f"eval_{slug}.json",
                                     dev_questions)
            print_eval_table(results[name], f"After {name}, {dev_questions} dev questions (greedy)")
    except SlateError as error:
        fail(error)
    table = Table(title="Dev EM per hop: the warm start, then each method from it")
    for column in ("hops", *results):
        table.add_column(column, justify="right")
    for hops in sorted(results["start"].get("by_hops", {})):
        table.add_row(hops, *(f"{r['by_hops'][hops]['em']:.3f}" for r in results.values()))
    table.add_row("all", *(f"{r['em']:.3f}" for r in results.values()))
    out.print(table)
    out.print(f"demo finished in {time.perf_counter() - start:.0f} s; outputs in {root}/")


if __name__ == "__main__":
    try:
        main()
    except typer.Exit as stop:  # fail() ends the demo with one clean error line and a non-zero status
        sys.exit(stop.exit_code)
