"""Dev EM against SFT steps: one SFT run that evaluates the policy every ``--eval-every`` steps.

Each evaluation (greedy, the first ``--dev-questions`` dev questions) is appended to ``OUT/curve.jsonl`` as soon as it
is done, so a run that is stopped keeps what it measured. Evaluating does not change the run: the checkpoint in
``OUT/policy`` is the one `slate sft` would save with the same config. The plateau check is two runs, N and 1.5 N
steps (the cosine schedule fits the step count, so a longer run is not a continuation of a shorter one):

    python benchmarks/sft_curve.py --config configs/tiny.yaml --out runs/curve_n sft.max_steps=3000
    python benchmarks/sft_curve.py --config configs/tiny.yaml --out runs/curve_15n sft.max_steps=4500

A run saves its state every ``--checkpoint-every`` steps (``OUT/checkpoints``); the same command run again continues
from the newest intact checkpoint (its curve rows up to there kept) to the weights an uninterrupted run reaches, and
one run on a finished OUT does nothing. A different config on the same OUT is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from slate.config import load_config, save_config
from slate.data.records import read_qa_jsonl
from slate.eval.evaluate import evaluate
from slate.retrieval.bm25 import Bm25Retriever
from slate.rollout.engine import RolloutEngine
from slate.rollout.policy import Policy
from slate.trainer.checkpoint import latest_checkpoint
from slate.trainer.sft import train_sft
from slate.world.build import build_world, write_world

logger = logging.getLogger("sft_curve")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", default=["configs/tiny.yaml"],
                        help="presets, layered in order (e.g. configs/tiny.yaml configs/hardness/hard.yaml)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--dev-questions", type=int, default=200)
    parser.add_argument("--checkpoint-every", type=int, default=250, help="steps between saved states (0: none)")
    parser.add_argument("overrides", nargs="*", help="Dotted overrides, e.g. sft.max_steps=3000 sft.seed=1.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = load_config(args.config, args.overrides)
    world_dir = Path(config.world.dir)
    if not (world_dir / "corpus.jsonl").is_file():
        write_world(build_world(config.world.seed, config.world.size, config.world.max_hops), world_dir,
                    config.world.seed, config.world.size, config.world.max_hops)
    retriever = Bm25Retriever.from_corpus_cached(world_dir / "corpus.jsonl", world_dir / "bm25_index")
    dev = read_qa_jsonl(world_dir / "dev.jsonl")[: args.dev_questions]
    if (args.out / "policy" / "model.safetensors").is_file():
        logger.info("%s is finished (policy/ saved); nothing to do. Remove it or choose another --out to rerun",
                    args.out)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    curve, saved_config = args.out / "curve.jsonl", args.out / "config.yaml"
    resumed, first_step = latest_checkpoint(args.out), 0
    if resumed is not None:
        if not saved_config.is_file() or load_config(saved_config) != config:
            raise SystemExit(f"{args.out} holds another run's checkpoints (its config.yaml differs from this "
                             "command's); choose another --out, or remove it to start again")
        first_step = int(resumed.name.removeprefix("step-"))
        rows = [json.loads(line) for line in curve.read_text().splitlines()] if curve.is_file() else []
        curve.write_text("".join(json.dumps(row) + "\n" for row in rows if row["step"] <= first_step))
    else:
        curve.write_text("")
        save_config(config, saved_config)
    start = time.perf_counter()
    eval_s = 0.0

    def on_eval(step: int, policy: Policy) -> None:
        nonlocal eval_s
        began = time.perf_counter()
        engine = RolloutEngine(policy, retriever, config.rollout, config.retrieval.top_k)
        result, _ = evaluate(engine, dev)
        eval_s += time.perf_counter() - began
        row = {"step": step, "train_s": round(time.perf_counter() - start - eval_s, 1), "em": result["em"],
               "valid_rate": result["valid_rate"], "searches": result["searches"],
               "by_hops": {hops: round(r["em"], 4) for hops, r in result.get("by_hops", {}).items()}}
        if first_step:
            row["resumed_from"] = first_step  # train_s counts from the resume
        with curve.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        logger.info("step %d: dev EM %.3f %s (eval %.0f s)", step, result["em"], row["by_hops"],
                    time.perf_counter() - began)

    def on_step(step: int, total: int, loss: float) -> None:
        if step % 100 == 0 and step > first_step:
            logger.info("step %d/%d loss %.4f (%.2f s per step)", step, total, loss,
                        (time.perf_counter() - start - eval_s) / (step - first_step))

    train_sft(config, read_qa_jsonl(world_dir / "train.jsonl"), retriever, world_dir, args.out / "policy",
              on_step=on_step, on_eval=on_eval, eval_every=args.eval_every, checkpoint_to=args.out,
              checkpoint_every=args.checkpoint_every)
    save_config(config, args.out / "policy" / "slate_config.yaml")
    logger.info("done in %.0f s (%.0f s of it evaluating)", time.perf_counter() - start, eval_s)


if __name__ == "__main__":
    main()
