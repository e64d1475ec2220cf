"""Checkpoint integrity: the manifest catches a truncated, missing or altered file; resume falls back to the
previous intact checkpoint and names the damaged one; pruning never counts a damaged checkpoint towards keep."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from slate.trainer import checkpoint
from slate.trainer.metrics import MetricLogger


def _save(out: Path, step: int, keep: int = 5) -> Path:
    staged = checkpoint.staging_dir(out, step)
    (staged / "policy").mkdir()
    (staged / "policy" / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (staged / "trainer_state.pt").write_bytes(b"state %d" % step)
    (staged / "rng_rank0.pt").write_bytes(b"rng")
    return checkpoint.commit(out, step, keep)


def test_the_manifest_lists_every_file_with_size_and_sha256(tmp_path: Path) -> None:
    path = _save(tmp_path, 1)
    files = json.loads((path / "manifest.json").read_text())["files"]
    assert sorted(files) == ["policy/model.safetensors", "rng_rank0.pt", "trainer_state.pt"]
    assert files["trainer_state.pt"] == {"bytes": 7, "sha256": checkpoint.sha256_of(path / "trainer_state.pt")}
    assert checkpoint.checkpoint_problem(path) is None


@pytest.mark.parametrize(("damage", "problem"), [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "has 100 bytes where the manifest says 1024 (truncated?)"),
    (lambda p: p.unlink(), "policy/model.safetensors is missing"),
    (lambda p: p.write_bytes(b"\xff" + p.read_bytes()[1:]), "does not match its SHA-256"),  # one byte, same size
])
def test_a_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                               damage, problem: str) -> None:
    _save(tmp_path, 1)
    newest = _save(tmp_path, 2)
    damage(newest / "policy" / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="slate.trainer.checkpoint"):
        assert checkpoint.latest_checkpoint(tmp_path).name == "step-000001"
    assert "step-000002 is damaged" in caplog.text and problem in caplog.text
    assert newest.is_dir()  # kept for inspection, not deleted


def test_an_unfinished_checkpoint_is_never_resumed_from(tmp_path: Path) -> None:
    _save(tmp_path, 1)
    (checkpoint.checkpoint_dir(tmp_path) / "step-000009").mkdir()  # no manifest: a copy cut short, say
    assert checkpoint.latest_checkpoint(tmp_path).name == "step-000001"
    checkpoint.staging_dir(tmp_path, 2)  # what a kill while writing leaves behind
    checkpoint.remove_staging(tmp_path)
    assert not list(checkpoint.checkpoint_dir(tmp_path).glob(".tmp-*"))


def test_pruning_keeps_the_last_intact_checkpoints(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        _save(tmp_path, step, keep=2)
    assert [p.name for p in checkpoint.committed_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    (checkpoint.checkpoint_dir(tmp_path) / "step-000003" / "trainer_state.pt").write_bytes(b"")  # disk full
    _save(tmp_path, 4, keep=2)
    # counting by name would have deleted step 2 and left only step 4 intact
    assert [p.name for p in checkpoint.committed_checkpoints(tmp_path)] == ["step-000002", "step-000003",
                                                                           "step-000004"]
    _save(tmp_path, 5, keep=2)
    assert [p.name for p in checkpoint.committed_checkpoints(tmp_path)] == ["step-000003", "step-000004",
                                                                           "step-000005"]


def test_metrics_are_truncated_to_the_checkpoint_step(tmp_path: Path) -> None:
    metrics = MetricLogger(tmp_path)
    for step in (1, 2, 3):
        metrics.log(step, {"loss": float(step)})
    with (tmp_path / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 4, "lo')  # a line cut short by a kill
    assert metrics.truncate_after(2) == 2
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_conflicts_name_what_shapes_learning_and_allow_the_rest(tmp_path: Path) -> None:
    from slate.config import RunConfig, save_config

    saved = RunConfig.model_validate({"trainer": {"lr": 2e-5, "steps": 10}})
    save_config(saved, tmp_path / "config.yaml")
    # how long it runs, how often it checkpoints, where its judge is: the same run, resumable
    longer = RunConfig.model_validate({"trainer": {"lr": 2e-5, "steps": 40, "checkpoint_every": 3},
                                       "judge": {"base_url": "http://elsewhere:9000/v1"}})
    assert checkpoint.resume_conflicts(tmp_path, longer) == []
    # another rate or seed: another run, every difference named
    other = RunConfig.model_validate({"trainer": {"lr": 5e-5, "steps": 10, "seed": 3}})
    assert checkpoint.resume_conflicts(tmp_path, other) == [
        "trainer.lr: 2e-05 in the checkpoint, 5e-05 now", "trainer.seed: 0 in the checkpoint, 3 now"]
    # a field added after the checkpoint was written takes its default there
    data = saved.model_dump(mode="json")
    del data["judge"]["max_reasoning_chars"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    assert checkpoint.resume_conflicts(tmp_path, saved) == []
    (tmp_path / "config.yaml").write_text("trainer: [not, a, mapping]\n")
    assert checkpoint.resume_conflicts(tmp_path, saved) == [
        f"{tmp_path / 'config.yaml'} cannot be read as a run config (ValidationError)"]
