from __future__ import annotations

import math

import torch

from slate.algorithms.losses import aggregate, clipped_surrogate, k3_kl, policy_loss


def test_clipped_surrogate_by_hand() -> None:
    # ratios e^0.3 = 1.34986 (A=+1: clipped at 1.2 -> -1.2), e^-0.3 = 0.74082 (A=+1: unclipped -> -0.74082),
    # e^0.3 with A=-1: min(-1.34986, -1.2) = -1.34986 -> loss 1.34986 (unclipped), e^-0.3 with A=-1:
    # min(-0.74082, -0.8) = -0.8 -> loss 0.8 (clipped)
    logp = torch.tensor([[0.3, -0.3, 0.3, -0.3]])
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, clipped = clipped_surrogate(logp, old, adv, clip_eps=0.2)
    torch.testing.assert_close(loss, torch.tensor([[-1.2, -0.740818, 1.349859, 0.8]]), atol=1e-5, rtol=0)
    assert clipped.tolist() == [[True, False, False, True]]


def test_k3_by_hand() -> None:
    # logp = -1, ref = -1.5: log_ratio = -0.5: e^-0.5 + 0.5 - 1 = 0.106531
    torch.testing.assert_close(k3_kl(torch.tensor([-1.0]), torch.tensor([-1.5])), torch.tensor([0.106531]),
                               atol=1e-6, rtol=0)
    assert k3_kl(torch.tensor([-2.0]), torch.tensor([-2.0])).item() == 0.0
    # log-ratio 30 is clamped to 10 first; e^10 - 10 - 1 = 22015.5 is then clamped to 10
    assert k3_kl(torch.tensor([-31.0]), torch.tensor([-1.0])).item() == 10.0
    # log-ratio 2 is inside the clamp: e^2 - 2 - 1 = 4.389056
    torch.testing.assert_close(k3_kl(torch.tensor([-3.0]), torch.tensor([-1.0])), torch.tensor([4.389056]),
                               atol=1e-5, rtol=0)


def test_aggregation_by_hand() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    assert aggregate(values, mask, "token_mean").item() == (1 + 2 + 3 + 10) / 4
    assert aggregate(values, mask, "sequence_mean").item() == (2.0 + 10.0) / 2


def test_policy_loss_by_hand_and_mask_invariance() -> None:
    logp = torch.tensor([[-1.0, -0.5, -2.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -0.5, -9.0]])
    ref = torch.tensor([[-1.5, -0.5, -9.0]])
    adv = torch.tensor([[2.0, 2.0, 2.0]])
    mask = torch.tensor([[True, True, False]])
    out = policy_loss(logp, old, ref, adv, mask, clip_eps=0.2, kl_coef=0.1)
    # ratio 1 on both trained tokens: surrogate -2 each; kl: 0.106531 and 0 -> loss = (-2 - 2 + 0.1*0.106531)/2
    assert math.isclose(out.loss.item(), (-4 + 0.0106531) / 2, abs_tol=1e-6)
    assert math.isclose(out.kl.item(), 0.106531 / 2, abs_tol=1e-6)
    assert out.clip_fraction.item() == 0.0
    out.loss.backward()
    assert logp.grad is not None and logp.grad[0, 2].item() == 0.0  # the masked (retrieved) token gets no gradient
    # changing a masked token's log-probs changes nothing
    logp2 = logp.detach().clone()
    logp2[0, 2] = 5.0
    old2 = old.clone()
    old2[0, 2] = -50.0
    out2 = policy_loss(logp2, old2, ref, adv, mask, clip_eps=0.2, kl_coef=0.1)
    assert out2.loss.item() == out.loss.item()
