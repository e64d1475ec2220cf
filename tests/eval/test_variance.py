import numpy as np
import pytest

from slate.eval.variance import (
    baseline_within_groups,
    compare_rollout_variances,
    return_to_go_advantages,
    sibling_advantages,
    signal_share_ratio,
    simulate_full_trajectories,
    simulate_truncated_groups,
    summed_reward_advantages,
    summed_variance,
    theory_step_variances,
    theory_variance_ratio,
    variance_ratio,
)

# One question, k = 2 trajectories, T = 3 steps: trajectory 0 earns [1, 0, 2], trajectory 1 earns [0, 1, 0].
TWO_TRAJECTORIES = np.array([[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]])


def test_baseline_within_groups_by_hand():
    # r = [1, 0, 0, 1]: mean 0.5 -> ±0.5; unbiased std = sqrt(4 * 0.25 / 3) = 1/sqrt(3) -> ±0.5·sqrt(3) = ±0.8660
    rewards = np.array([[1.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(baseline_within_groups(rewards), [[0.5, -0.5, -0.5, 0.5]])
    np.testing.assert_allclose(baseline_within_groups(rewards, normalize=True), [[0.8660, -0.8660, -0.8660, 0.8660]],
                               atol=1e-4)
    assert np.array_equal(baseline_within_groups(np.ones((3, 5)), normalize=True), np.zeros((3, 5)))


def test_summed_reward_advantages_by_hand():
    # sums 3 and 1, mean 2 -> +1 and -1, given to every step of the trajectory
    np.testing.assert_allclose(summed_reward_advantages(TWO_TRAJECTORIES), [[[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]])


def test_return_to_go_advantages_by_hand():
    # returns-to-go [3, 2, 2] and [1, 1, 0]; step means [2, 1.5, 1]
    np.testing.assert_allclose(return_to_go_advantages(TWO_TRAJECTORIES), [[[1.0, 0.5, 1.0], [-1.0, -0.5, -1.0]]])


def test_sibling_advantages_by_hand():
    # read as siblings: step means [0.5, 0.5, 1]
    np.testing.assert_allclose(sibling_advantages(TWO_TRAJECTORIES), [[[0.5, -0.5, 1.0], [-0.5, 0.5, -1.0]]])


def test_advantages_permute_with_candidates():
    rewards = np.random.default_rng(0).normal(size=(3, 5, 4))
    order = np.array([3, 0, 4, 1, 2])
    for estimator in (summed_reward_advantages, return_to_go_advantages, sibling_advantages):
        np.testing.assert_allclose(estimator(rewards[:, order]), estimator(rewards)[:, order])


def test_normalised_advantages_have_fixed_second_moment():
    # sum_i ((x_i - mean) / std)^2 = k - 1 for any x: why a variance ratio of normalised advantages is always ~1
    rewards = np.random.default_rng(1).exponential(size=(50, 5, 3)) * np.array([1.0, 10.0, 100.0])
    advantages = return_to_go_advantages(rewards, normalize=True)
    np.testing.assert_allclose(np.sum(advantages**2, axis=1), np.full((50, 3), 4.0), rtol=1e-4)


def test_rejects_a_group_of_one():
    with pytest.raises(ValueError, match="k >= 2"):
        summed_reward_advantages(np.zeros((2, 1, 3)))


def test_summed_variance_by_hand():
    assert summed_variance(3, 0.0) == pytest.approx(3.0)
    # rho = 0.5, n = 3: 3 + 2 * (2 * 0.5 + 1 * 0.25) = 5.5
    assert summed_variance(3, 0.5) == pytest.approx(5.5)


def test_theory_ratios_by_hand():
    assert theory_variance_ratio(1, "summed") == pytest.approx(1.0)
    assert theory_variance_ratio(3, "summed") == pytest.approx(3.0)
    # return-to-go variances [3, 2, 1] at steps 1..3, mean 2 = (T + 1) / 2
    np.testing.assert_allclose(theory_step_variances(3, "return_to_go"), [3.0, 2.0, 1.0])
    assert theory_variance_ratio(3, "return_to_go") == pytest.approx(2.0)
    # rho = 0.5, T = 2: truncated [1, 1 - 0.25], mean 0.875; summed S(2) = 2 + 2 * 0.5 = 3; rtg [3, 1], mean 2
    assert theory_variance_ratio(2, "summed", 0.5) == pytest.approx(3.0 / 0.875)
    assert theory_variance_ratio(2, "return_to_go", 0.5) == pytest.approx(2.0 / 0.875)


def test_simulated_steps_have_unit_variance_and_the_chosen_autocorrelation():
    rewards = simulate_full_trajectories(20000, 2, 3, 0.5, np.random.default_rng(2)).rewards.reshape(-1, 3)
    np.testing.assert_allclose(rewards.var(axis=0), [1.0, 1.0, 1.0], atol=0.03)
    assert np.corrcoef(rewards[:, 0], rewards[:, 1])[0, 1] == pytest.approx(0.5, abs=0.02)
    assert np.corrcoef(rewards[:, 0], rewards[:, 2])[0, 1] == pytest.approx(0.25, abs=0.02)


@pytest.mark.parametrize(("autocorrelation", "estimator", "advantages"), [
    (0.0, "summed", summed_reward_advantages),  # theory 4
    (0.0, "return_to_go", return_to_go_advantages),  # theory 2.5
    (0.5, "summed", summed_reward_advantages),  # theory 10.154
])
def test_measured_ratio_matches_theory_at_four_steps(autocorrelation, estimator, advantages):
    rng = np.random.default_rng(3)
    full = simulate_full_trajectories(20000, 5, 4, autocorrelation, rng)
    truncated = simulate_truncated_groups(20000, 5, 4, autocorrelation, rng)
    ratio = variance_ratio(advantages(full.rewards), sibling_advantages(truncated.rewards), rng, num_resamples=300)
    theory = theory_variance_ratio(4, estimator, autocorrelation)
    assert ratio.low < ratio.value < ratio.high
    assert ratio.value == pytest.approx(theory, rel=0.03)
    assert ratio.high - ratio.low < 0.06 * theory  # about ±1.2 % at 20000 groups; a broken CI would be far off


def test_signal_share_ratio_is_t_for_normalised_summed_rewards():
    rng = np.random.default_rng(4)
    full = simulate_full_trajectories(20000, 5, 4, 0.0, rng)
    truncated = simulate_truncated_groups(20000, 5, 4, 0.0, rng)
    ratio = signal_share_ratio(full, summed_reward_advantages(full.rewards, normalize=True),
                               truncated, sibling_advantages(truncated.rewards, normalize=True), rng, num_resamples=300)
    assert ratio.value == pytest.approx(4.0, rel=0.05)


def test_compare_rollout_variances_by_hand():
    # full: [1, 1] vs [0, 0] -> summed A = ±1 at both steps, V = [1, 1]; rtg [2, 1] vs [0, 0] -> V = [1, 0.25]
    # truncated: siblings [2, 0] at step 1 and [1, 0] at step 2 -> V = [1, 0.25]
    # the third truncated group never reached step 2 (NaN) and is skipped there
    full = np.array([[[1.0, 1.0], [0.0, 0.0]]])
    truncated = np.array([[[2.0, 1.0], [0.0, 0.0]], [[3.0, np.nan], [1.0, np.nan]]])
    report = compare_rollout_variances(full, truncated, np.random.default_rng(5), num_resamples=50)
    np.testing.assert_allclose(report.summed_variance, [1.0, 1.0])
    np.testing.assert_allclose(report.return_to_go_variance, [1.0, 0.25])
    np.testing.assert_allclose(report.truncated_variance, [1.0, 0.25])
    # step-averaged: summed 1 / 0.625 = 1.6, return-to-go 0.625 / 0.625 = 1
    assert report.summed_ratio.value == pytest.approx(1.6)
    assert report.return_to_go_ratio.value == pytest.approx(1.0)


def test_compare_rollout_variances_rejects_partial_groups_and_nan_trajectories():
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match="partly NaN"):
        compare_rollout_variances(np.zeros((1, 2, 2)), np.array([[[1.0, np.nan], [0.0, 0.0]]]), rng)
    with pytest.raises(ValueError, match="pad ended episodes with 0"):
        compare_rollout_variances(np.full((1, 2, 2), np.nan), np.zeros((1, 2, 2)), rng)
