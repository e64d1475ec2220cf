"""SFT warm-start: teach the step format from scripted demonstrations before RL.

Loss: mean cross-entropy over policy tokens only (think + action); prompt and ``<information>`` tokens never train,
exactly as in RL. Batches are packed by length up to ``sft.batch_tokens`` (padded tokens counted), with AdamW,
linear warm-up and cosine decay. The tiny policy's tokenizer is trained here on the world's text.

Runs are bound by steps (``sft.max_steps`` or ``sft.epochs``), so one seed gives one checkpoint on a given kind of
machine. With ``checkpoint_to``, a run saves its whole state every ``checkpoint_every`` steps (the policy, the
optimizer, the data order and every random state, atomically: trainer/checkpoint.py) and a run started again on the
same directory continues from the newest intact checkpoint to the same weights an uninterrupted run reaches: a
warm start of several hours survives a stopped machine. Forward passes run in float32 unless bfloat16 is native to
the device (``sft.bf16_autocast: auto``): on a CPU without it, autocast is about 12 times slower than float32.
"""

from __future__ import annotations

import logging
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from slate.config import RunConfig
from slate.data.records import QARecord, read_corpus
from slate.errors import ConfigError
from slate.logprobs import pad_batch, token_logprobs
from slate.retrieval.base import Retriever
from slate.rollout.actions import TAGS, parse_step, render_information
from slate.rollout.engine import information_ids
from slate.rollout.episode import Episode, Step
from slate.rollout.policy import Policy, build_tiny_policy, load_policy
from slate.rollout.prompt import build_prompt
from slate.runtime import choose_bf16_autocast
from slate.trainer.checkpoint import TRAINER_STATE, commit, latest_checkpoint, remove_staging, staging_dir
from slate.world.demonstrations import MistakeRates, ScriptedSearcher, ScriptedStep

logger = logging.getLogger(__name__)


def demonstration_episodes(policy: Policy, records: list[QARecord], demonstrations: list[list[ScriptedStep]],
                           config: RunConfig) -> list[Episode]:
    """Scripted steps tokenised like rollouts: sampled-step ids (mask 1) and environment ids (mask 0)."""
    episodes = []
    for record, steps in zip(records, demonstrations, strict=True):
        prompt = policy.prompt_ids(record.question, config.rollout.prompt_template, config.rollout.use_chat_template)
        episode = Episode(record=record, prompt_ids=prompt)
        for scripted in steps:
            ids = policy.encode(scripted.text)
            step = Step(text=scripted.text, parsed=parse_step(scripted.text), token_ids=ids, logprobs=[0.0] * len(ids))
            if scripted.hits is not None:
                step.hits = scripted.hits
                step.feedback_ids = information_ids(policy, scripted.hits, config.rollout.max_information_tokens)
            episode.steps.append(step)
        episodes.append(episode)
    return episodes


def tokenizer_texts(world_dir: Path, prompts: list[str], demonstrations: list[list[ScriptedStep]]) -> list[str]:
    """What the tiny tokenizer learns its merges from: the corpus, and the demonstrations as the policy reads and
    writes them (prompts, steps, ``<information>`` blocks), so that recurring phrasing ("I need", "hops to go",
    "Doc 1(Title:") becomes a few whole tokens rather than many byte pieces. Shorter sequences train faster."""
    texts = [p.contents for p in read_corpus(world_dir / "corpus.jsonl")] + prompts
    for steps in demonstrations:
        texts += [step.text for step in steps] + [render_information(step.hits) for step in steps if step.hits]
    # the tags are added as whole tokens afterwards; merges spent on their pieces would be wasted
    tags = re.compile("|".join(re.escape(tag) for tag in TAGS))
    return [tags.sub(" ", text) for text in texts]


def length_batches(lengths: list[int], batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size (rows × longest) fits ``batch_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        if current and (len(current) + 1) * lengths[index] > batch_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def cosine_lr(step: int, progress: float, warmup: int, peak: float, decay_fraction: float = 1.0) -> float:
    """Linear warm-up over the first ``warmup`` steps; then ``peak`` until ``progress`` reaches 1 - decay_fraction,
    and a cosine decay to 0 over the rest (``decay_fraction`` = 1: a plain cosine from the end of warm-up)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_progress = (progress - (1.0 - decay_fraction)) / decay_fraction
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, decay_progress))))


def run_progress(step: int, total_steps: int, warmup: int, elapsed_s: float, time_limit_s: float | None) -> float:
    """How far the run is after warm-up, by steps or — when a time budget is set — by wall-clock, whichever is
    further: a run that meets its time limit first still ends with its learning rate decayed to 0 instead of being
    cut at full learning rate."""
    by_steps = (step - warmup) / max(1, total_steps - warmup)
    by_time = elapsed_s / time_limit_s if time_limit_s else 0.0
    return max(by_steps, by_time)


@dataclass
class DataPosition:
    """Where the run is in its demonstrations: this pass's token sequences and loss masks (redrawn every pass with
    ``sft.redraw_demonstrations``), its batches, and how many of them have been trained on."""

    sequences: list[list[int]]
    masks: list[list[int]]
    batches: list[list[int]]
    next_batch: int = 0


def save_sft_checkpoint(run_dir: Path, step: int, policy: Policy, optimizer: torch.optim.Optimizer,
                        data: DataPosition, rngs: dict[str, random.Random], elapsed_s: float) -> Path:
    """``run_dir/checkpoints/step-N``: the policy as ``slate sft`` saves it, and the rest of the run's state; staged,
    then renamed into place, so a kill while writing leaves the previous checkpoint the newest."""
    staged = staging_dir(run_dir, step)
    policy.save(staged / "policy")
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "data": asdict(data), "elapsed_s": elapsed_s,
                "torch_rng": torch.get_rng_state(), "rngs": {name: r.getstate() for name, r in rngs.items()}},
               staged / TRAINER_STATE)
    return commit(run_dir, step, keep=2)


def train_sft(config: RunConfig, train_records: list[QARecord], retriever: Retriever, world_dir: Path,
              out_dir: Path, init: Path | None = None,
              on_step: Callable[[int, int, float], None] | None = None,
              on_eval: Callable[[int, Policy], None] | None = None, eval_every: int = 0,
              checkpoint_to: Path | None = None, checkpoint_every: int = 0) -> Policy:
    """Warm-start a policy (a new tiny one, or ``init``) on scripted demonstrations and save it to ``out_dir``.

    ``on_eval(step, policy)`` is called every ``eval_every`` steps and after the last one, with the model in eval
    mode; the random state is restored afterwards, so evaluating does not change the checkpoint.
    ``checkpoint_to``: a directory for ``checkpoints/step-N`` every ``checkpoint_every`` steps; when it already
    holds one, the run resumes from the newest intact one (the caller checks that it is the same run)."""
    sft = config.sft
    torch.manual_seed(sft.seed)
    resumed = None
    if checkpoint_to is not None:
        remove_staging(checkpoint_to)  # a checkpoint a kill interrupted
        resumed = latest_checkpoint(checkpoint_to)
    if resumed is not None:
        init = resumed / "policy"  # the checkpoint's policy, tokenizer included
    records = train_records[: sft.max_demos] if sft.max_demos else train_records
    if not records:
        raise ConfigError("SFT: no training questions to demonstrate (empty train split, or sft.max_demos=0).")
    rates = MistakeRates(sft.vague_query_rate, sft.wrong_entity_rate, sft.skip_hop_rate, sft.early_answer_rate,
                         sft.give_up_rate, sft.give_up_min_hops, sft.vague_habit_rate)
    searcher = ScriptedSearcher(world_dir, retriever, rates, config.rollout.max_steps, config.retrieval.top_k,
                                seed=sft.seed)
    demonstrations = [searcher.demonstrate(record) for record in records]
    if init is None and config.model.source == "tiny":
        prompts = [build_prompt(r.question, config.rollout.prompt_template) for r in records]
        texts = tokenizer_texts(world_dir, prompts, demonstrations)
        policy = build_tiny_policy(texts, config.model.tiny, seed=sft.seed)
    else:
        policy = load_policy(config.model, init)

    def tokenised(demonstrations: list[list[ScriptedStep]]) -> tuple[list[list[int]], list[list[int]]]:
        episodes = demonstration_episodes(policy, records, demonstrations, config)
        too_long = sum(len(step.token_ids) > config.rollout.max_step_tokens for e in episodes for step in e.steps)
        if too_long:
            # the policy would learn steps that every rollout cuts off, and then fail to parse them
            logger.warning("SFT: %d of %d demonstration steps are longer than rollout.max_step_tokens=%d; raise it",
                           too_long, sum(len(e.steps) for e in episodes), config.rollout.max_step_tokens)
        return [e.token_ids() for e in episodes], [e.loss_mask() for e in episodes]

    sequences, masks = tokenised(demonstrations)
    rng = random.Random(sft.seed)
    data = DataPosition(sequences, masks, length_batches([len(s) for s in sequences], sft.batch_tokens, rng))
    total_steps = sft.max_steps or max(1, int(len(data.batches) * sft.epochs))
    logger.info("SFT: %d demonstrations, %d policy tokens, %d optimizer steps%s", len(sequences),
                sum(sum(m) for m in masks), total_steps,
                ", drawn afresh every pass" if sft.redraw_demonstrations else "")
    model = policy.model
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    model.train()
    bf16 = choose_bf16_autocast(sft.bf16_autocast, device, what="SFT", knob="sft.bf16_autocast", log=logger)

    def evaluate_now() -> None:
        rng_state = torch.random.get_rng_state()
        model.eval()
        on_eval(step, policy)
        model.train()
        torch.random.set_rng_state(rng_state)
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft.lr, weight_decay=0.01, betas=(0.9, 0.95))
    rngs = {"batches": rng, "searcher": searcher.rng}
    step, elapsed_s = 0, 0.0
    if resumed is not None:
        state = torch.load(resumed / TRAINER_STATE, weights_only=False)
        step, elapsed_s, data = state["step"], state["elapsed_s"], DataPosition(**state["data"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        for name, generator in rngs.items():
            generator.setstate(state["rngs"][name])
        logger.info("SFT: resumed from %s (step %d of %d)", resumed, step, total_steps)
    start = time.perf_counter() - elapsed_s
    while step < total_steps:
        progress = run_progress(step, total_steps, sft.warmup_steps, time.perf_counter() - start, sft.time_limit_s)
        if progress >= 1.0:
            break
        if data.next_batch == len(data.batches):  # a pass is over: the next one, redrawn and reshuffled
            if sft.redraw_demonstrations:
                # the searcher's random state has moved on, so the same questions get new mistakes (deterministically)
                data.sequences, data.masks = tokenised([searcher.demonstrate(record) for record in records])
            data.batches = length_batches([len(s) for s in data.sequences], sft.batch_tokens, rng)
            data.next_batch = 0
        batch = data.batches[data.next_batch]
        data.next_batch += 1
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, progress, sft.warmup_steps, sft.lr, sft.decay_fraction)
        input_ids, attention_mask, target_mask = pad_batch([data.sequences[i] for i in batch],
                                                           [data.masks[i] for i in batch], policy.pad_token_id)
        input_ids, attention_mask, target_mask = (t.to(device) for t in (input_ids, attention_mask, target_mask))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = token_logprobs(model, input_ids, attention_mask, target_mask)
        loss = -out.logprobs.sum() / target_mask.sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if checkpoint_to is not None and checkpoint_every and step % checkpoint_every == 0 and step < total_steps:
            save_sft_checkpoint(checkpoint_to, step, policy, optimizer, data, rngs, time.perf_counter() - start)
        if on_step is not None:
            on_step(step, total_steps, loss.item())
        if on_eval is not None and eval_every and step % eval_every == 0 and step < total_steps:
            evaluate_now()
    if step < total_steps:
        logger.info("SFT reached its time limit (%.0f s) after %d of %d steps; the learning rate had decayed to 0",
                    sft.time_limit_s, step, total_steps)
    if on_eval is not None:
        evaluate_now()
    model.eval()
    policy.save(out_dir)
    return policy
