"""SFT warm-start: batching, learning-rate schedule, loss mask of the demonstrations, that training lowers the loss
(in float32 and under bfloat16 autocast), that bfloat16 is used only where it is native unless forced, and that one
seed gives one checkpoint."""

from __future__ import annotations

import math
import random
import re
import time
from pathlib import Path

import pytest
import torch

from slate.config import load_config
from slate.data.records import read_corpus, read_qa_jsonl
from slate.errors import ConfigError
from slate.rollout.actions import INFO_OPEN, TAGS
from slate.rollout.policy import build_tiny_policy
from slate.runtime import native_bf16, use_bf16_autocast
from slate.trainer.sft import (
    cosine_lr,
    demonstration_episodes,
    length_batches,
    run_progress,
    tokenizer_texts,
    train_sft,
)
from slate.world.demonstrations import MistakeRates, ScriptedSearcher

TINY = ["model.tiny.hidden_size=32", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
        "model.tiny.intermediate_size=64", "sft.max_demos=40", "sft.batch_tokens=4096", "rollout.max_step_tokens=16",
        "sft.max_steps=null"]


def test_length_batches_cover_every_index_once_within_the_padded_budget() -> None:
    lengths = [5, 100, 7, 60, 61, 3, 200, 8]
    batches = length_batches(lengths, batch_tokens=130, rng=random.Random(0))
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        # rows × longest row: padded size; a single over-long sequence still gets its own batch
        assert len(batch) * max(lengths[i] for i in batch) <= 130 or len(batch) == 1
    # sorted by length, then cut when rows × longest would pass 130: 3, 5, 7, 8 (4 × 8); 60, 61 (2 × 61); 100; 200
    assert sorted(sorted(lengths[i] for i in batch) for batch in batches) == [[3, 5, 7, 8], [60, 61], [100], [200]]


def test_cosine_lr_by_hand() -> None:
    assert cosine_lr(0, progress=0.0, warmup=10, peak=1.0) == pytest.approx(0.1)  # warm-up: (0 + 1) / 10
    assert cosine_lr(9, progress=0.0, warmup=10, peak=1.0) == pytest.approx(1.0)
    assert cosine_lr(10, progress=0.0, warmup=10, peak=1.0) == pytest.approx(1.0)
    assert cosine_lr(60, progress=0.5, warmup=10, peak=2.0) == pytest.approx(1.0)  # 2 × (1 + cos π/2) / 2
    assert cosine_lr(35, progress=0.25, warmup=10, peak=1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine_lr(500, progress=1.7, warmup=10, peak=1.0) == pytest.approx(0.0)  # past the end: stays at 0
    # decay over the last 40%: the peak holds until progress 0.6, halves at 0.8 (the decay's midpoint)
    assert cosine_lr(50, progress=0.55, warmup=10, peak=1.0, decay_fraction=0.4) == pytest.approx(1.0)
    assert cosine_lr(50, progress=0.8, warmup=10, peak=1.0, decay_fraction=0.4) == pytest.approx(0.5)
    assert cosine_lr(50, progress=1.0, warmup=10, peak=1.0, decay_fraction=0.4) == pytest.approx(0.0)


def test_run_progress_follows_steps_or_the_clock_whichever_is_further() -> None:
    assert run_progress(60, total_steps=110, warmup=10, elapsed_s=5.0, time_limit_s=None) == pytest.approx(0.5)
    assert run_progress(60, total_steps=110, warmup=10, elapsed_s=5.0, time_limit_s=100.0) == pytest.approx(0.5)
    assert run_progress(60, total_steps=110, warmup=10, elapsed_s=80.0, time_limit_s=100.0) == pytest.approx(0.8)


def test_a_time_limit_ends_the_run(tiny_setup, tiny_world: Path, tmp_path: Path) -> None:
    config, retriever, train = tiny_setup
    sft = config.sft.model_copy(update={"epochs": 1000, "time_limit_s": 3.0, "warmup_steps": 0})
    steps: list[int] = []
    start = time.perf_counter()
    train_sft(config.model_copy(update={"sft": sft}), train, retriever, tiny_world, tmp_path / "policy",
              on_step=lambda step, total, loss: steps.append(total))
    # the clock, not the 1000 epochs, ended it: a few seconds of steps (plus demos and the save) out of far more
    assert 0 < len(steps) < steps[0] and time.perf_counter() - start < 60


@pytest.fixture(scope="module")
def tiny_setup(tiny_world: Path, tiny_retriever):
    config = load_config("configs/tiny.yaml", [f"world.dir={tiny_world}", *TINY])
    return config, tiny_retriever, read_qa_jsonl(tiny_world / "train.jsonl")


def test_demonstrations_train_only_policy_tokens(tiny_setup, tiny_world: Path) -> None:
    config, retriever, train = tiny_setup
    corpus = [p.contents for p in read_corpus(tiny_world / "corpus.jsonl")]
    policy = build_tiny_policy(corpus + [r.question for r in train], config.model.tiny)
    searcher = ScriptedSearcher(tiny_world, retriever, MistakeRates(0, 0, 0, 0), config.rollout.max_steps,
                                config.retrieval.top_k, seed=0)
    episodes = demonstration_episodes(policy, train[:10], [searcher.demonstrate(r) for r in train[:10]], config)
    info_open = policy.encode(INFO_OPEN)[0]
    for episode in episodes:
        ids, mask = episode.token_ids(), episode.loss_mask()
        assert len(ids) == len(mask)
        assert not any(mask[: len(episode.prompt_ids)])  # the prompt never trains
        trained = [t for t, m in zip(ids, mask, strict=True) if m]
        assert sum(len(step.token_ids) for step in episode.steps) == len(trained)  # exactly the steps' own tokens
        assert info_open not in trained  # retrieved passages never train
        assert policy.decode(trained).count("<answer>") == 1


@pytest.mark.parametrize("bf16", [False, True])
def test_sft_lowers_the_policy_token_loss(tiny_setup, tiny_world: Path, tmp_path: Path, bf16: bool,
                                          caplog: pytest.LogCaptureFixture) -> None:
    config, retriever, train = tiny_setup
    sft = config.sft.model_copy(update={"epochs": 6, "lr": 1e-2, "warmup_steps": 2, "bf16_autocast": bf16})
    losses: list[float] = []
    with caplog.at_level("INFO", logger="slate.trainer.sft"):
        train_sft(config.model_copy(update={"sft": sft}), train, retriever, tiny_world, tmp_path / "policy",
                  on_step=lambda step, total, loss: losses.append(loss))
    capability = torch.backends.cpu.get_cpu_capability()
    assert f"forward passes in {'bfloat16 autocast' if bf16 else 'float32'} (sft.bf16_autocast={bf16}; " \
           f"{capability}" in caplog.text
    assert len(losses) >= 8 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-2:]) / 2 < 0.75 * sum(losses[:2]) / 2
    assert (tmp_path / "policy" / "config.json").is_file()


def test_the_tokenizer_learns_the_demonstrations_phrasing(tiny_setup, tiny_world: Path) -> None:
    config, retriever, train = tiny_setup
    searcher = ScriptedSearcher(tiny_world, retriever, MistakeRates(0, 0, 0, 0), config.rollout.max_steps,
                                config.retrieval.top_k, seed=0)
    demonstrations = [searcher.demonstrate(r) for r in train[:200]]
    prompts = [f"Question: {r.question}" for r in train[:200]]
    texts = tokenizer_texts(tiny_world, prompts, demonstrations)
    assert not any(tag in text for text in texts for tag in TAGS)  # tags are whole added tokens, not merges
    assert any("Doc 1(Title: " in text for text in texts)  # the <information> blocks as rendered
    with_steps = build_tiny_policy(texts, config.model.tiny)
    corpus_only = build_tiny_policy(tokenizer_texts(tiny_world, prompts, []), config.model.tiny)
    # a think and a rendered passage header, as every demonstration and rollout writes them
    think = "<think> I need the capital of South Triokand (3 hops to go). </think>"
    header = "<information> Doc 1(Title: South Triokand) South Triokand is a country. </information>"
    for text in (think, header):
        assert len(with_steps.encode(text)) < len(corpus_only.encode(text))
        assert with_steps.decode(with_steps.encode(text)) == text


def test_max_steps_fixes_the_number_of_optimizer_steps(tiny_setup, tiny_world: Path, tmp_path: Path) -> None:
    config, retriever, train = tiny_setup
    sft = config.sft.model_copy(update={"epochs": 50, "max_steps": 3, "warmup_steps": 0})
    seen: list[tuple[int, int]] = []
    train_sft(config.model_copy(update={"sft": sft}), train, retriever, tiny_world, tmp_path / "policy",
              on_step=lambda step, total, loss: seen.append((step, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_no_training_questions_is_a_clear_error(tiny_setup, tiny_world: Path, tmp_path: Path) -> None:
    config, retriever, _ = tiny_setup
    with pytest.raises(ConfigError, match="no training questions"):
        train_sft(config, [], retriever, tiny_world, tmp_path / "policy")


def test_demonstration_steps_longer_than_the_rollout_cap_are_reported(tiny_setup, tiny_world: Path, tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    config, retriever, train = tiny_setup
    sft = config.sft.model_copy(update={"epochs": 0.01, "max_demos": 5})
    capped = config.model_copy(update={"sft": sft, "rollout": config.rollout.model_copy(update={"max_step_tokens": 4})})
    with caplog.at_level("WARNING", logger="slate.trainer.sft"):
        train_sft(capped, train, retriever, tiny_world, tmp_path / "policy")
    # every scripted step (think + action) is longer than 4 tokens
    assert re.search(r"(\d+) of \1 demonstration steps are longer than rollout.max_step_tokens=4", caplog.text)


def test_bf16_autocast_auto_follows_the_hardware_and_true_or_false_force_it() -> None:
    assert use_bf16_autocast("auto", native=True) is True
    assert use_bf16_autocast("auto", native=False) is False
    assert use_bf16_autocast(True, native=False) is True
    assert use_bf16_autocast(False, native=True) is False


def test_native_bf16_is_detected_from_the_cpu_features(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert native_bf16(cpu) == (False, "AVX2")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert native_bf16(cpu) == (False, "AVX512")  # AVX512 alone has no bfloat16 dot products
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert native_bf16(cpu) == (True, "AVX512+AVX512_BF16")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert native_bf16(cpu) == (True, "AVX512+AVX512_BF16+AMX")


def test_one_seed_gives_one_checkpoint_with_or_without_evaluations(tiny_setup, tiny_world: Path,
                                                                    tmp_path: Path) -> None:
    config, retriever, train = tiny_setup
    sft = config.sft.model_copy(update={"max_steps": 5, "warmup_steps": 1, "max_demos": 20})
    run = config.model_copy(update={"sft": sft})
    plain = train_sft(run, train, retriever, tiny_world, tmp_path / "a").model.state_dict()
    evaluated: list[int] = []

    def on_eval(step: int, policy) -> None:  # an evaluation that draws random numbers, as sampling would
        assert not policy.model.training
        torch.rand(100)
        evaluated.append(step)

    again = train_sft(run, train, retriever, tiny_world, tmp_path / "b", on_eval=on_eval,
                      eval_every=2).model.state_dict()
    assert evaluated == [2, 4, 5]  # every 2 steps, and after the last
    assert plain.keys() == again.keys()
    assert all(torch.equal(plain[name], again[name]) for name in plain)
    other = config.model_copy(update={"sft": sft.model_copy(update={"seed": 1})})
    different = train_sft(other, train, retriever, tiny_world, tmp_path / "c").model.state_dict()
    assert not all(torch.equal(plain[name], different[name]) for name in plain if name in different)


def test_redrawn_demonstrations_change_between_passes_and_stay_seeded(tiny_setup, tiny_world: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``sft.redraw_demonstrations`` every pass trains on new draws of the mistakes (the same questions); without
    it every pass repeats the first; either way one seed gives the same sequence of batches."""
    import slate.trainer.sft as sft_module
    config, retriever, train = tiny_setup
    seen: list[list[tuple[int, ...]]] = []
    real_pad_batch = sft_module.pad_batch

    def recording_pad_batch(sequences, masks, pad_id):
        seen[-1].extend(tuple(s) for s in sequences)
        return real_pad_batch(sequences, masks, pad_id)

    monkeypatch.setattr(sft_module, "pad_batch", recording_pad_batch)
    rates = {"vague_query_rate": 0.5, "wrong_entity_rate": 0.3, "skip_hop_rate": 0.3, "early_answer_rate": 0.3}

    def passes(redraw: bool) -> tuple[set, set]:
        seen.append([])
        sft = config.sft.model_copy(update={"epochs": 2, "max_demos": 20, "redraw_demonstrations": redraw, **rates})
        train_sft(config.model_copy(update={"sft": sft}), train, retriever, tiny_world, tmp_path / f"p{len(seen)}")
        half = len(seen[-1]) // 2  # each pass shows each of the 20 demonstrations once
        assert len(seen[-1]) == 40
        return set(seen[-1][:half]), set(seen[-1][half:])

    first, second = passes(redraw=False)
    assert first == second
    first, second = passes(redraw=True)
    assert first != second and len(first & second) > 0  # clean demonstrations recur; mistaken ones are new
    passes(redraw=True)
    assert seen[-1] == seen[-2]


class Stopped(Exception):
    """Stands for the machine going away in the middle of a run."""


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_uninterrupted_weights(
        tiny_setup, tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped at step 5 with checkpoints every 3 steps, a run started again on the same directory replays steps 4-5
    from step 3's state (policy, optimizer, data order, redrawn demonstrations, random states) and ends with the
    uninterrupted run's weights, bit for bit, across several redrawn passes."""
    import slate.trainer.sft as sft_module
    config, retriever, train = tiny_setup
    rates = {"vague_query_rate": 0.5, "wrong_entity_rate": 0.3, "skip_hop_rate": 0.3, "early_answer_rate": 0.3}
    sft = config.sft.model_copy(update={"max_steps": 9, "warmup_steps": 2, "max_demos": 6, "lr": 1e-2,
                                        "redraw_demonstrations": True, **rates})
    run = config.model_copy(update={"sft": sft})
    whole = train_sft(run, train, retriever, tiny_world, tmp_path / "whole").model.state_dict()

    def stop_at_five(step: int, total: int, loss: float) -> None:
        if step == 5:
            raise Stopped

    with pytest.raises(Stopped):
        train_sft(run, train, retriever, tiny_world, tmp_path / "cut" / "policy", on_step=stop_at_five,
                  checkpoint_to=tmp_path / "cut", checkpoint_every=3)
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step-000003"]
    steps: list[int] = []
    passes: list[int] = []  # length_batches calls of the resumed run: the first pass's, then one per pass begun
    real_length_batches = sft_module.length_batches

    def counting_length_batches(*args, **kwargs):
        passes.append(len(passes))
        return real_length_batches(*args, **kwargs)

    monkeypatch.setattr(sft_module, "length_batches", counting_length_batches)
    resumed = train_sft(run, train, retriever, tiny_world, tmp_path / "cut" / "policy",
                        on_step=lambda step, total, loss: steps.append(step), checkpoint_to=tmp_path / "cut",
                        checkpoint_every=3).model.state_dict()
    assert steps == [4, 5, 6, 7, 8, 9]
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    assert len(passes) >= 3  # the resumed part crossed passes: redrawn, reshuffled from the restored random states


def test_the_bf16_choice_is_logged_and_a_forced_emulated_one_warned(monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    import slate.runtime as runtime
    from slate.runtime import choose_bf16_autocast
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "native_bf16", lambda device: (False, "AVX2"))
    with caplog.at_level("INFO", logger="slate.runtime"):
        assert choose_bf16_autocast("auto", cpu, what="SFT", knob="sft.bf16_autocast") is False
        assert "SFT: forward passes in float32 (sft.bf16_autocast=auto; AVX2, native bfloat16: no)" in caplog.text
        assert "WARNING" not in caplog.text
        assert choose_bf16_autocast(True, cpu, what="update", knob="k", fp32_part=", float32 head") is True
        assert "update: forward passes in bfloat16 autocast, float32 head (k=True; AVX2" in caplog.text
        assert "forced on a device without native bfloat16 (AVX2)" in caplog.text
    caplog.clear()
    monkeypatch.setattr(runtime, "native_bf16", lambda device: (True, "AVX512+AMX"))
    with caplog.at_level("INFO", logger="slate.runtime"):
        assert choose_bf16_autocast("auto", cpu, what="SFT", knob="k", announce=False) is True
    assert caplog.text == ""  # not announced, and nothing to warn about
