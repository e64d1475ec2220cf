"""Atomic checkpoints: written to a temporary directory, then renamed, so a kill never leaves a half checkpoint.

``out/checkpoints/step-000012/`` holds ``policy/`` (a loadable policy directory), ``trainer_state.pt`` (optimizer,
scheduler, step, data position) and ``rng_rank{r}.pt`` per process (Python, NumPy, torch and sampler generators),
so ``--resume`` continues the run exactly. The last ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

PREFIX = "step-"


def checkpoint_dir(out_dir: Path) -> Path:
    return out_dir / "checkpoints"


def latest_checkpoint(out_dir: Path) -> Path | None:
    root = checkpoint_dir(out_dir)
    if not root.is_dir():
        return None
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                  and (p / "trainer_state.pt").is_file())
    return done[-1] if done else None


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
    path = checkpoint_dir(out_dir) / f".tmp-{PREFIX}{step:06d}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def commit(out_dir: Path, step: int, keep: int) -> Path:
    """Rename the staged checkpoint into place (atomic on one filesystem) and prune old ones."""
    final = checkpoint_dir(out_dir) / f"{PREFIX}{step:06d}"
    if final.exists():
        shutil.rmtree(final)
    staging_dir(out_dir, step).rename(final)
    done = sorted(p for p in checkpoint_dir(out_dir).iterdir() if p.is_dir() and p.name.startswith(PREFIX))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final
