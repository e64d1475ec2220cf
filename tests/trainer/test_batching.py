"""Packing the update into few forward passes must not change the math: the loss and the gradient of one update on
a fixed batch equal those of the unbatched computation (each sample alone, over its whole sequence), in float32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_run import tiny_run_config
from token_sum_reward import TokenSumReward

from slate.algorithms.losses import policy_loss
from slate.data.records import read_qa_jsonl
from slate.logprobs import _head_logprobs, pad_batch, token_logprobs
from slate.methods import sampler_for
from slate.retrieval.bm25 import Bm25Retriever
from slate.samples import Sample
from slate.trainer.batching import make_units, micro_tensors, pack_micro_batches, padded_tokens, prefix_len
from slate.trainer.loop import Trainer


def _sample(ids: list[int], trained_from: int, group: str, prefix_len: int = 0) -> Sample:
    mask = [i >= trained_from for i in range(len(ids))]
    return Sample(ids, mask, [-1.0 if m else 0.0 for m in mask], [0.5 if m else 0.0 for m in mask], group,
                  prefix_len)


def test_packing_by_padded_tokens_by_hand() -> None:
    a, b, c = ([_sample(list(range(n)), 2, f"q{n}")] for n in (10, 4, 6))
    assert padded_tokens([a, b], grouped=False) == 2 * 10
    # sorted by length (4, 6, 10): 4 + 6 -> 2 rows x 6 = 12 <= 12; adding 10 -> 3 x 10 = 30 > 12
    assert pack_micro_batches([a, b, c], False, max_tokens=12, max_units=99) == [[b, c], [a]]
    # a unit larger than the budget still runs, alone
    assert pack_micro_batches([a], False, max_tokens=5, max_units=99) == [[a]]
    # without a token budget: the count-based split, order kept
    assert pack_micro_batches([a, b, c], False, max_tokens=None, max_units=2) == [[a, b], [c]]
    # groups: G x longest prefix + N x longest continuation
    g1 = [_sample([1, 2, 3, 7, 8], 3, "g1", prefix_len=3), _sample([1, 2, 3, 9], 3, "g1", prefix_len=3)]
    g2 = [_sample([4, 5, 6, 6, 5, 1], 4, "g2", prefix_len=4), _sample([4, 5, 6, 6, 2], 4, "g2", prefix_len=4)]
    assert padded_tokens([g1, g2], grouped=True) == 2 * 4 + 4 * 2


def test_micro_tensors_of_groups_with_different_prefixes() -> None:
    g1 = [_sample([1, 2, 3, 7, 8], 3, "g1", prefix_len=3), _sample([1, 2, 3, 9], 3, "g1", prefix_len=3)]
    g2 = [_sample([4, 5, 6, 6, 5, 1], 4, "g2", prefix_len=4)]
    units, grouped = make_units([*g1, *g2])
    assert grouped and [len(u) for u in units] == [2, 1]
    batch = micro_tensors(units, grouped, pad_id=0)
    assert batch.prefix_ids.tolist() == [[1, 2, 3, 0], [4, 5, 6, 6]]
    assert batch.prefix_lens.tolist() == [3, 4] and batch.group_of.tolist() == [0, 0, 1]
    assert batch.input_ids.tolist() == [[7, 8], [9, 0], [5, 1]]
    assert batch.target_mask.tolist() == [[True, True], [True, False], [True, True]]


def _trainer(tiny_world: Path, policy_dir: Path, out: Path, method: str) -> Trainer:
    config = tiny_run_config(tiny_world, method, micro_batch_tokens=300)
    return Trainer(config, read_qa_jsonl(tiny_world / "train.jsonl"),
                   Bm25Retriever.from_corpus(tiny_world / "corpus.jsonl"), policy_dir, out, tiny_world,
                   sampler=sampler_for(config, TokenSumReward()))


def _unbatched(trainer: Trainer, samples: list[Sample]) -> tuple[float, list[torch.Tensor]]:
    """Each sample alone over its whole sequence, weighed by its share of the minibatch's trained tokens."""
    model, ac, temperature = trainer.policy.model, trainer.config.algorithm, trainer.config.rollout.temperature
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.zeros_like(p) for p in params]
    total_tokens = sum(s.num_policy_tokens for s in samples)
    loss_total = 0.0
    for sample in samples:
        ids, attention, target = pad_batch([sample.token_ids], [sample.loss_mask], trainer.policy.pad_token_id)
        logprobs = token_logprobs(model, ids, attention, target, temperature).logprobs
        with torch.no_grad():
            ref = token_logprobs(trainer.reference, ids, attention, target, temperature).logprobs
        torch.testing.assert_close(ref[target], torch.tensor(sample.ref_logprobs)[target[0]], atol=1e-5, rtol=0)
        out = policy_loss(logprobs, torch.tensor([sample.old_logprobs]), ref, torch.tensor([sample.advantages]),
                          target, ac.clip_eps, ac.kl_coef, ac.token_aggregation)
        weight = sample.num_policy_tokens / total_tokens
        for g, d in zip(grads, torch.autograd.grad(out.loss * weight, params), strict=True):
            g += d
        loss_total += float(out.loss.detach()) * weight
    return loss_total, grads


@pytest.mark.parametrize(("method", "trees"), [("searchr1", False), ("slate", False), ("slate", True)])
def test_packed_update_equals_unbatched_loss_and_gradient(tiny_world: Path, tiny_policy_dir: Path, tmp_path: Path,
                                                          method: str, trees: bool) -> None:
    trainer = _trainer(tiny_world, tiny_policy_dir, tmp_path, method)
    trainer.config.trainer.tree_packing = trees
    records = read_qa_jsonl(tiny_world / "train.jsonl")[:4]
    samples = trainer.sampler.sample(trainer.engine, records).samples
    for i, sample in enumerate(samples):  # a spread of advantages and off-policy ratios, so every term is live
        sample.advantages = [(0.3 * (i % 5) - 0.6) if m else 0.0 for m in sample.loss_mask]
        sample.old_logprobs = [lp - 0.05 * (i % 3) if m else 0.0 for lp, m in zip(sample.old_logprobs,
                                                                                   sample.loss_mask, strict=True)]
    units, grouped = make_units(samples, trees=trees)
    assert grouped == (method == "slate")
    if trees:  # tree packing: a question's steps are one unit, each step continuing from its part of one prefix
        assert any(len({s.prefix_len for s in unit}) > 1 for unit in units)
        # a budget that fits the two first units (in packing order) together, so trees of different prefixes share
        # a pass and there is more than one pass
        ordered = sorted(units, key=lambda u: (prefix_len(u), max(len(s.token_ids) for s in u)))
        trainer.config.trainer.micro_batch_tokens = padded_tokens(ordered[:2], grouped)
    trainer.fill_reference_logprobs(units, grouped)
    micros = trainer.micro_batches(units, grouped)
    assert 1 < len(micros) < len(units)  # several units per pass, and more than one pass
    if grouped:
        assert any(len({prefix_len(u) for u in m}) > 1 for m in micros)  # different prefixes share a pass

    trainer.optimizer.zero_grad(set_to_none=True)
    loss, _ = trainer.accumulate_gradients(micros, len(micros), grouped)
    params = [p for p in trainer.policy.model.parameters() if p.requires_grad]
    packed_grads = [p.grad.detach().clone() for p in params]
    trainer.optimizer.zero_grad(set_to_none=True)

    expected_loss, expected_grads = _unbatched(trainer, samples)
    assert loss == pytest.approx(expected_loss, abs=1e-5)
    assert any(float(g.abs().max()) > 1e-4 for g in expected_grads)  # the gradient is not trivially zero
    for packed, expected in zip(packed_grads, expected_grads, strict=True):
        torch.testing.assert_close(packed, expected, atol=1e-5, rtol=1e-4)


def test_tree_units_of_nested_prefixes_by_hand() -> None:
    # one question, two steps: step 2's prefix [1, 2, 3, 7, 8] extends step 1's [1, 2, 3]
    step1 = [_sample([1, 2, 3, 7, 8], 3, "q/t1", prefix_len=3), _sample([1, 2, 3, 9], 3, "q/t1", prefix_len=3)]
    step2 = [_sample([1, 2, 3, 7, 8, 4], 5, "q/t2", prefix_len=5), _sample([1, 2, 3, 7, 8, 5, 6], 5, "q/t2",
                                                                          prefix_len=5)]
    other = [_sample([4, 5, 6, 6, 5, 1], 4, "r/t1", prefix_len=4)]
    for sample in (*step1, *step2):
        sample.tree_id = "q"
    other[0].tree_id = "r"
    units, grouped = make_units([*step2, *other, *step1], trees=True)
    assert grouped and [len(u) for u in units] == [4, 1] and prefix_len(units[0]) == 5
    batch = micro_tensors(units, grouped, pad_id=0)
    assert batch.prefix_ids.tolist() == [[1, 2, 3, 7, 8], [4, 5, 6, 6, 0]]  # the longest prefix of each tree
    assert batch.group_of.tolist() == [0, 0, 0, 0, 1] and batch.row_prefix_lens.tolist() == [3, 3, 5, 5, 4]
    assert batch.input_ids.tolist() == [[7, 8], [9, 0], [4, 0], [5, 6], [5, 1]]
    # padded tokens: 2 trees x longest prefix 5 + 5 rows x longest continuation 2
    assert padded_tokens(units, grouped) == 2 * 5 + 5 * 2
    # prefixes that do not nest stay separate groups; without trees every group is its own unit
    step2[0].token_ids[1] = step2[1].token_ids[1] = 99
    assert [len(u) for u in make_units([*step1, *step2], trees=True)[0]] == [2, 2]
    assert [len(u) for u in make_units([*step1, *step2])[0]] == [2, 2]


def test_float32_head_under_autocast_is_the_float32_projection() -> None:
    """Under bfloat16 autocast the head's logits would carry ~3 significant digits into every log-prob (and the PPO
    ratio); ``float32_head`` keeps that projection in float32, so the log-probs of the same hidden states are the
    float32 ones."""
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 300, bias=False)
    hidden = torch.randn(40, 64) * 3
    targets = torch.randint(0, 300, (40,))
    exact, _ = _head_logprobs(head, hidden, targets, 1.0, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        kept, _ = _head_logprobs(head, hidden, targets, 1.0, False, float32_head=True)
        rounded, _ = _head_logprobs(head, hidden, targets, 1.0, False)
    assert kept.dtype == torch.float32
    torch.testing.assert_close(kept, exact, atol=1e-6, rtol=0)
    assert float((rounded - exact).detach().abs().max()) > 1e-3  # what the float32 head is for
    head_bf16 = head.to(torch.bfloat16)  # a model loaded in bfloat16 (the GPU presets): its head runs as it is
    with torch.autocast("cpu", dtype=torch.bfloat16):
        as_loaded, _ = _head_logprobs(head_bf16, hidden, targets, 1.0, False, float32_head=True)
    assert float((as_loaded - exact).detach().abs().max()) < 0.5


@pytest.mark.parametrize("method", ["searchr1", "slate"])
def test_bf16_update_is_close_to_the_float32_update(tiny_world: Path, tiny_policy_dir: Path, tmp_path: Path,
                                                    method: str) -> None:
    """trainer.bf16_autocast=true: the same packed update, policy and reference under bfloat16 autocast, gives the
    float32 loss to a few thousandths and a gradient pointing the same way (it is not the same math to 1e-5, which
    is why the float32 path is the default where bfloat16 is not native, and the tests above pin it)."""
    trainer = _trainer(tiny_world, tiny_policy_dir, tmp_path, method)
    fp32 = _trainer(tiny_world, tiny_policy_dir, tmp_path / "fp32", method)
    trainer.bf16_autocast = trainer.module.bf16_autocast = True
    samples = trainer.sampler.sample(trainer.engine, read_qa_jsonl(tiny_world / "train.jsonl")[:4]).samples
    for i, sample in enumerate(samples):
        sample.advantages = [(0.3 * (i % 5) - 0.6) if m else 0.0 for m in sample.loss_mask]
    results = []
    for run in (fp32, trainer):
        units, grouped = make_units(samples, trees=False)
        run.fill_reference_logprobs(units, grouped)
        micros = run.micro_batches(units, grouped)
        run.optimizer.zero_grad(set_to_none=True)
        loss, _ = run.accumulate_gradients(micros, len(micros), grouped)
        results.append((loss, torch.cat([p.grad.flatten() for p in run.policy.model.parameters()]),
                        [list(s.ref_logprobs) for s in samples]))
    (loss32, grad32, ref32), (loss16, grad16, ref16) = results
    assert loss16 == pytest.approx(loss32, abs=5e-3)
    assert loss16 != loss32  # the bfloat16 path did run
    cosine = float(torch.nn.functional.cosine_similarity(grad16, grad32, dim=0))
    assert cosine > 0.99
    gaps = [abs(a - b) for r32, r16 in zip(ref32, ref16, strict=True) for a, b in zip(r32, r16, strict=True)]
    assert max(gaps) < 0.1 and sum(gaps) / len(gaps) < 0.01
