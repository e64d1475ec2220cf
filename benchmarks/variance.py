"""Measure the variance ratio full-trajectory / truncated sampling for T = 1..8 beside its theory (issue 7).

For each T, simulates G groups of k full trajectories and G groups of k-sibling truncated steps, for independent
steps and for AR(1) steps, and prints the step-averaged variance ratio of the step advantage (mean baseline) with a
95 % bootstrap CI beside the closed form from slate.eval.variance. The full run adds the scale-free signal-share ratio
(mean baseline and full normalisation) and the per-step return-to-go ratios at the largest T.
The last line is JSON for the summed-reward estimator with independent steps:
{"T": [...], "ratio": [...], "theory": [...]}.

    python benchmarks/variance.py --quick --seed 0     # under a minute on 2 cores
    python benchmarks/variance.py --seed 0             # a few minutes
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from slate.eval.variance import (
    ESTIMATORS,
    RatioEstimate,
    bootstrap_ratio,
    full_trajectory_advantages,
    sibling_advantages,
    signal_share_ratio,
    simulate_full_trajectories,
    simulate_truncated_groups,
    squared_advantage_per_group,
    theory_step_variances,
    theory_variance_ratio,
    variance_ratio,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer groups and resamples; variance ratios only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the single numpy Generator behind every draw")
    parser.add_argument("--group-size", type=int, default=5, help="k: candidates per group (SLATE default 5)")
    parser.add_argument("--max-steps", type=int, default=8, help="largest T; rows are T = 1..max")
    parser.add_argument("--num-groups", type=int, default=None, help="G per sampler and T (quick 100000, full 400000)")
    parser.add_argument("--autocorrelation", type=float, default=0.5, help="rho of the correlated (AR(1)) variant")
    parser.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (quick 500, full 1000)")
    return parser.parse_args()


def cell(ratio: RatioEstimate) -> str:
    return f"{ratio.value:7.3f} [{ratio.low:7.3f}, {ratio.high:7.3f}]"


def per_step_ratios(full_adv: np.ndarray, trunc_adv: np.ndarray, rng: np.random.Generator,
                    num_resamples: int) -> list[RatioEstimate]:
    full_stats, trunc_stats = squared_advantage_per_group(full_adv), squared_advantage_per_group(trunc_adv)
    return [bootstrap_ratio(full_stats, trunc_stats, lambda means, step=step: means[..., step], rng,
                            num_resamples=num_resamples) for step in range(full_adv.shape[2])]


def run_process(autocorrelation: float, args: argparse.Namespace, rng: np.random.Generator) -> list[RatioEstimate]:
    """Prints the tables for one process; returns the summed-reward variance ratios for T = 1..max."""
    label = "independent steps" if autocorrelation == 0.0 else f"AR(1) steps, rho = {autocorrelation}"
    print(f"\n## {label}: variance ratio full / truncated, mean baseline, step-averaged, 95 % CI")
    print(f"{'T':>2} | {'summed: measured [CI]':>26} {'theory':>8} | {'return-to-go: measured [CI]':>26} {'theory':>8}")
    signal_rows, summed, last = [], [], None
    for num_steps in range(1, args.max_steps + 1):
        full = simulate_full_trajectories(args.num_groups, args.group_size, num_steps, autocorrelation, rng)
        truncated = simulate_truncated_groups(args.num_groups, args.group_size, num_steps, autocorrelation, rng)
        trunc_adv = sibling_advantages(truncated.rewards)
        cells = []
        for estimator in ESTIMATORS:
            ratio = variance_ratio(full_trajectory_advantages(full.rewards, estimator), trunc_adv, rng,
                                   num_resamples=args.resamples)
            cells.append(f"{cell(ratio)} {theory_variance_ratio(num_steps, estimator, autocorrelation):8.3f}")
            if estimator == "summed":
                summed.append(ratio)
        print(f"{num_steps:>2} | " + " | ".join(cells))
        if not args.quick:
            row = []
            for estimator in ESTIMATORS:
                for normalize in (False, True):
                    row.append(signal_share_ratio(
                        full, full_trajectory_advantages(full.rewards, estimator, normalize),
                        truncated, sibling_advantages(truncated.rewards, normalize), rng,
                        num_resamples=args.resamples))
            signal_rows.append(row)
            last = (full, trunc_adv)
    if not args.quick:
        print(f"\n## {label}: signal-share ratio 1/corr^2(A_t, u_t), full / truncated, step-averaged, 95 % CI")
        print(f"{'T':>2} | {'summed, mean baseline':>26} | {'summed, normalised':>26} | "
              f"{'rtg, mean baseline':>26} | {'rtg, normalised':>26}")
        for num_steps, row in enumerate(signal_rows, start=1):
            print(f"{num_steps:>2} | " + " | ".join(cell(ratio) for ratio in row))
        full, trunc_adv = last
        ratios = per_step_ratios(full_trajectory_advantages(full.rewards, "return_to_go"), trunc_adv, rng,
                                 args.resamples)
        theory = (theory_step_variances(args.max_steps, "return_to_go", autocorrelation)
                  / theory_step_variances(args.max_steps, "truncated", autocorrelation))
        print(f"\n## {label}: return-to-go variance ratio at each step t, T = {args.max_steps}, mean baseline")
        print(f"{'t':>2} | {'measured [CI]':>26} {'theory':>8}")
        for step, (ratio, expected) in enumerate(zip(ratios, theory, strict=True), start=1):
            print(f"{step:>2} | {cell(ratio)} {expected:8.3f}")
    return summed


def main() -> None:
    args = parse_args()
    args.num_groups = args.num_groups or (100000 if args.quick else 400000)
    args.resamples = args.resamples or (500 if args.quick else 1000)
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    print(f"# variance benchmark: seed {args.seed}, k = {args.group_size}, G = {args.num_groups} groups per sampler "
          f"and T, {args.resamples} bootstrap resamples{', quick' if args.quick else ''}")
    summed = run_process(0.0, args, rng)
    run_process(args.autocorrelation, args, rng)
    print(f"\n# done in {time.perf_counter() - start:.1f} s")
    steps = list(range(1, args.max_steps + 1))
    print(json.dumps({"T": steps, "ratio": [round(ratio.value, 4) for ratio in summed],
                      "theory": [theory_variance_ratio(num_steps, "summed") for num_steps in steps]}))


if __name__ == "__main__":
    main()
