"""What a user of the ``slate`` command sees: log lines from the installed command, progress lines when the output
is not a terminal, a finished run never overwritten without a word, and ``slate eval`` saying which rollout
settings it uses, reading a run directory, and building no world for question files."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from slate.cli.common import PlainProgress, progress_line
from slate.cli.main import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
SMALL = ["trainer.steps=1", "trainer.questions_per_step=2", "rollout.group_size=2", "rollout.max_steps=2",
         "rollout.max_step_tokens=12", "rollout.prompt_template='Q: {question}\n'", "trainer.bf16_autocast=false"]
ROLLOUT = ["rollout.max_steps=2", "rollout.max_step_tokens=12"]


def installed_slate(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run ``slate`` as the installed script does: the ``[project.scripts]`` entry of pyproject.toml, called."""
    target = re.search(r'^slate = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    module, _, attr = target.partition(":")
    code = f"import sys; from {module} import {attr} as entry; sys.argv[0] = 'slate'; sys.exit(entry())"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def contents(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_train_logs_and_never_overwrites_a_finished_run(tiny_world: Path, tiny_policy_dir: Path,
                                                         tmp_path: Path) -> None:
    run = tmp_path / "r1"
    args = ["train", "--config", "configs/searchr1-tiny.yaml", "--init", str(tiny_policy_dir), "--world",
            str(tiny_world), "--out", str(run), *SMALL]
    first = installed_slate(*args)
    assert first.returncode == 0, first.stderr
    # the log lines of the installed command: the CPU line and the per-step line, with the time left
    assert "CPU:" in first.stderr and "step 1/1 | reward" in first.stderr and "ETA" in first.stderr
    before = contents(run)
    assert "checkpoints/step-000001/trainer_state.pt" in before and "metrics.jsonl" in before

    second = installed_slate(*args)  # the same command again, without --resume
    assert second.returncode == 1
    assert "already holds a training run" in second.stderr and "--resume" in second.stderr \
        and "--overwrite" in second.stderr and "Traceback" not in second.stderr
    assert contents(run) == before  # the first run's checkpoints and metrics untouched

    # --resume under another learning rate is another run: refused, the field named, nothing written
    changed = runner.invoke(app, [*args, "--resume", "trainer.lr=5e-5"])
    assert changed.exit_code == 1
    flat = " ".join(changed.output.split())
    assert "trainer.lr: 2e-05 in the checkpoint, 5e-05 now" in flat and "is not resumed" in flat
    assert contents(run) == before

    third = runner.invoke(app, [*args, "--overwrite"])
    assert third.exit_code == 0, third.output
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("r1.replaced-")]
    assert contents(aside) == before  # the old run moved aside whole
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # the new run's one step, not appended to the old one's

    # slate eval --policy RUN reads RUN/policy, with the settings it was trained with
    result = runner.invoke(app, ["eval", "--policy", str(run), "--world", str(tiny_world), "--limit", "2"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert f"saved with the policy: {run / 'policy' / 'slate_config.yaml'}" in flat
    assert "B = 2 steps, 12 tokens per step" in flat and "warning" not in flat


def test_eval_says_which_rollout_settings_it_uses(tiny_world: Path, tiny_policy_dir: Path) -> None:
    # a checkpoint trained elsewhere carries no slate_config.yaml: the built-in defaults are named, with a warning
    result = runner.invoke(app, ["eval", "--policy", str(tiny_policy_dir), "--world", str(tiny_world), "--limit",
                                 "2", *ROLLOUT])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "rollout settings (the built-in defaults + overrides rollout.max_steps=2" in flat
    assert "B = 2 steps, 12 tokens per step, 400 information tokens, bm25 top-3" in flat
    assert "warning:" in flat and "carries no slate_config.yaml" in flat and "--config" in flat
    result = runner.invoke(app, ["eval", "--policy", str(tiny_policy_dir), "--world", str(tiny_world), "--limit",
                                 "2", "--config", "configs/searchr1-tiny.yaml", *ROLLOUT])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "rollout settings (--config configs/searchr1-tiny.yaml" in flat and "240 information tokens" in flat
    assert "warning" not in flat


def test_eval_of_question_files_builds_no_world(tiny_world: Path, tiny_policy_dir: Path, tmp_path: Path,
                                                 monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # where the default world.dir, runs/world, would be built
    questions = tmp_path / "questions.jsonl"
    questions.write_text((tiny_world / "dev.jsonl").read_text())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no answer"}\n')
    base = ["eval", "--policy", str(tiny_policy_dir), "--limit", "2", *ROLLOUT]
    refused = runner.invoke(app, [*base, "--data", str(bad)])
    assert refused.exit_code == 1 and "bad.jsonl:1" in refused.output
    no_corpus = runner.invoke(app, [*base, "--data", str(questions)])
    assert no_corpus.exit_code == 1 and "retrieval.corpus" in " ".join(no_corpus.output.split())
    assert not (tmp_path / "runs").exists()  # nothing built, even for a file it refused
    result = runner.invoke(app, [*base, "--data", str(questions), f"retrieval.corpus={tiny_world / 'corpus.jsonl'}"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "runs").exists()


def test_plain_progress_lines_when_not_on_a_terminal() -> None:
    console = Console(file=io.StringIO(), force_terminal=False, width=200, record=True)
    bar = PlainProgress(console, every_s=3600)
    task = bar.add_task("SFT seed 0", total=None, info="")
    for step in range(1, 101):
        bar.update(task, completed=step, total=100, info=f"loss {1 / step:.3f}")
    lines = console.export_text().splitlines()
    # the first update and the last; in between only every hour
    assert len(lines) == 2 and lines[0].startswith("SFT seed 0 1/100 | loss 1.000 | ")
    assert lines[1].startswith("SFT seed 0 100/100 | loss 0.010 | ") and "/s" in lines[1]
    assert progress_line("train", 30, 120, 60.0, "reward 0.5") == "train 30/120 | reward 0.5 | 0.50/s | ETA 3 min 00 s"
