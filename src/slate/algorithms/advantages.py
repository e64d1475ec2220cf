"""Advantages: pure tensor functions, one per estimator. Nothing here knows a model, a tokenizer or a config.

Notation for the module: G groups, k members per group (candidates), S steps per member.

- ``group_advantages``: A = (r − mean_group r) / (std_group r + eps). GRPO over k full trajectories (Search-R1)
  and SLATE's step-level groups (k one-step siblings of one prefix) both use it; they differ in what a group is.
- ``process_advantages``: process-supervised GRPO for step rewards over full trajectories (StepSearch here):
  normalise every step reward of the group by the group's mean and std, then the advantage of step j is the sum of
  the normalised rewards of steps ≥ j (DeepSeekMath, section 4.1.3). Steps without a reward are left out.
- ``selection_probabilities``: SLATE's next-prefix distribution softmax(A / η).
- ``bonus_decided``: whether a bonus added to some members' rewards (SLATE's early-answer λ(B − t)/B) is what sets
  the signs of a group's advantages.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6, std_floor: float = 0.0) -> torch.Tensor:
    """A[g, i] = (r[g, i] − mean_g r) / (max(std_g r, std_floor) + eps), normalised among the k members of group g.

    rewards: (G, k). Returns (G, k). std is unbiased (k − 1), as torch.std. A group whose rewards are all equal gets
    A = 0: no signal, and no NaN. ``std_floor`` = 0 is the paper's formula. A positive floor stops near-ties from
    being blown up: with ternary judge scores, siblings that tie on every score and differ only by the early-answer
    bonus λ(B − t)/B (a few hundredths) would otherwise get advantages of about ±1 — a full-strength push towards
    answering early that no judge asked for.
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"group_advantages: rewards must be (groups, k >= 2), got {tuple(rewards.shape)}; a group "
                         "of one has no baseline. Check rollout.group_size.")
    mean = rewards.mean(dim=1, keepdim=True)
    return (rewards - mean) / (rewards.std(dim=1, keepdim=True).clamp(min=std_floor) + eps)


def process_advantages(rewards: torch.Tensor, has_reward: torch.Tensor, eps: float = 1e-6,
                       std_floor: float = 0.0) -> torch.Tensor:
    """Return-to-go of group-normalised step rewards, for one group of k trajectories.

    rewards: (k, S), step rewards (any value where ``has_reward`` is False is ignored). has_reward: (k, S) bool.
    Returns (k, S): A[i, j] = Σ_{s ≥ j, has_reward[i, s]} (r[i, s] − μ) / (σ + eps), with μ, σ the mean and unbiased
    std of all rewarded steps of the group (σ at least ``std_floor``, as in ``group_advantages``). With a single
    rewarded step per trajectory (an outcome reward on the last step) this is exactly ``group_advantages`` of the
    outcomes, broadcast to every step.
    """
    if rewards.shape != has_reward.shape or rewards.ndim != 2:
        raise ValueError(f"process_advantages: rewards {tuple(rewards.shape)} and has_reward "
                         f"{tuple(has_reward.shape)} must both be (k, S).")
    present = rewards[has_reward]
    if present.numel() < 2:
        return torch.zeros_like(rewards)
    normalised = torch.where(has_reward, (rewards - present.mean()) / (present.std().clamp(min=std_floor) + eps), 0.0)
    return normalised.flip(-1).cumsum(-1).flip(-1)  # suffix sums: steps >= j


def selection_probabilities(advantages: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(A / η) over the last dimension: SLATE's probability of extending the prefix with each candidate."""
    if temperature <= 0:
        raise ValueError(f"selection temperature must be > 0, got {temperature}; use greedy selection instead.")
    return torch.softmax(advantages / temperature, dim=-1)


def _ties(rewards: torch.Tensor) -> bool:
    """All k rewards equal, up to float32 rounding (rewards are ternary sums plus bonuses of a few hundredths, so
    a real difference is never below 1e-3)."""
    return bool(rewards.max() - rewards.min() <= 1e-5 * (1 + rewards.abs().max()))


def _advantage_signs(rewards: torch.Tensor) -> torch.Tensor:
    """sign(r − mean r), 0 for a tied group (its advantages are 0) or a member within rounding of the mean."""
    if _ties(rewards):
        return torch.zeros_like(rewards)
    centred = rewards - rewards.mean()
    return torch.where(centred.abs() <= 1e-5 * (1 + rewards.abs().max()), 0.0, torch.sign(centred))


def bonus_decided(rewards: torch.Tensor, bonuses: torch.Tensor) -> tuple[bool, bool]:
    """(only, flipped) for one group of k rewards of which ``bonuses`` (k,) is a part.

    only: without the bonuses the k rewards tie, with them they do not: every nonzero advantage of the group comes
    from the bonus alone (SLATE: siblings the judge scored alike, some answering and some searching).
    flipped: some member's sign of advantage differs with and without the bonuses (``only`` implies it). The scale
    of the advantages is left out on purpose: normalising by the group's std makes a tie broken by 0.05 as strong a
    push as a judge's +1 against −1.
    """
    if rewards.shape != bonuses.shape or rewards.ndim != 1:
        raise ValueError(f"bonus_decided: rewards {tuple(rewards.shape)} and bonuses {tuple(bonuses.shape)} must "
                         "both be (k,).")
    base = rewards - bonuses
    only = _ties(base) and not _ties(rewards)
    flipped = bool((_advantage_signs(rewards) != _advantage_signs(base)).any())
    return only, flipped
