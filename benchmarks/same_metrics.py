"""Do two revisions train the same? Record short runs of every method, then compare their metrics exactly.

    python benchmarks/same_metrics.py record --out /tmp/before --init results/start_policy --world runs/world
    # ... change the code ...
    python benchmarks/same_metrics.py record --out /tmp/after --init results/start_policy --world runs/world
    python benchmarks/same_metrics.py compare /tmp/before /tmp/after

`record` runs `slate train` for each method (a fresh process each, `OMP_NUM_THREADS=1` so float sums run in one
order) for a few steps from one start policy and seed, with a small batch and one evaluation at the last step.
`compare` reads each method's `metrics.jsonl` from both directories and asserts that every key the two runs share
has exactly the same value at every step, but times and throughputs (`time/*`, `*_per_s`, `*_s`), which depend on
the machine, and that the final policy weights are bit-identical. Keys only one side has are listed (new metrics are
expected after a change that adds some); exit 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"searchr1": "searchr1-tiny.yaml", "stepsearch": "stepsearch-tiny.yaml", "slate": "slate-tiny.yaml",
           "slate_full": "slate-tiny.yaml", "slate_em": "slate-tiny.yaml"}
SMALL = ["trainer.steps=3", "trainer.questions_per_step=4", "trainer.minibatch_size=8", "trainer.update_epochs=2",
         "trainer.micro_batch_tokens=2048", "trainer.eval_every=3", "trainer.eval_questions=8",
         "trainer.checkpoint_every=3", "trainer.warmup_steps=1"]


def is_timing(key: str) -> bool:
    """Keys that measure the machine rather than the run: wall times and rates."""
    return key.startswith("time/") or key.endswith("_s") or key.endswith("_per_s") or "per_s" in key


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compare_runs(before: list[dict], after: list[dict]) -> tuple[list[str], list[str], list[str], list[str]]:
    """(differences, compared keys, keys only before, keys only after) of two runs' metric rows."""
    differences: list[str] = []
    if [row.get("step") for row in before] != [row.get("step") for row in after]:
        differences.append(f"steps differ: {[r.get('step') for r in before]} vs {[r.get('step') for r in after]}")
    keys_before = {key for row in before for key in row}
    keys_after = {key for row in after for key in row}
    shared = sorted(key for key in keys_before & keys_after if not is_timing(key))
    for row_before, row_after in zip(before, after, strict=False):
        for key in shared:
            if row_before.get(key) != row_after.get(key):
                differences.append(f"step {row_before.get('step')}: {key} {row_before.get(key)!r} -> "
                                   f"{row_after.get(key)!r}")
    return differences, shared, sorted(keys_before - keys_after), sorted(keys_after - keys_before)


def record(out: Path, init: Path, world: Path, methods: list[str], extra: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    for method in methods:
        run_dir = out / method
        command = [sys.executable, "-m", "slate.cli.main", "train", "--config", str(ROOT / "configs" / METHODS[method]),
                   "--init", str(init), "--world", str(world), "--out", str(run_dir),
                   f"trainer.method={method}", *SMALL, *extra]
        print(" ".join(command), flush=True)
        subprocess.run(command, env=env, check=True)


def compare(before_dir: Path, after_dir: Path, methods: list[str]) -> int:
    failed = False
    for method in methods:
        before = read_metrics(before_dir / method / "metrics.jsonl")
        after = read_metrics(after_dir / method / "metrics.jsonl")
        differences, shared, only_before, only_after = compare_runs(before, after)
        status = "same" if not differences else f"{len(differences)} differences"
        print(f"{method}: {status} ({len(shared)} keys over {len(before)} steps compared)")
        for line in differences[:20]:
            print(f"  {line}")
        if only_before:
            print(f"  only before: {', '.join(only_before)}")
        if only_after:
            print(f"  only after (new): {', '.join(only_after)}")
        weights = [d / method / "policy" / "model.safetensors" for d in (before_dir, after_dir)]
        if all(w.is_file() for w in weights):
            same = weights[0].read_bytes() == weights[1].read_bytes()
            print(f"  final policy weights: {'bit-identical' if same else 'DIFFERENT'}")
            failed |= not same
        failed |= bool(differences)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run every method for a few steps")
    rec.add_argument("--out", type=Path, required=True)
    rec.add_argument("--init", type=Path, default=ROOT / "results" / "start_policy")
    rec.add_argument("--world", type=Path, default=ROOT / "runs" / "world")
    rec.add_argument("--methods", default=",".join(METHODS))
    rec.add_argument("overrides", nargs="*", help="extra dotted overrides for every run")
    cmp = sub.add_parser("compare", help="compare two recorded directories")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    cmp.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    methods = args.methods.split(",")
    if args.command == "record":
        record(args.out, args.init, args.world, methods, args.overrides)
        return 0
    return compare(args.before, args.after, methods)


if __name__ == "__main__":
    sys.exit(main())
