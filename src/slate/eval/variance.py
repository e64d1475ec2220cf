"""Variance of step-level advantage estimates: full-trajectory sampling vs SLATE's truncated sampling.

The paper (arXiv 2602.23440) proves that, under the same dense step rewards, sampling k one-step siblings from a
shared prefix cuts the variance of the step-t advantage estimate by up to a factor T compared with sampling k full
T-step trajectories. This module measures that claim on a controlled process and, later, on real rollouts.

Notation for the whole module: G groups, k = group_size candidates per group, T = num_steps steps, t = step index
(0-based in code, 1-based in the formulas below). Every reward array is (G, k, T):
  - full-trajectory sampling: rewards[g, i, t] is the step-t reward of trajectory i of question g;
  - truncated sampling: rewards[g, :, t] are the k siblings drawn at step t from question g's shared prefix.

What "variance of the advantage estimate" means here: with the mean baseline A_i = x_i - mean_j x_j the estimate has
mean zero (sum_i A_i = 0 in every group), so its variance is V_t = E[A_{i,t}^2], taken over repeated draws of the
whole group, for the advantage that estimator assigns to the step-t action. The summary is the step average
V = (1/T) sum_t V_t: the variance of the advantage given to a step picked uniformly from the trajectory.

Estimators (x_i is what gets baselined among the k members of the group):
  summed       x_i = sum_s r_{i,s}   the trajectory's summed dense reward, used as the advantage of every step
  return-to-go x_i = sum_{s>=t} r_{i,s}
  truncated    x_i = r_{i,t}         the sibling's own one-step reward; siblings share the prefix

Theory (mean baseline). Var(x_i - mean_j x_j) = (k-1)/k · Var(x | what the group shares), so the factor (k-1)/k
cancels in every ratio. Two processes, unit marginal step variance:
  independent steps:  r_t i.i.d., Var 1.  V_t(summed) = T, V_t(rtg) = T-t+1, V_t(truncated) = 1, so the ratio is
                      T (summed) and (T+1)/2 step-averaged, T-t+1 at step t (return-to-go).
  AR(1) steps:        r_1 = e_1, r_t = rho r_{t-1} + sqrt(1-rho^2) e_t, e i.i.d. N(0, 1): a good step tends to follow a
                      good step. Var(sum of n consecutive rewards) = S(n) = n + 2 sum_{h=1}^{n-1} (n-h) rho^h.
                      Siblings share r_{t-1} through the prefix, so V_t(truncated) = 1 at t=1 and 1-rho^2 after;
                      V_t(summed) = S(T), V_t(rtg) = S(T-t+1).

Full normalisation A = (x - mean)/std (std unbiased) is not compared on variance: sum_i A_i^2 = k-1 in every group
whatever the rewards, so E[A^2] = (k-1)/k for every estimator and the ratio is 1 by construction. For it the
simulation measures the inverse signal share 1/corr^2(A_t, u_t), where u_t is the part of the step-t reward not
predictable from the prefix (the action's own contribution); with the mean baseline and independent steps this equals
V_t times the same constant (k/(k-1))^2 for every estimator, so its ratio is again T.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ESTIMATORS = ("summed", "return_to_go")


@dataclass(frozen=True)
class SimulatedRewards:
    """rewards: (G, k, T) step rewards. innovations: (G, k, T), u_t = r_t - E[r_t | prefix], the step's own part."""

    rewards: np.ndarray
    innovations: np.ndarray


@dataclass(frozen=True)
class RatioEstimate:
    """A ratio full / truncated with a percentile-bootstrap confidence interval [low, high]."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class RolloutVarianceReport:
    """Variances per step (T,) and step-averaged ratios full / truncated, from compare_rollout_variances."""

    summed_variance: np.ndarray
    return_to_go_variance: np.ndarray
    truncated_variance: np.ndarray
    summed_ratio: RatioEstimate
    return_to_go_ratio: RatioEstimate


def _check_rewards(rewards: np.ndarray, name: str) -> None:
    if rewards.ndim != 3 or rewards.shape[1] < 2 or rewards.shape[2] < 1:
        raise ValueError(f"{name}: rewards must be (groups, k >= 2, steps >= 1), got {tuple(rewards.shape)}; "
                         "a group of one has no baseline. Stack rewards as [question, candidate, step].")


def _innovation_scales(num_steps: int, autocorrelation: float) -> np.ndarray:
    """(T,) standard deviation of the step's own part: 1 at the first step, sqrt(1 - rho^2) after."""
    if not -1.0 < autocorrelation < 1.0:
        raise ValueError(f"autocorrelation must lie in (-1, 1) for a stationary AR(1), got {autocorrelation}.")
    scales = np.full(num_steps, np.sqrt(1.0 - autocorrelation**2))
    scales[0] = 1.0
    return scales


def simulate_full_trajectories(
    num_groups: int, group_size: int, num_steps: int, autocorrelation: float, rng: np.random.Generator
) -> SimulatedRewards:
    """k independent T-step trajectories per group: r_1 = e_1, r_t = rho r_{t-1} + sqrt(1 - rho^2) e_t. (G, k, T).

    autocorrelation = 0 gives independent unit-variance steps; every r_t has variance 1 for any |rho| < 1.
    """
    scales = _innovation_scales(num_steps, autocorrelation)
    innovations = rng.standard_normal((num_groups, group_size, num_steps)) * scales  # (G, k, T)
    rewards = np.empty_like(innovations)
    rewards[:, :, 0] = innovations[:, :, 0]
    for step in range(1, num_steps):
        rewards[:, :, step] = autocorrelation * rewards[:, :, step - 1] + innovations[:, :, step]
    return SimulatedRewards(rewards=rewards, innovations=innovations)


def simulate_truncated_groups(
    num_groups: int, group_size: int, num_steps: int, autocorrelation: float, rng: np.random.Generator
) -> SimulatedRewards:
    """k siblings per step from one shared prefix, same AR(1) process. Returns (G, k, T); [g, :, t] is one group.

    The prefix continues through one sibling picked uniformly at random (SLATE picks by softmax(A / eta); with the
    mean baseline the choice cannot matter, because the shared part rho * r_{t-1} cancels within the siblings).
    """
    scales = _innovation_scales(num_steps, autocorrelation)
    innovations = rng.standard_normal((num_groups, group_size, num_steps)) * scales  # (G, k, T)
    rewards = np.empty_like(innovations)
    prefix_reward = np.zeros(num_groups)  # r_{t-1} of the shared prefix; the first step has none
    rows = np.arange(num_groups)
    for step in range(num_steps):
        rewards[:, :, step] = autocorrelation * prefix_reward[:, None] + innovations[:, :, step]
        prefix_reward = rewards[rows, rng.integers(group_size, size=num_groups), step]
    return SimulatedRewards(rewards=rewards, innovations=innovations)


def baseline_within_groups(values: np.ndarray, normalize: bool = False, eps: float = 1e-6) -> np.ndarray:
    """A[g, i, ...] = x[g, i, ...] - mean_i x[g, :, ...], optionally divided by (unbiased std_i + eps). Axis 1 is k.

    values: (G, k, ...). Returns the same shape. A group whose values are all equal gets A = 0, not NaN.
    """
    centred = values - values.mean(axis=1, keepdims=True)
    if normalize:
        return centred / (values.std(axis=1, ddof=1, keepdims=True) + eps)
    return centred


def summed_reward_advantages(rewards: np.ndarray, normalize: bool = False) -> np.ndarray:
    """Full-trajectory sampling: A_{i,t} = baseline_i(sum_s r_{i,s}), the same for every t. (G, k, T) -> (G, k, T)."""
    _check_rewards(rewards, "summed_reward_advantages")
    advantages = baseline_within_groups(rewards.sum(axis=2), normalize)  # (G, k)
    return np.broadcast_to(advantages[:, :, None], rewards.shape).copy()


def return_to_go_advantages(rewards: np.ndarray, normalize: bool = False) -> np.ndarray:
    """Full-trajectory sampling: A_{i,t} = baseline_i(sum_{s>=t} r_{i,s}). (G, k, T) -> (G, k, T)."""
    _check_rewards(rewards, "return_to_go_advantages")
    returns_to_go = np.flip(np.cumsum(np.flip(rewards, axis=2), axis=2), axis=2)  # (G, k, T)
    return baseline_within_groups(returns_to_go, normalize)


def sibling_advantages(rewards: np.ndarray, normalize: bool = False) -> np.ndarray:
    """Truncated sampling: A_{i,t} = baseline_i(r_{i,t}) among the k siblings of step t. (G, k, T) -> (G, k, T).

    A step with no group (the episode had ended) is NaN in rewards and stays NaN here.
    """
    _check_rewards(rewards, "sibling_advantages")
    return baseline_within_groups(rewards, normalize)


def full_trajectory_advantages(rewards: np.ndarray, estimator: str, normalize: bool = False) -> np.ndarray:
    """Dispatch on estimator name: "summed" or "return_to_go". (G, k, T) -> (G, k, T)."""
    if estimator == "summed":
        return summed_reward_advantages(rewards, normalize)
    if estimator == "return_to_go":
        return return_to_go_advantages(rewards, normalize)
    raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}.")


def summed_variance(num_consecutive: int, autocorrelation: float) -> float:
    """S(n) = Var(r_1 + ... + r_n) = n + 2 sum_{h=1}^{n-1} (n - h) rho^h for the unit-variance AR(1) process."""
    lags = np.arange(1, num_consecutive)
    return float(num_consecutive + 2.0 * np.sum((num_consecutive - lags) * autocorrelation**lags))


def theory_step_variances(num_steps: int, estimator: str, autocorrelation: float = 0.0) -> np.ndarray:
    """(T,) V_t / ((k-1)/k) under the mean baseline, for "summed", "return_to_go" or "truncated"."""
    if estimator == "truncated":
        return _innovation_scales(num_steps, autocorrelation) ** 2
    if estimator == "summed":
        return np.full(num_steps, summed_variance(num_steps, autocorrelation))
    if estimator == "return_to_go":
        return np.array([summed_variance(num_steps - step, autocorrelation) for step in range(num_steps)])
    raise ValueError(f"unknown estimator {estimator!r}; choose one of {(*ESTIMATORS, 'truncated')}.")


def theory_variance_ratio(num_steps: int, estimator: str, autocorrelation: float = 0.0) -> float:
    """Step-averaged ratio mean_t V_t(full) / mean_t V_t(truncated); k cancels.

    Independent steps: T for "summed", (T + 1) / 2 for "return_to_go".
    """
    full = theory_step_variances(num_steps, estimator, autocorrelation)
    truncated = theory_step_variances(num_steps, "truncated", autocorrelation)
    return float(full.mean() / truncated.mean())


def _batch_sums(stats: np.ndarray, num_batches: int) -> np.ndarray:
    """(G, m) -> (M, m): sums over M contiguous batches of groups. Groups are i.i.d., so batches are too."""
    num_batches = min(num_batches, stats.shape[0])
    return np.stack([chunk.sum(axis=0) for chunk in np.array_split(stats, num_batches)])


def _bootstrap_means(
    stats: np.ndarray, rng: np.random.Generator, num_resamples: int, num_batches: int
) -> tuple[np.ndarray, np.ndarray]:
    """Column means of (G, m) per-group stats, NaN = absent; returns the point (m,) and resamples (B, m)."""
    present = ~np.isnan(stats)
    sums = _batch_sums(np.where(present, stats, 0.0), num_batches)  # (M, m)
    counts = _batch_sums(present.astype(float), num_batches)  # (M, m)
    weights = rng.multinomial(sums.shape[0], np.full(sums.shape[0], 1.0 / sums.shape[0]), size=num_resamples)
    point = sums.sum(axis=0) / counts.sum(axis=0)
    with np.errstate(invalid="ignore"):  # a resample may miss every group that reached a step: NaN, skipped later
        return point, (weights @ sums) / (weights @ counts)


def bootstrap_ratio(
    full_stats: np.ndarray,
    truncated_stats: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    num_batches: int = 1000,
) -> RatioEstimate:
    """statistic(means of full_stats) / statistic(means of truncated_stats) with a percentile bootstrap CI.

    full_stats: (G1, m), truncated_stats: (G2, m), one row per group (groups are the i.i.d. unit; NaN = absent).
    statistic maps means (..., m) to (...). The two samples are resampled independently, as they were drawn.
    """
    full_point, full_boot = _bootstrap_means(full_stats, rng, num_resamples, num_batches)
    trunc_point, trunc_boot = _bootstrap_means(truncated_stats, rng, num_resamples, num_batches)
    resampled = statistic(full_boot) / statistic(trunc_boot)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(resampled, [tail, 100.0 - tail])
    return RatioEstimate(float(statistic(full_point) / statistic(trunc_point)), float(low), float(high))


def squared_advantage_per_group(advantages: np.ndarray) -> np.ndarray:
    """(G, k, T) -> (G, T): mean_i A_{g,i,t}^2; its mean over groups is V_t (the mean of A is zero by construction)."""
    return np.mean(advantages**2, axis=1)


def step_averaged(means: np.ndarray) -> np.ndarray:
    """(..., T) -> (...): the mean over steps, ignoring steps that no group reached."""
    return np.nanmean(means, axis=-1)


def variance_ratio(
    full_advantages: np.ndarray,
    truncated_advantages: np.ndarray,
    rng: np.random.Generator,
    num_resamples: int = 1000,
    confidence: float = 0.95,
) -> RatioEstimate:
    """Step-averaged V(full) / V(truncated) with a bootstrap CI. Both (G, k, T), the same T; G may differ."""
    return bootstrap_ratio(squared_advantage_per_group(full_advantages),
                           squared_advantage_per_group(truncated_advantages), step_averaged, rng,
                           num_resamples=num_resamples, confidence=confidence)


def _signal_stats(advantages: np.ndarray, innovations: np.ndarray) -> np.ndarray:
    """(G, k, T) twice -> (G, 3T): per step, mean_i of A·u, A^2 and u^2."""
    return np.concatenate([np.mean(advantages * innovations, axis=1), np.mean(advantages**2, axis=1),
                           np.mean(innovations**2, axis=1)], axis=1)


def _inverse_signal_share(means: np.ndarray) -> np.ndarray:
    """(..., 3T) means of A·u, A^2, u^2 -> (...): mean_t of 1 / corr^2(A_t, u_t)."""
    cross, square, innovation_square = np.split(means, 3, axis=-1)
    return np.mean(square * innovation_square / cross**2, axis=-1)


def signal_share_ratio(
    full: SimulatedRewards,
    full_advantages: np.ndarray,
    truncated: SimulatedRewards,
    truncated_advantages: np.ndarray,
    rng: np.random.Generator,
    num_resamples: int = 1000,
    confidence: float = 0.95,
) -> RatioEstimate:
    """Step-averaged 1/corr^2(A_t, u_t), full / truncated: a scale-free ratio that also applies to normalised A.

    u_t is the step-t action's own part of its reward (SimulatedRewards.innovations), known only in simulation.
    """
    return bootstrap_ratio(_signal_stats(full_advantages, full.innovations),
                           _signal_stats(truncated_advantages, truncated.innovations),
                           _inverse_signal_share, rng, num_resamples=num_resamples, confidence=confidence)


def compare_rollout_variances(
    full_rewards: np.ndarray,
    truncated_rewards: np.ndarray,
    rng: np.random.Generator,
    num_resamples: int = 1000,
    confidence: float = 0.95,
) -> RolloutVarianceReport:
    """Measure both full-trajectory estimators against truncated sampling on real per-step rewards (mean baseline).

    full_rewards: (Q, k, T), step rewards of k full trajectories per question; pad steps after an episode ended
      with 0 (no reward was earned there, so sums and returns-to-go are unchanged).
    truncated_rewards: (Q', k, T), [q, :, t] = the k siblings' step-t rewards from question q's shared prefix;
      a step the episode never reached is NaN for the whole group and is skipped.
    Variances are per step (T,); ratios are step-averaged, full / truncated, with bootstrap CIs over questions.
    """
    _check_rewards(full_rewards, "compare_rollout_variances(full_rewards)")
    _check_rewards(truncated_rewards, "compare_rollout_variances(truncated_rewards)")
    if not np.all(np.isfinite(full_rewards)):
        raise ValueError("compare_rollout_variances: full_rewards has NaN or inf; pad ended episodes with 0.")
    if full_rewards.shape[2] != truncated_rewards.shape[2]:
        raise ValueError(f"compare_rollout_variances: full_rewards has T={full_rewards.shape[2]} steps, "
                         f"truncated_rewards T={truncated_rewards.shape[2]}; pad both to the same step budget.")
    partial = np.isnan(truncated_rewards).any(axis=1) & ~np.isnan(truncated_rewards).all(axis=1)
    if partial.any():
        raise ValueError(f"compare_rollout_variances: {int(partial.sum())} truncated groups are partly NaN; "
                         "a group is either all present or all NaN (the step was never reached).")
    truncated_stats = squared_advantage_per_group(sibling_advantages(truncated_rewards))
    variances = {}
    ratios = {}
    for estimator in ESTIMATORS:
        full_stats = squared_advantage_per_group(full_trajectory_advantages(full_rewards, estimator))
        variances[estimator] = full_stats.mean(axis=0)
        ratios[estimator] = bootstrap_ratio(full_stats, truncated_stats, step_averaged, rng,
                                            num_resamples=num_resamples, confidence=confidence)
    return RolloutVarianceReport(
        summed_variance=variances["summed"],
        return_to_go_variance=variances["return_to_go"],
        truncated_variance=np.nanmean(truncated_stats, axis=0),
        summed_ratio=ratios["summed"],
        return_to_go_ratio=ratios["return_to_go"],
    )
