"""Time RL steps of each method from one warm start: policy tokens/s and where the time goes.

    python benchmarks/rl_step.py --init runs/sft --world runs/world --steps 3
    python benchmarks/rl_step.py --init runs/sft --world runs/world --steps 3 --baseline-src OLD_CHECKOUT/src
    # one setting against the same tree's shipped presets
    python benchmarks/rl_step.py --init runs/sft --world runs/world --baseline-src src --new-overrides KEY=VALUE

Each method runs in its own process (a fresh interpreter: no warm caches shared between methods) with its shipped
preset (`configs/<method>-tiny.yaml` of the tree being measured) plus any dotted overrides, from the same initial
policy and seed. One warm-up step is run and not counted (first-call allocations, lazy imports), then ``--steps``
steps are timed with the breakdown the trainer reports (`time/*` metrics: generate, retrieve, judge, reference
forward, policy forward + backward, optimizer). With ``--baseline-src`` the same measurement runs against another
source tree (an older revision's ``src/``) in alternation with this one, and the ratios new / baseline are printed.
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"searchr1": "searchr1-tiny.yaml", "stepsearch": "stepsearch-tiny.yaml", "slate": "slate-tiny.yaml",
           "igpo": "igpo-tiny.yaml", "slate_ig": "slate_ig-tiny.yaml"}


def measure(method: str, init: Path, world: Path, steps: int, overrides: list[str], out_dir: Path,
            configs: Path, warmup: int = 1) -> dict:
    """Runs in the child process: build the trainer, one warm-up step, then ``steps`` timed steps."""
    import torch

    from slate.config import load_config
    from slate.data.records import read_qa_jsonl
    from slate.retrieval.factory import build_retriever
    from slate.trainer.loop import Trainer

    config = load_config(configs / PRESETS[method], [*overrides, f"world.dir={world}"])
    retriever = build_retriever(config.retrieval, world)
    records = read_qa_jsonl(world / "train.jsonl")
    trainer = Trainer(config, records, retriever, init, out_dir, world, [])
    for _ in range(warmup):  # not counted
        trainer.step()
    totals: dict[str, float] = {}
    wall = cpu = tokens = 0.0
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        metrics = trainer.step()
        wall += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        tokens += metrics["rollout/step_generated_tokens"]
        for key, value in metrics.items():
            if key.startswith("time/") or key == "reward/infogain_forward_tokens":
                totals[key] = totals.get(key, 0.0) + value
    # CPU seconds (all threads) are reported beside wall time: on a shared machine the wall clock measures the other
    # jobs as much as this one, the CPU time much less so.
    return {"method": method, "steps": steps, "wall_s": wall, "cpu_s": cpu, "policy_tokens": tokens,
            "policy_tokens_per_s": tokens / wall, "policy_tokens_per_cpu_s": tokens / cpu,
            "seconds_per_step": wall / steps,
            "phases_s_per_step": {k: v / steps for k, v in sorted(totals.items())},
            "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def run_child(src: Path, method: str, args: argparse.Namespace, tag: str,
              extra_overrides: list[str] | None = None) -> dict:
    # the tree measured comes first; the rest of the path stays (dependencies installed with --target, say)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    out_dir = Path(args.scratch) / f"{tag}_{method}"
    # each tree runs with its own presets: the shipped settings of that revision
    command = [sys.executable, __file__, "--child", method, "--init", str(args.init), "--world", str(args.world),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--scratch", str(out_dir),
               "--configs", str(src.parent / "configs"), *args.overrides, *(extra_overrides or [])]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"{tag} {method}: the measurement failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--init", type=Path, required=True, help="The warm start (an SFT output directory).")
    parser.add_argument("--world", type=Path, required=True, help="The built world the warm start was trained on.")
    parser.add_argument("--methods", nargs="+", default=["searchr1", "stepsearch", "slate"], choices=list(PRESETS))
    parser.add_argument("--steps", type=int, default=3, help="Timed RL steps per method (after one warm-up).")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed steps first.")
    parser.add_argument("--baseline-src", type=Path, help="Another revision's src/ to measure side by side.")
    parser.add_argument("--scratch", default="/tmp/slate_rl_step", help="Where the runs write (deleted freely).")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--configs", type=Path, default=ROOT / "configs", help=argparse.SUPPRESS)
    parser.add_argument("--new-overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="Dotted overrides for this tree's runs only: with --baseline-src src, one setting "
                             "measured against the shipped presets of the same tree.")
    parser.add_argument("overrides", nargs="*", help="Dotted config overrides for every run.")
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(args.child, args.init, args.world, args.steps, args.overrides,
                                 Path(args.scratch), args.configs, args.warmup)))
        return

    import torch

    this_src = ROOT / "src"
    rows = []
    for method in args.methods:
        row = {"method": method}
        if args.baseline_src:  # baseline first, then this tree, back to back on the same machine state
            row["baseline"] = run_child(args.baseline_src, method, args, "baseline")
        row["new"] = run_child(this_src, method, args, "new", args.new_overrides)
        rows.append(row)
        new = row["new"]
        line = (f"{method:>10}: {new['policy_tokens_per_s']:7.1f} policy tokens/s, {new['seconds_per_step']:6.2f} s "
                f"per step ({new['policy_tokens'] / args.steps:.0f} tokens)")
        if "baseline" in row:
            base = row["baseline"]
            row["ratio"] = new["policy_tokens_per_s"] / base["policy_tokens_per_s"]
            row["cpu_ratio"] = new["policy_tokens_per_cpu_s"] / base["policy_tokens_per_cpu_s"]
            line += (f" | baseline {base['policy_tokens_per_s']:7.1f} tokens/s, {base['seconds_per_step']:6.2f} s "
                     f"per step | ratio {row['ratio']:.2f}x (per CPU second {row['cpu_ratio']:.2f}x)")
        print(line)
        for key, value in new["phases_s_per_step"].items():
            if not key.startswith("time/"):  # a count per step, not seconds
                print(f"{'':>14}{key:<26} {value:8.0f}")
                continue
            base_value = row.get("baseline", {}).get("phases_s_per_step", {}).get(key)
            extra = f"   (baseline {base_value:.2f} s)" if base_value is not None else ""
            print(f"{'':>14}{key:<26} {value:6.2f} s{extra}")
    summary = {"benchmark": "rl_step", "steps": args.steps, "warmup": args.warmup, "overrides": args.overrides,
               "new_overrides": args.new_overrides, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "cores": os.cpu_count(), "rows": rows}
    if all("ratio" in r for r in rows):
        summary["ratios"] = {r["method"]: round(r["ratio"], 3) for r in rows}
        summary["cpu_ratios"] = {r["method"]: round(r["cpu_ratio"], 3) for r in rows}
        summary["min_ratio"] = round(min(r["ratio"] for r in rows), 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
