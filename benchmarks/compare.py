"""Method comparison from one SFT checkpoint at one budget of policy-generated tokens.

Trains every arm with the same start, retriever, token budget and evaluation, and writes
``results/compare.json`` (raw), ``results/compare.md`` (test EM per hop, mean ± 95% CI over seeds) and
``results/compare_curves.png`` (dev EM against policy tokens, mean and min–max over seeds; a panel per hop count).
Each curve starts at 0 tokens with the start checkpoint's EM on the same dev questions.

Arms: searchr1, stepsearch, slate, slate_full (judge rewards over k full trajectories: no truncation), slate_em
(truncation with an exact-match answer reward only), slate with oracle noise 0.1 and 0.3, slate_std_floor (the
advantage's std floored at 0.5: no blown-up near-ties), and continued SFT for the
mean wall-clock time of the RL arms (the honest control). ``--sizes`` adds SLATE vs Search-R1 from a second SFT
checkpoint of another policy size.

    python benchmarks/compare.py --sft runs/sft --world runs/world --seeds 0 1 2 --token-budget 600000
    # the same comparison on both cores: two commands on one --out, arms or seeds split between them
    OMP_NUM_THREADS=1 python benchmarks/compare.py --arms slate --seeds 0 1 2 &
    OMP_NUM_THREADS=1 python benchmarks/compare.py --arms searchr1 continued_sft --seeds 0 &
    python benchmarks/compare.py --quick --sft runs/sft --world runs/world      # one seed, small budget
    python benchmarks/compare.py --replot --out results      # redraw compare_curves.png from compare.json only
    # the learning-rate sweep (seed 0): rows "ARM@lrLR", each with its final policy's EM on the whole dev split;
    # the report names each arm's pick, which the seeds then use (--lr ARM=LR); the sweep's seed-0 run is reused
    python benchmarks/compare.py --arms searchr1 stepsearch slate --seeds 0 --sweep 1e-5 2e-5 5e-5 1e-4
    python benchmarks/compare.py --arms searchr1 slate slate_full --seeds 0 1 2 --lr-from-sweep   # picks of the rows
    python benchmarks/compare.py --arms searchr1 slate --seeds 0 1 2 --lr searchr1=2e-5 --lr slate=1e-5

The CI is a t-interval over seeds (none with one seed). On 150 questions, differences under ~0.07 EM are noise;
evaluate on >= 600 test questions.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from slate.config import RunConfig, load_config, save_config
from slate.data.records import QARecord, read_qa_jsonl
from slate.eval.curves import stratified
from slate.eval.evaluate import evaluate
from slate.eval.plots import plot_curves
from slate.eval.tables import (
    diagnostics_table,
    first_evaluation_table,
    hop_keys,
    seed_table,
    training_diagnostics,
)
from slate.retrieval.bm25 import Bm25Retriever
from slate.rollout.engine import RolloutEngine
from slate.rollout.policy import load_hf_policy
from slate.runtime import describe_cpu
from slate.trainer.checkpoint import latest_checkpoint, prepare_run_dir, resume_conflicts
from slate.trainer.loop import Trainer
from slate.trainer.sft import train_sft

logger = logging.getLogger("compare")

ARMS: dict[str, tuple[str, list[str]]] = {
    "searchr1": ("configs/searchr1-tiny.yaml", []),
    "stepsearch": ("configs/stepsearch-tiny.yaml", []),
    "slate": ("configs/slate-tiny.yaml", []),
    "slate_full": ("configs/slate-tiny.yaml", ["trainer.method=slate_full"]),
    "slate_em": ("configs/slate-tiny.yaml", ["trainer.method=slate_em"]),
    "slate_noise0.1": ("configs/slate-tiny.yaml", ["judge.noise=0.1"]),
    "slate_noise0.2": ("configs/slate-tiny.yaml", ["judge.noise=0.2"]),
    "slate_noise0.3": ("configs/slate-tiny.yaml", ["judge.noise=0.3"]),
    # the paper's advantage with its std floored at half a judge point (see algorithm.adv_std_floor)
    "slate_std_floor": ("configs/slate-tiny.yaml", ["algorithm.adv_std_floor=0.5"]),
    # judge-free process rewards (rewards/infogain.py): IGPO's k full trajectories, and SLATE's truncated siblings
    "igpo": ("configs/igpo-tiny.yaml", []),
    "slate_ig": ("configs/slate_ig-tiny.yaml", []),
}
# the SLATE variants run at the rate the sweep picked for slate; every other arm is swept as itself
SWEPT_AS = {arm: "slate" for arm in ARMS if arm.startswith("slate_") and arm != "slate_ig"}
# rows of the curve plot: the three methods, and SLATE beside its variants (eight arms on one axis are unreadable)
CURVE_GROUPS = {"methods": ["searchr1", "stepsearch", "slate", "igpo", "slate_ig"],
                "SLATE variants": [arm for arm in ARMS if arm.startswith("slate") and arm != "slate_ig"]}


def read_rows(raw_path: Path) -> list[dict]:
    return json.loads(raw_path.read_text()) if raw_path.is_file() else []


def update_rows(raw_path: Path, change: Callable[[list[dict]], list[dict]]) -> list[dict]:
    """Read compare.json, apply ``change`` and write it back (to a temporary file, then renamed), all under a lock:
    two processes (``--arms``/``--seeds`` split between them, one core each) can fill one comparison."""
    with (raw_path.parent / (raw_path.name + ".lock")).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = change(read_rows(raw_path))
        partial = raw_path.with_suffix(".json.partial")
        partial.write_text(json.dumps(rows, indent=1))
        partial.replace(raw_path)
        return rows


def claim(runs: Path, label: str, seed: int) -> bool:
    """Take the run ``label`` × ``seed`` for this process (a file created exclusively, holding the PID); False when a
    live process holds it. Two commands started alike on one ``--out`` thus share out the runs between the cores; a
    claim left by a process that died is taken over."""
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"{label}_seed{seed}.claim"
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _alive(path):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


def release(runs: Path, label: str, seed: int) -> None:
    (runs / f"{label}_seed{seed}.claim").unlink(missing_ok=True)


def _alive(claim_file: Path) -> bool:
    try:
        pid = int(claim_file.read_text() or 0)
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return pid > 0


def evaluate_policy(policy_dir: Path, config, retriever, records: list[QARecord]) -> dict:
    engine = RolloutEngine(load_hf_policy(policy_dir), retriever, config.rollout, config.retrieval.top_k)
    result, _ = evaluate(engine, records)
    return result


def curve_point(tokens: float, em: float, em_by_hops: dict[str, float]) -> dict:
    """One point of a dev-EM curve; ``em_by_hops`` maps "1".."4" to EM (absent in results from older runs)."""
    return {"tokens": float(tokens), "em": em, "em_by_hops": em_by_hops}


def start_point(result: dict) -> dict:
    """The 0-token point of every arm's curve: the start checkpoint's dev EM, overall and per hop."""
    return curve_point(0, result["em"], {str(h): v["em"] for h, v in result.get("by_hops", {}).items()})


def metrics_point(metrics: dict) -> dict:
    hops = {key.removeprefix("eval/em_").removesuffix("hop"): value for key, value in metrics.items()
            if key.startswith("eval/em_") and key.endswith("hop")}
    return curve_point(metrics["rollout/policy_tokens_total"], metrics["eval/em"], hops)


def parse_learning_rates(pairs: list[str]) -> dict[str, float]:
    """``["slate=5e-5", …]`` → {"slate": 5e-05, …}; an unknown arm or a value that is not a positive number is an
    error naming it."""
    rates: dict[str, float] = {}
    for pair in pairs:
        arm, _, value = pair.partition("=")
        if arm not in ARMS:
            raise SystemExit(f"--lr {pair}: unknown arm {arm!r}; arms: {', '.join(ARMS)}")
        try:
            rates[arm] = float(value)
        except ValueError:
            raise SystemExit(f"--lr {pair}: {value!r} is not a number") from None
        if not rates[arm] > 0:
            raise SystemExit(f"--lr {pair}: the learning rate must be positive")
    return rates


def sweep_label(arm: str, lr: float) -> str:
    """The row name of one point of the learning-rate sweep: ``slate@lr5e-05``."""
    return f"{arm}@lr{lr:g}"


def arm_config(name: str, seed: int, args: argparse.Namespace, world: Path, lr: float | None = None):
    """The config one arm × seed trains with: its preset, the comparison's budget and evaluation, the command's
    overrides, and the learning rate (``lr``, else ``--lr ARM=…``, else the preset's)."""
    preset, extra = ARMS[name]
    lr = lr if lr is not None else args.lr_of.get(name)
    overrides = [f"world.dir={world}", f"trainer.seed={seed}", "trainer.steps=100000",
                 f"trainer.token_budget={args.token_budget}", f"trainer.eval_every={args.eval_every}",
                 f"trainer.eval_questions={args.dev_questions}", f"trainer.checkpoint_every={args.checkpoint_every}",
                 f"trainer.eval_at_tokens={eval_marks(args)}",
                 *extra, *args.override, *([f"trainer.lr={lr}"] if lr is not None else [])]
    return load_config([preset, *args.setting], overrides)


def select_questions(records: list[QARecord], count: int, args: argparse.Namespace) -> list[QARecord]:
    """The evaluation questions: ``count`` balanced over hop counts (``--question-order stratified``), or the first
    ``count`` in file order (``file``: the selection of comparisons run before 2026-12-07, which a new arm joins)."""
    if getattr(args, "question_order", "stratified") == "file":
        return records[:count]
    return stratified(records, count)


def eval_marks(args: argparse.Namespace) -> list[int]:
    """Policy-token marks of the dense curve: every ``--eval-every-tokens`` up to ``--dense-until``, then every
    ``--eval-every-tokens-after`` up to the budget; [] without ``--eval-every-tokens``."""
    if not args.eval_every_tokens:
        return []
    marks = list(range(args.eval_every_tokens, min(args.dense_until, args.token_budget) + 1, args.eval_every_tokens))
    after = args.eval_every_tokens_after or args.eval_every_tokens
    last = marks[-1] if marks else 0
    marks += list(range(last + after, args.token_budget + 1, after))
    return marks


def pick_learning_rates(rows: list[dict]) -> dict[str, float]:
    """Each swept arm's learning rate: the one whose final policy has the best mean EM on the whole dev split over
    the sweep's seeds; a tie goes to the lower rate (the smaller change from the start)."""
    scores: dict[str, dict[float, list[float]]] = {}
    for row in rows:
        if "sweep_lr" in row:
            scores.setdefault(row["sweep_arm"], {}).setdefault(row["sweep_lr"], []).append(row["dev_final"]["em"])
    return {arm: min(by_lr, key=lambda lr: (-round(statistics.fmean(by_lr[lr]), 9), lr))
            for arm, by_lr in scores.items()}


def swept_rates(picks: dict[str, float], arms: list[str]) -> dict[str, float]:
    """The learning rate of each arm from the sweep's picks: its own, else its method's (``slate_em`` and the other
    SLATE variants take ``slate``'s); arms the sweep says nothing about are left out (they keep their preset's)."""
    return {arm: picks[arm] if arm in picks else picks[SWEPT_AS[arm]] for arm in arms
            if arm in picks or SWEPT_AS.get(arm) in picks}


def sweep_table(rows: list[dict]) -> str:
    """One line per swept arm × learning rate: final dev EM per hop and overall (mean over seeds), the pick marked."""
    picks = pick_learning_rates(rows)
    hop_columns = hop_keys([r["dev_final"].get("by_hops", {}) for r in rows if "sweep_lr" in r])
    lines = ["| arm | lr | seeds | " + " | ".join(f"{h}-hop" for h in hop_columns) + " | dev EM | picked |",
             "|---|---|---|" + "---|" * len(hop_columns) + "---|---|"]
    swept = sorted({(r["sweep_arm"], r["sweep_lr"]) for r in rows if "sweep_lr" in r},
                   key=lambda pair: (list(ARMS).index(pair[0]), pair[1]))
    for arm, lr in swept:
        mine = [r["dev_final"] for r in rows if (r.get("sweep_arm"), r.get("sweep_lr")) == (arm, lr)]
        hops = [f"{statistics.fmean(m['by_hops'][h]['em'] for m in mine):.3f}" for h in hop_columns]
        overall = statistics.fmean(m["em"] for m in mine)
        lines.append(f"| {arm} | {lr:g} | {len(mine)} | " + " | ".join(hops) + f" | {overall:.3f} | "
                     f"{'**yes**' if picks.get(arm) == lr else ''} |")
    return "\n".join(lines) + "\n"


def same_config(row: dict, config: RunConfig) -> bool:
    """Whether ``row`` was trained with ``config``. A row written before a config field existed stores no value for
    it; the field's default (which keeps the behaviour from before it existed) stands in for it."""
    try:
        stored = RunConfig.model_validate(row.get("config") or {})
    except ValidationError:
        return False  # a field since removed or renamed: not a config this version can run
    return stored.model_dump(mode="json") == config.model_dump(mode="json")


def adopt_sweep_row(rows: list[dict], arm: str, seed: int, config) -> dict | None:
    """The sweep's run of ``arm`` × ``seed`` trained with exactly ``config``, renamed to ``arm``: the comparison's
    run of that seed at the picked rate, which need not be trained twice. None when there is none."""
    for row in rows:
        if (row.get("sweep_arm"), row["seed"]) == (arm, seed) and same_config(row, config) and "test" in row:
            adopted = {key: value for key, value in row.items() if key not in ("sweep_arm", "sweep_lr")}
            return {**adopted, "arm": arm, "adopted_from": row["arm"]}
    return None


def reuse_as_sweep_point(rows: list[dict], arm: str, seed: int, lr: float, config) -> dict | None:
    """The converse of ``adopt_sweep_row``: a comparison run of ``arm`` × ``seed`` trained with exactly ``config``
    (the sweep point's, at ``lr``) is that point of the sweep, which need not be trained twice. None when there is
    none."""
    for row in rows:
        if (row["arm"], row["seed"]) == (arm, seed) and same_config(row, config) and "dev_final" in row:
            return {**row, "arm": sweep_label(arm, lr), "sweep_arm": arm, "sweep_lr": lr, "adopted_from": arm}
    return None


def supersede_other_rates(rows: list[dict], arm: str, lr: float) -> list[dict]:
    """Rows of ``arm`` trained at another learning rate than ``lr`` (an earlier run's, before the sweep picked
    ``lr``) are kept in compare.json under another name, marked ``superseded``, and leave the report: an arm's
    seeds must share one rate, and its seeds at ``lr`` must be trained, not skipped as done."""
    def other_rate(row: dict) -> bool:
        return row["arm"] == arm and "config" in row and row["config"]["trainer"]["lr"] != lr

    return [{**row, "arm": f"{arm} (lr {row['config']['trainer']['lr']:g}, superseded)",
             "superseded": f"trained at lr {row['config']['trainer']['lr']:g}; the comparison now runs {arm} at "
                           f"{lr:g}"} if other_rate(row) else row for row in rows]


def run_arm(name: str, seed: int, args: argparse.Namespace, retriever, world: Path, sft_dir: Path,
            out: Path, start: dict, lr: float | None = None, label: str | None = None) -> dict:
    config = arm_config(name, seed, args, world, lr)
    label = label or name
    run_dir = out / f"{label}_seed{seed}"
    latest = latest_checkpoint(run_dir)
    conflicts = resume_conflicts(latest, config) if latest is not None else []
    if conflicts:
        # a stopped run of this arm and seed under another config (a rate the sweep has since replaced): not this
        # run's to continue, and its files are kept
        aside = prepare_run_dir(run_dir, resume=False, overwrite=True)
        logger.info("%s was trained under another config (%s); moved aside to %s", run_dir, "; ".join(conflicts),
                    aside)
    began = time.perf_counter()
    trainer = Trainer(config, read_qa_jsonl(world / "train.jsonl"), retriever, sft_dir, run_dir, world,
                      select_questions(read_qa_jsonl(world / "dev.jsonl"), args.dev_questions, args))
    trainer.train(resume=True)
    wall = time.perf_counter() - began
    curve = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"arm": label, "seed": seed, "wall_s": wall, "policy_tokens": trainer.generated_tokens,
            "policy_parameters": sum(p.numel() for p in trainer.policy.model.parameters()),
            "steps": trainer.state.step, "config": config.model_dump(mode="json"),
            "curve": [start, *(metrics_point(m) for m in curve if "eval/em" in m)],
            "searches_curve": [{"tokens": m["rollout/policy_tokens_total"], "searches": m["rollout/searches"]}
                               for m in curve if "rollout/searches" in m and "rollout/policy_tokens_total" in m],
            "diagnostics": training_diagnostics([m for m in curve if "rollout/policy_tokens_total" in m], wall),
            "policy": str(run_dir / "policy")}


def continued_sft_config(sft_dir: Path, world: Path, seed: int, wall_s: float):
    """More SFT from the start for ``wall_s`` seconds, on new draws (seed + 100) at a lower rate, with the start's own
    recipe (its demonstrator's mistakes and habits, from its slate_config.yaml), so the control imitates what the
    start imitated."""
    recipe = sft_dir / "slate_config.yaml"
    return load_config(recipe if recipe.exists() else "configs/tiny.yaml",
                       [f"world.dir={world}", f"sft.seed={seed + 100}", f"sft.time_limit_s={max(1.0, wall_s)}",
                        "sft.lr=0.0003", "sft.warmup_steps=0", "sft.epochs=100"])


def run_continued_sft(seed: int, wall_s: float, args: argparse.Namespace, retriever, world: Path, sft_dir: Path,
                      out: Path) -> dict:
    config = continued_sft_config(sft_dir, world, seed, wall_s)
    run_dir = out / f"continued_sft_seed{seed}"
    start = time.perf_counter()
    train_sft(config, read_qa_jsonl(world / "train.jsonl"), retriever, world, run_dir, init=sft_dir)
    save_config(config, run_dir / "slate_config.yaml")
    return {"arm": "continued_sft", "seed": seed, "wall_s": time.perf_counter() - start, "policy_tokens": 0,
            "curve": [], "policy": str(run_dir)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sft", type=Path, default=Path("runs/sft"))
    parser.add_argument("--world", type=Path, default=Path("runs/world"))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=[*ARMS, "continued_sft"], choices=[*ARMS, "continued_sft"])
    parser.add_argument("--token-budget", type=int, default=600_000)
    parser.add_argument("--test-questions", type=int, default=800)
    parser.add_argument("--dev-questions", type=int, default=100,
                        help="dev questions of the curves, balanced over hop counts (the first N/H of each)")
    parser.add_argument("--final-dev-questions", type=int, default=400,
                        help="dev questions each RL arm's final policy is evaluated on (the sweep picks by them)")
    parser.add_argument("--eval-every", type=int, default=10, help="evaluate every N RL steps (0: off)")
    parser.add_argument("--eval-every-tokens", type=int, default=0,
                        help="dense curves: evaluate whenever the policy-token total passes a multiple of N")
    parser.add_argument("--dense-until", type=int, default=200_000, help="... up to this many tokens")
    parser.add_argument("--eval-every-tokens-after", type=int, default=0, help="... then every M tokens")
    parser.add_argument("--question-order", choices=("stratified", "file"), default="stratified",
                        help="evaluation questions balanced over hop counts, or the first N in file order (the "
                             "selection of results/compare.json's rows, run before 2026-12-07)")
    parser.add_argument("--setting", type=Path, nargs="*", default=[],
                        help="presets layered over every arm's and the evaluation's (configs/hardness/hard.yaml)")
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--sizes", type=Path, default=None, help="a second SFT checkpoint (another policy size)")
    parser.add_argument("--quick", action="store_true", help="one seed, 60k tokens, searchr1/slate/continued_sft")
    parser.add_argument("--replot", action="store_true", help="only redraw compare_curves.png from compare.json")
    parser.add_argument("--lr", action="append", default=[], metavar="ARM=LR",
                        help="the learning rate of one arm, as picked by the sweep (docs/experiments.md); repeat "
                             "per arm. Arms without one keep their preset's trainer.lr.")
    parser.add_argument("--sweep", type=float, nargs="+", default=None, metavar="LR",
                        help="train each RL arm of --arms at each of these learning rates (rows ARM@lrLR) and "
                             "report the rate each arm's final dev EM picks")
    parser.add_argument("--lr-from-sweep", action="store_true",
                        help="each arm without --lr takes the rate the sweep in this --out picked (its method's for "
                             "the SLATE variants)")
    parser.add_argument("--sweep-from", type=Path, default=None,
                        help="with --lr-from-sweep: the comparison whose sweep picks the rates (default: --out)")
    parser.add_argument("override", nargs="*", help="dotted overrides for every RL arm")
    args = parser.parse_args()
    args.lr_of = parse_learning_rates(args.lr)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.replot:
        replot(args.out)
        return
    if args.quick:
        args.seeds, args.token_budget, args.test_questions = args.seeds[:1], 60_000, 400
        args.arms = ["searchr1", "slate", "continued_sft"]
        args.eval_every, args.dev_questions = 5, 60
    args.out.mkdir(parents=True, exist_ok=True)
    runs = args.out / "runs"
    retriever = Bm25Retriever.from_corpus_cached(args.world / "corpus.jsonl", args.world / "bm25_index")
    test = select_questions(read_qa_jsonl(args.world / "test.jsonl"), args.test_questions, args)
    # evaluation decodes greedily with the RL arms' rollout settings (step cap, budget, information budget)
    eval_config = load_config(["configs/searchr1-tiny.yaml", *args.setting],
                              [f"world.dir={args.world}", *[o for o in args.override if o.startswith("rollout.")]])
    raw_path = args.out / "compare.json"
    if args.lr_from_sweep:
        sweep_path = (args.sweep_from or args.out) / "compare.json"
        picks = pick_learning_rates(read_rows(sweep_path))
        if not picks:
            raise SystemExit(f"--lr-from-sweep: {sweep_path} holds no sweep; run --sweep first")
        args.lr_of = {**swept_rates(picks, [a for a in ARMS if a in args.arms]), **args.lr_of}
        logger.info("learning rates from the sweep: %s", args.lr_of)
    # the trainer evaluates each arm on these dev questions; the start's EM on them is every curve's 0-token point
    dev = select_questions(read_qa_jsonl(args.world / "dev.jsonl"), args.dev_questions, args)
    dev_final = select_questions(read_qa_jsonl(args.world / "dev.jsonl"), args.final_dev_questions, args)
    # the start's evaluations are greedy, so a later command on the same comparison reuses them
    previous = next((r for r in read_rows(raw_path) if r["arm"] == "start"), None)
    if previous and (previous["policy"], previous.get("questions")) == (str(args.sft), [len(test), len(dev)]):
        start_sft, start_dev = previous["test"], previous["dev"]
    else:
        start_sft = evaluate_policy(args.sft, eval_config, retriever, test)
        start_dev = start_point(evaluate_policy(args.sft, eval_config, retriever, dev))
    start_sizes = evaluate_policy(args.sizes, eval_config, retriever, test) if args.sizes else None
    start_dev_sizes = start_point(evaluate_policy(args.sizes, eval_config, retriever, dev)) if args.sizes else None
    # the start is a row of its own (arm "start", 0 tokens), with how it was chosen when `slate sft --seeds` chose it
    selection = args.sft / "warm_start.json"
    start_row = {"arm": "start", "seed": 0, "wall_s": 0.0, "policy_tokens": 0, "curve": [], "policy": str(args.sft),
                 "test": start_sft, "dev": start_dev, "questions": [len(test), len(dev)],
                 "warm_start": json.loads(selection.read_text()) if selection.is_file() else None}
    update_rows(raw_path, lambda rows: [start_row, *[r for r in rows if r["arm"] != "start"]])

    def done(arm: str, seed: int) -> bool:  # re-read: another process may share this comparison
        return any((r["arm"], r["seed"]) == (arm, seed) for r in read_rows(raw_path))

    def record(row: dict) -> None:
        update_rows(raw_path, lambda rows: [*rows, row])

    def finish(row: dict) -> dict:  # the final policy on test, and on the whole dev split (what a sweep picks by)
        row["test"] = evaluate_policy(Path(row["policy"]), eval_config, retriever, test)
        if row["arm"] != "continued_sft":
            row["dev_final"] = evaluate_policy(Path(row["policy"]), eval_config, retriever, dev_final)
        # machines of this project differ (docs/performance.md): every row says where it ran and when
        row["machine"] = {**describe_cpu(), "processor": platform.processor() or platform.machine()}
        row["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        return row

    rl_arms = [a for a in args.arms if a != "continued_sft"]
    for seed in args.seeds:
        for lr in args.sweep or ():
            for arm in rl_arms:
                label = sweep_label(arm, lr)
                if done(label, seed) or not claim(runs, label, seed):
                    continue
                try:
                    if done(label, seed):  # another process may have finished it just before the claim
                        continue
                    reused = reuse_as_sweep_point(read_rows(raw_path), arm, seed, lr,
                                                  arm_config(arm, seed, args, args.world, lr))
                    if reused:
                        logger.info("sweep: arm %s lr %g seed %d is the comparison's run %s", arm, lr, seed, arm)
                        record(reused)
                    else:
                        logger.info("sweep: arm %s lr %g seed %d", arm, lr, seed)
                        row = run_arm(arm, seed, args, retriever, args.world, args.sft, runs, start_dev, lr=lr,
                                      label=label)
                        record({**finish(row), "sweep_arm": arm, "sweep_lr": lr})
                finally:
                    release(runs, label, seed)
        for arm in rl_arms if not args.sweep else ():
            lr = arm_config(arm, seed, args, args.world).trainer.lr
            update_rows(raw_path, lambda rows, arm=arm, lr=lr: supersede_other_rates(rows, arm, lr))
            if done(arm, seed) or not claim(runs, arm, seed):
                continue
            try:
                if done(arm, seed):
                    continue
                adopted = adopt_sweep_row(read_rows(raw_path), arm, seed, arm_config(arm, seed, args, args.world))
                if adopted:
                    logger.info("arm %s seed %d: the sweep's run %s", arm, seed, adopted["adopted_from"])
                    record(adopted)
                    continue
                logger.info("arm %s seed %d", arm, seed)
                record(finish(run_arm(arm, seed, args, retriever, args.world, args.sft, runs, start_dev)))
            finally:
                release(runs, arm, seed)
        for arm in ("searchr1", "slate") if args.sizes else ():
            label = f"{arm}@{args.sizes.name}"
            if done(label, seed):
                continue
            record(finish(run_arm(arm, seed, args, retriever, args.world, args.sizes, runs / args.sizes.name,
                                  start_dev_sizes, label=label)))
        if "continued_sft" in args.arms and not args.sweep and not done("continued_sft", seed) \
                and claim(runs, "continued_sft", seed):
            try:
                # its budget is the mean wall clock of this seed's RL arms: wait for those another process runs
                while any(not done(arm, seed) and (runs / f"{arm}_seed{seed}.claim").exists() for arm in rl_arms):
                    time.sleep(30)
                rl_walls = [r["wall_s"] for r in read_rows(raw_path) if r["seed"] == seed and r["arm"] in ARMS]
                if not rl_walls:  # without them it would control for nothing
                    raise SystemExit(f"continued_sft seed {seed}: no RL arm of seed {seed} has finished in "
                                     f"{raw_path}; run the RL arms of this seed first (or in the same command).")
                if not done("continued_sft", seed):
                    record(finish(run_continued_sft(seed, statistics.fmean(rl_walls), args, retriever, args.world,
                                                    args.sft, runs)))
            finally:
                release(runs, "continued_sft", seed)
    all_rows = read_rows(raw_path)
    order = ["start", *ARMS, "continued_sft"]  # the report lists arms in this order, whichever finished first
    rows = sorted((r for r in all_rows if "sweep_lr" not in r and "superseded" not in r),
                  key=lambda r: order.index(r["arm"]) if r["arm"] in order else len(order))
    rows_with_start = list(rows)
    if start_sizes is not None:
        rows_with_start.insert(1, {"arm": f"start@{args.sizes.name}", "seed": 0, "wall_s": 0.0,
                                   "policy_tokens": 0, "curve": [], "test": start_sizes})
    seeds = sorted({r["seed"] for r in rows if r["arm"] != "start"})  # two commands may have split them
    header = (f"# Method comparison\n\nTest EM (greedy) on {len(test)} test questions, from `{args.sft}`, token "
              f"budget {args.token_budget:,} policy tokens per run, seeds {seeds}; mean ± 95% t-interval over "
              "seeds.")
    diagnostics = ("\n## Training\n\nMean over seeds. Optimizer steps per RL step differ by method (SLATE's "
                   "samples are one step each); the bonus columns are SLATE's early-answer tie (docs/experiments.md)."
                   "\n\n" + diagnostics_table([r for r in rows if "diagnostics" in r]))
    early = ("\n## The first evaluation\n\nDev EM (greedy, the curves' dev questions) at each run's first evaluation "
             "after the start, mean ± 95% t-interval over seeds: how fast each arm learns, where the final EM of "
             "most arms is near one ceiling.\n\n" + first_evaluation_table(rows))
    sweep = ""
    if len(rows) < len(all_rows):
        picks = pick_learning_rates(all_rows)
        sweep = ("\n## Learning-rate sweep\n\nEach arm at each rate, seed 0 (rows `ARM@lrLR` of compare.json), the "
                 f"final policy's greedy EM on the first {args.final_dev_questions} dev questions; the best is the "
                 "arm's rate (a tie goes to the lower): "
                 + ", ".join(f"`--lr {arm}={lr:g}`" for arm, lr in picks.items()) + ".\n\n" + sweep_table(all_rows))
    (args.out / "compare.md").write_text(header + "\n\n" + seed_table(rows_with_start) + diagnostics + early + sweep)
    plot_curves(rows, args.out / "compare_curves.png", CURVE_GROUPS)  # the sweep's runs are in its table
    print((args.out / "compare.md").read_text())


def replot(out: Path) -> None:
    raw_path = out / "compare.json"
    try:
        rows = json.loads(raw_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"{raw_path}: cannot read the comparison's results: {error}") from None
    try:
        plot_curves([r for r in rows if "sweep_lr" not in r and "superseded" not in r], out / "compare_curves.png",
                    CURVE_GROUPS)
    except (KeyError, TypeError, AttributeError) as error:  # a row or curve point without its fields
        raise SystemExit(f"{raw_path}: a row is not a comparison result ({type(error).__name__}: {error})") from None
    print(out / "compare_curves.png")


if __name__ == "__main__":
    main()
