"""Atomic, checksummed checkpoints: written to a staging directory, then renamed, so a kill never leaves a half
checkpoint; a manifest of sizes and SHA-256 sums catches one damaged afterwards (a full disk, a partial copy).
``save`` writes one from the trainer's models and state, ``resume`` restores the newest intact one, and
``export_policy`` writes a loadable policy directory; ``prepare_run_dir`` keeps a new run from overwriting an old one.

``out/checkpoints/step-000012/`` holds ``policy/`` (a loadable policy directory), ``trainer_state.pt`` (optimizer,
scheduler, step, data position), ``rng_rank{r}.pt`` per process (Python, NumPy, torch and sampler generators), so
``--resume`` continues the run exactly, and ``manifest.json`` (``{"files": {relative path: {bytes, sha256}}}``),
written last, before the rename.

Resume takes the newest checkpoint whose files all match the manifest and whose ``config.yaml`` is this run's
(``resume_conflicts``: only how long the run goes on, how often it evaluates, checkpoints and logs, its memory
knobs and where its servers are may differ; a checkpoint trained with another learning rate, method, world, ... is
another run, and resuming it is refused, naming the fields); a newer one that does not is skipped with
a warning naming it and the damaged file, and is left in place for inspection. Pruning keeps the last ``keep``
intact checkpoints: a damaged one never counts towards ``keep``, so it cannot push out a good one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from pydantic import ValidationError

from slate.config import RunConfig, save_config
from slate.errors import ConfigError, TrainingError
from slate.rollout.policy import Policy, load_policy
from slate.trainer import faults
from slate.trainer.setup import TrainedModels

logger = logging.getLogger(__name__)

PREFIX = "step-"
STAGING_PREFIX = f".tmp-{PREFIX}"
MANIFEST = "manifest.json"
TRAINER_STATE = "trainer_state.pt"  # a checkpoint's state beside its policy (RL trainer's or SFT's)
_CHUNK = 1 << 20

# The fields a resumed run may change: how long it goes on, how often it evaluates, checkpoints and logs, its memory
# knobs (the same update, split differently) and where its servers are and how patiently they are called. Every
# other field shapes what is learned, so a checkpoint written under another value of it belongs to another run.
RESUMABLE_FIELDS = frozenset({
    "world.build_if_missing", "model.gradient_checkpointing",
    "retrieval.url", "retrieval.timeout_s", "retrieval.max_retries",
    "rollout.server_urls", "rollout.server_timeout_s", "rollout.server_retries", "rollout.max_concurrent_requests",
    "rollout.sync_dir", "rollout.measure_update_shift",
    "judge.base_url", "judge.api_key_env", "judge.max_concurrency", "judge.max_retries", "judge.retry_base_delay_s",
    "judge.timeout_s", "judge.cache_path",
    "trainer.steps", "trainer.token_budget", "trainer.micro_batch_size", "trainer.micro_batch_tokens",
    "trainer.checkpoint_every", "trainer.keep_checkpoints", "trainer.eval_every", "trainer.eval_questions",
    "trainer.eval_at_tokens", "trainer.collective_timeout_s", "trainer.log_episodes_every", "trainer.report_to",
    "trainer.tensorboard", "trainer.wandb_project",
})


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def committed_checkpoints(out_dir: Path) -> list[Path]:
    """Every committed ``step-*`` directory, oldest first (intact or not)."""
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(path: Path) -> None:
    """Record the size and SHA-256 of every file under ``path`` in ``path/manifest.json``."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {p.relative_to(path).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files}
    (path / MANIFEST).write_text(json.dumps({"files": entries}, indent=1) + "\n")


def checkpoint_problem(path: Path, check_hashes: bool = True) -> str | None:
    """None when every file of the checkpoint matches its manifest, else what is wrong with it.

    ``check_hashes=False`` compares sizes only: cheap enough to run at every save (pruning), and it already sees
    a truncated or missing file; resume reads every byte.
    """
    manifest = path / MANIFEST
    if not manifest.is_file():
        return f"no {MANIFEST} (the checkpoint was not completed)"
    try:
        entries = json.loads(manifest.read_text())["files"]
        expected = {name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in entries.items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"{MANIFEST} is unreadable"
    if TRAINER_STATE not in expected:
        return f"{MANIFEST} lists no {TRAINER_STATE}"
    for name, (size, digest) in expected.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        actual = file.stat().st_size
        if actual != size:
            return f"{name} has {actual} bytes where the manifest says {size} (truncated?)"
        if check_hashes and sha256_of(file) != digest:
            return f"{name} does not match its SHA-256 in {MANIFEST} (damaged)"
    return None


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_conflicts(checkpoint: Path, config: RunConfig) -> list[str]:
    """The fields outside ``RESUMABLE_FIELDS`` in which ``config`` differs from the one ``checkpoint`` was written
    with, as ``"trainer.lr: 2e-05 in the checkpoint, 5e-05 now"``; empty when resuming it continues this run. A
    field added since the checkpoint was written takes its default there (the behaviour from before it existed)."""
    saved_file = checkpoint / "config.yaml"
    try:
        saved = RunConfig.model_validate(yaml.safe_load(saved_file.read_text()) or {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        return [f"{saved_file} cannot be read as a run config ({type(exc).__name__})"]
    before, now = _flat(saved.model_dump(mode="json")), _flat(config.model_dump(mode="json"))
    return [f"{key}: {before.get(key)!r} in the checkpoint, {now.get(key)!r} now"
            for key in sorted(before.keys() | now.keys())
            if key not in RESUMABLE_FIELDS and before.get(key) != now.get(key)]


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest intact checkpoint; each newer damaged one is named in a warning and skipped."""
    for path in reversed(committed_checkpoints(out_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("checkpoint %s is damaged: %s; it is skipped (and kept for inspection), resuming from an "
                       "earlier one", path, problem)
    return None


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "generators": {name: g.get_state() for name, g in generators.items()}}


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


def staging_dir(out_dir: Path, step: int) -> Path:
    """Where a checkpoint is written before ``commit``; every process writes its own files here."""
    path = checkpoint_dir(out_dir) / f"{STAGING_PREFIX}{step:06d}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_staging(out_dir: Path) -> None:
    """Delete staging directories left by a process killed while writing a checkpoint (never committed)."""
    root = checkpoint_dir(out_dir)
    if root.is_dir():
        for path in root.glob(f"{STAGING_PREFIX}*"):
            logger.info("removing %s, a checkpoint that was never completed", path)
            shutil.rmtree(path, ignore_errors=True)


def commit(out_dir: Path, step: int, keep: int) -> Path:
    """Write the manifest, rename the staged checkpoint into place (atomic on one filesystem), prune old ones."""
    staged = staging_dir(out_dir, step)
    write_manifest(staged)
    final = checkpoint_dir(out_dir) / f"{PREFIX}{step:06d}"
    if final.exists():
        shutil.rmtree(final)
    staged.rename(final)
    intact = [p for p in committed_checkpoints(out_dir) if checkpoint_problem(p, check_hashes=False) is None]
    for old in intact[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def holds_a_run(out_dir: Path) -> bool:
    """Whether ``out_dir`` already holds a training run: checkpoints, metrics or an exported policy."""
    return bool(committed_checkpoints(out_dir)) or (out_dir / "metrics.jsonl").is_file() \
        or (out_dir / "policy").is_dir()


def prepare_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """Refuse to start a new run over an old one: a directory that holds a run is resumed (``resume``), or moved
    aside to ``<out>.replaced-<time>`` (``overwrite``; returns where), or the start is refused, naming both."""
    if resume or not holds_a_run(out_dir):
        return None
    if not overwrite:
        steps = [p.name for p in committed_checkpoints(out_dir)]
        held = f"checkpoints {', '.join(steps)}" if steps else "metrics.jsonl or policy/"
        raise ConfigError(f"{out_dir} already holds a training run ({held}). Continue it with --resume, or pass "
                          f"--overwrite to move it aside and start again, or choose another --out.")
    aside = out_dir.with_name(f"{out_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.rename(aside)
    logger.info("moved the previous run in %s aside to %s", out_dir, aside)
    return aside


# -- the trainer's checkpoints -----------------------------------------------------------------------------------
def export_policy(models: TrainedModels, accelerator: Accelerator, lora: bool, path: Path) -> None:
    """A loadable policy directory (LoRA adapters merged into a copy of the model; the adapter alone in
    ``adapter/``, since a merged model cannot be split again to resume)."""
    model = accelerator.unwrap_model(models.module).model
    if lora:
        model.save_pretrained(path / "adapter")
        model = copy.deepcopy(model).merge_and_unload()
    Policy(model=model, tokenizer=models.policy.tokenizer, name=models.policy.name).save(path)


def save(out_dir: Path, config: RunConfig, accelerator: Accelerator, models: TrainedModels, state: dict[str, Any],
         generators: dict[str, torch.Generator]) -> None:
    """Checkpoint ``state`` (``state["state"]["step"]`` completed steps), the models and every process's random
    generators, atomically: every process writes into the staging directory, then the main process commits it."""
    step = state["state"]["step"]
    staging = staging_dir(out_dir, step)
    torch.save(rng_state(generators), staging / f"rng_rank{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        export_policy(models, accelerator, config.trainer.lora_rank > 0, staging / "policy")
        torch.save({"optimizer": models.optimizer.state_dict(), "scheduler": models.scheduler.state_dict(),
                    **state}, staging / f"{TRAINER_STATE}.tmp")
        save_config(config, staging / "config.yaml")
    faults.maybe_die("checkpoint", step)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / f"{TRAINER_STATE}.tmp").rename(staging / TRAINER_STATE)
        commit(out_dir, step, config.trainer.keep_checkpoints)
    accelerator.wait_for_everyone()


def load_adapter(model: torch.nn.Module, adapter_dir: Path) -> None:
    """Restore LoRA adapter weights saved by ``export_policy`` (``policy/adapter``) into a PEFT model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        raise TrainingError(f"{adapter_dir}: no adapter_model.safetensors, so the LoRA run cannot resume from this "
                            "checkpoint; start again from its merged policy with --init and lora_rank=0, or from "
                            "an earlier checkpoint.")
    set_peft_model_state_dict(model, load_file(str(weights)))


def resume(out_dir: Path, config: RunConfig, accelerator: Accelerator, models: TrainedModels,
           generators: dict[str, torch.Generator]) -> tuple[Path, dict[str, Any]] | None:
    """Restore the newest intact checkpoint of ``out_dir`` into the models, the optimizer, the scheduler and the
    generators; returns it and the trainer state saved with it, or None when there is none (the same answer on
    every process)."""
    found = [latest_checkpoint(out_dir)]
    broadcast_object_list(found)
    latest = found[0]
    if latest is None:
        return None
    conflicts = resume_conflicts(latest, config)
    if conflicts:
        raise ConfigError(f"{latest} was written by another run than this config describes, so it is not resumed:\n  "
                          + "\n  ".join(conflicts) + f"\nResume with the checkpoint's values (overrides), or pass "
                          f"--overwrite to move {out_dir} aside and start again, or choose another --out.")
    state = torch.load(latest / TRAINER_STATE, weights_only=False)
    model = accelerator.unwrap_model(models.module).model
    if config.trainer.lora_rank > 0:
        load_adapter(model, latest / "policy" / "adapter")  # the frozen base is the --init model already
    else:
        model.load_state_dict(load_policy(config.model, latest / "policy").model.state_dict())
    models.optimizer.load_state_dict(state.pop("optimizer"))
    models.scheduler.load_state_dict(state.pop("scheduler"))
    rng_file = latest / f"rng_rank{accelerator.process_index}.pt"
    restore_rng_state(torch.load(rng_file, weights_only=False), generators)
    return latest, state
