from __future__ import annotations

import math

import pytest
import torch

from slate.algorithms.advantages import (
    bonus_decided,
    group_advantages,
    process_advantages,
    selection_probabilities,
)


def test_group_advantages_by_hand() -> None:
    # r = [1, 0, 0, 1]: mean 0.5, unbiased std = sqrt(4 * 0.25 / 3) = 1/sqrt(3), so A = ±0.5·sqrt(3) = ±0.8660
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0]]))
    torch.testing.assert_close(adv, torch.tensor([[0.8660, -0.8660, -0.8660, 0.8660]]), atol=1e-4, rtol=0)
    assert torch.equal(group_advantages(torch.ones(3, 5)), torch.zeros(3, 5))  # all equal -> zero, not NaN


def test_group_advantages_slate_rewards_by_hand() -> None:
    # SLATE step rewards of k=5 siblings: [2, 0, -1, 1, 0]: mean 0.4; deviations [1.6, -0.4, -1.4, 0.6, -0.4];
    # squares sum 2.56+0.16+1.96+0.36+0.16 = 5.2; unbiased var 1.3; std 1.140175
    adv = group_advantages(torch.tensor([[2.0, 0.0, -1.0, 1.0, 0.0]]))
    expected = torch.tensor([[1.6, -0.4, -1.4, 0.6, -0.4]]) / math.sqrt(1.3)
    torch.testing.assert_close(adv, expected, atol=1e-5, rtol=0)


def test_std_floor_keeps_bonus_only_ties_small_by_hand() -> None:
    # Four siblings search (think 0 + query -1 = -1), one answers wrongly at t = 1 of B = 5 (0 - 1 + 0.1 * 4/5 =
    # -0.92). mean = -0.984; deviations [-0.016 x4, 0.064]; unbiased std = sqrt((4 * 0.000256 + 0.004096) / 4)
    # = sqrt(0.00128) = 0.035777. Paper formula: the answerer gets 0.064 / 0.035777 = 1.789, a full-strength push.
    rewards = torch.tensor([[-1.0, -1.0, -1.0, -1.0, -0.92]])
    adv = group_advantages(rewards)
    torch.testing.assert_close(adv[0, 4], torch.tensor(0.064 / math.sqrt(0.00128)), atol=1e-3, rtol=0)
    # floor 0.5: the same tie gives 0.064 / 0.5 = 0.128 and -0.016 / 0.5 = -0.032
    floored = group_advantages(rewards, std_floor=0.5)
    torch.testing.assert_close(floored, torch.tensor([[-0.032, -0.032, -0.032, -0.032, 0.128]]), atol=1e-4, rtol=0)
    # a real disagreement (std 1.14 > 0.5) is untouched by the floor
    spread = torch.tensor([[2.0, 0.0, -1.0, 1.0, 0.0]])
    torch.testing.assert_close(group_advantages(spread, std_floor=0.5), group_advantages(spread))
    # process advantages honour the floor too: outcomes [1, 0, 0, 0, 0] have mean 0.2 and std 0.4472 < 0.5, so
    # A = (1 - 0.2) / 0.5 = 1.6 and (0 - 0.2) / 0.5 = -0.4 (instead of 1.789 and -0.447)
    outcomes = torch.tensor([[1.0], [0.0], [0.0], [0.0], [0.0]])
    process = process_advantages(outcomes, torch.ones(5, 1, dtype=torch.bool), std_floor=0.5)
    torch.testing.assert_close(process[:, 0], torch.tensor([1.6, -0.4, -0.4, -0.4, -0.4]), atol=1e-5, rtol=0)


def test_group_advantages_permute_with_members() -> None:
    rewards = torch.tensor([[0.3, -1.0, 2.0, 0.0, 0.5]])
    perm = torch.tensor([4, 2, 0, 1, 3])
    torch.testing.assert_close(group_advantages(rewards[:, perm]), group_advantages(rewards)[:, perm])


def test_group_of_one_is_refused() -> None:
    with pytest.raises(ValueError, match="group of one"):
        group_advantages(torch.ones(2, 1))


def test_process_advantages_by_hand() -> None:
    # two trajectories; traj 0: search r=0.3, answer r=1.0; traj 1: search r=-0.3 (no answer reward: 1 step only)
    rewards = torch.tensor([[0.3, 1.0], [-0.3, 0.0]])
    has_reward = torch.tensor([[True, True], [True, False]])
    # rewarded values [0.3, 1.0, -0.3]: mean 1/3, deviations [-1/30, 2/3, -19/30];
    # unbiased var = (1/900 + 400/900 + 361/900)/2 = 762/1800 = 0.42333, std 0.650641
    std = math.sqrt(762 / 1800)
    n = [(-1 / 30) / std, (2 / 3) / std, (-19 / 30) / std]
    expected = torch.tensor([[n[0] + n[1], n[1]], [n[2], 0.0]])
    torch.testing.assert_close(process_advantages(rewards, has_reward), expected, atol=1e-4, rtol=0)


def test_process_advantages_reduce_to_grpo_for_outcome_rewards() -> None:
    outcomes = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    rewards = torch.zeros(5, 3)
    rewards[:, 2] = outcomes
    has_reward = torch.zeros(5, 3, dtype=torch.bool)
    has_reward[:, 2] = True
    adv = process_advantages(rewards, has_reward)
    grpo = group_advantages(outcomes[None])[0]
    for step in range(3):
        torch.testing.assert_close(adv[:, step], grpo)


def test_selection_probabilities_by_hand() -> None:
    # A = [1, 0], eta = 0.7: p0 = 1 / (1 + exp(-1/0.7)) = 1 / (1 + 0.239651) = 0.806679
    probs = selection_probabilities(torch.tensor([1.0, 0.0]), 0.7)
    torch.testing.assert_close(probs, torch.tensor([0.806679, 0.193321]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        selection_probabilities(torch.tensor([1.0]), 0.0)


def test_bonus_decided_by_hand() -> None:
    # the judge scored all five alike (think +1, action +1 = 2); two answered at t = 2 of B = 4 (+0.05 each):
    # without the bonus a tie (A = 0), with it the answers get A > 0 and the searches A < 0
    rewards = torch.tensor([2.0, 2.05, 2.0, 2.05, 2.0])
    bonuses = torch.tensor([0.0, 0.05, 0.0, 0.05, 0.0])
    assert bonus_decided(rewards, bonuses) == (True, True)
    # the judge separates them (one search scored 0): the bonus changes no sign -> neither
    rewards = torch.tensor([2.0, 2.05, 0.0, 2.05, 2.0])
    assert bonus_decided(rewards, bonuses) == (False, False)
    # a judge gap below the tie: without the bonus [2, 2, 1, 2, 1] (mean 1.6) -> signs + + - + -; with it the mean
    # is 1.62 and the signs are the same -> neither
    rewards = torch.tensor([2.0, 2.05, 1.0, 2.05, 1.0])
    assert bonus_decided(rewards, bonuses) == (False, False)
    # a small gap: without the bonus [2, 2, 2, 2, 1.9] (mean 1.98) -> + + + + -; with it the mean is 2.0, the
    # searches at 2 sit on it (sign 0) -> flipped, though not by the bonus alone
    rewards = torch.tensor([2.0, 2.05, 2.0, 2.05, 1.9])
    assert bonus_decided(rewards, bonuses) == (False, True)
    # all answer with the same bonus: a tie with and without it -> no signal either way
    assert bonus_decided(torch.full((5,), 1.05), torch.full((5,), 0.05)) == (False, False)


def test_bonus_decided_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="must"):
        bonus_decided(torch.zeros(5), torch.zeros(4))
