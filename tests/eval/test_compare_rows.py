"""benchmarks/compare.py: two commands (one core each) fill one compare.json; no row may be lost to a race."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import shutil
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]


def _compare_module():
    spec = importlib.util.spec_from_file_location("compare_benchmark", REPO_ROOT / "benchmarks" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _append_many(raw_path: str, arm: str, count: int, ready) -> None:
    compare = _compare_module()
    ready.wait()  # both start appending together, so their read-modify-writes overlap
    for seed in range(count):
        compare.update_rows(Path(raw_path), lambda rows, seed=seed: [*rows, {"arm": arm, "seed": seed}])


def test_two_processes_appending_rows_lose_none(tmp_path: Path) -> None:
    raw = tmp_path / "compare.json"
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(2)
    workers = [context.Process(target=_append_many, args=(str(raw), arm, 200, ready))
               for arm in ("slate", "searchr1")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)  # each imports torch and slate first: slow on a loaded 2-core machine
        assert worker.exitcode == 0, f"exit code {worker.exitcode} (None: still running after 600 s)"
    rows = json.loads(raw.read_text())
    assert sorted((r["arm"], r["seed"]) for r in rows) == sorted((a, s) for a in ("slate", "searchr1")
                                                                 for s in range(200))
    assert not raw.with_suffix(".json.partial").exists()


def test_update_rows_replaces_the_start_row(tmp_path: Path) -> None:
    compare = _compare_module()
    raw = tmp_path / "compare.json"
    raw.write_text(json.dumps([{"arm": "start", "seed": 0, "test": {"em": 0.1}}, {"arm": "slate", "seed": 0}]))
    rows = compare.update_rows(raw, lambda rows: [{"arm": "start", "seed": 0, "test": {"em": 0.7}},
                                                  *[r for r in rows if r["arm"] != "start"]])
    assert rows == json.loads(raw.read_text())
    assert [(r["arm"], r.get("test")) for r in rows] == [("start", {"em": 0.7}), ("slate", None)]


def test_an_arm_curve_starts_at_the_start_point(tmp_path: Path, monkeypatch) -> None:
    """Every arm's dev curve begins with the start's evaluation at 0 tokens (a float there once broke the plot)."""
    import argparse
    from types import SimpleNamespace

    compare = _compare_module()

    class FakeTrainer:
        def __init__(self, config, records, retriever, init, run_dir, world, dev) -> None:
            self.run_dir, self.generated_tokens, self.state = run_dir, 1200, SimpleNamespace(step=2)
            self.policy = SimpleNamespace(model=torch.nn.Linear(3, 2))  # 8 parameters

        def train(self, resume: bool) -> None:
            self.run_dir.mkdir(parents=True)
            lines = [{"step": 1, "rollout/policy_tokens_total": 600, "rollout/searches": 2.0},
                     {"step": 2, "rollout/policy_tokens_total": 1200, "rollout/searches": 2.5, "eval/em": 0.5,
                      "eval/em_1hop": 0.75}]
            (self.run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))

    monkeypatch.setattr(compare, "Trainer", FakeTrainer)
    monkeypatch.setattr(compare, "read_qa_jsonl", lambda path: [])
    monkeypatch.chdir(REPO_ROOT)  # the presets are found by their repository paths
    args = argparse.Namespace(token_budget=1200, eval_every=1, dev_questions=10, checkpoint_every=1, override=[],
                              lr_of={}, eval_every_tokens=0, setting=[])
    start = compare.curve_point(0, 0.4, {"1": 0.6})
    row = compare.run_arm("slate", 0, args, None, tmp_path / "world", tmp_path / "sft", tmp_path / "runs", start)
    assert row["curve"] == [start, compare.curve_point(1200, 0.5, {"1": 0.75})]
    assert (row["policy_tokens"], row["steps"], row["policy_parameters"]) == (1200, 2, 8)


def test_a_stopped_run_under_another_rate_is_moved_aside_not_resumed(tmp_path: Path, monkeypatch) -> None:
    """The sweep replaced an arm's rate after a run of it stopped: its checkpoints are another run's; resuming them
    at the new rate would train a mixture."""
    import argparse

    from slate.trainer import checkpoint

    compare = _compare_module()
    resumed_from = {}

    class FakeTrainer:
        def __init__(self, config, records, retriever, init, run_dir, world, dev) -> None:
            self.run_dir = run_dir

        def train(self, resume: bool) -> None:
            resumed_from[self.run_dir] = checkpoint.latest_checkpoint(self.run_dir)
            raise RuntimeError("stop here")

    monkeypatch.setattr(compare, "Trainer", FakeTrainer)
    monkeypatch.setattr(compare, "read_qa_jsonl", lambda path: [])
    monkeypatch.chdir(REPO_ROOT)
    args = argparse.Namespace(token_budget=1200, eval_every=1, dev_questions=10, checkpoint_every=1, override=[],
                              lr_of={}, eval_every_tokens=0, setting=[])
    runs = tmp_path / "runs"

    def stopped_run(lr: float) -> None:
        staged = checkpoint.staging_dir(runs / "igpo_seed1", 30)
        compare.save_config(compare.arm_config("igpo", 1, args, tmp_path / "world", lr), staged / "config.yaml")
        (staged / checkpoint.TRAINER_STATE).write_bytes(b"state")
        checkpoint.commit(runs / "igpo_seed1", 30, keep=2)

    stopped_run(2e-5)
    with pytest.raises(RuntimeError, match="stop here"):
        compare.run_arm("igpo", 1, args, None, tmp_path / "world", tmp_path / "sft", runs, {}, lr=5e-5)
    assert resumed_from[runs / "igpo_seed1"] is None  # started afresh
    [aside] = [p for p in runs.iterdir() if p.name.startswith("igpo_seed1.replaced-")]
    assert checkpoint.latest_checkpoint(aside).name == "step-000030"  # the old run kept whole

    shutil.rmtree(runs)
    stopped_run(5e-5)  # stopped under the same config: continued
    with pytest.raises(RuntimeError, match="stop here"):
        compare.run_arm("igpo", 1, args, None, tmp_path / "world", tmp_path / "sft", runs, {}, lr=5e-5)
    assert resumed_from[runs / "igpo_seed1"].name == "step-000030"
    assert [p.name for p in runs.iterdir()] == ["igpo_seed1"]


def test_continued_sft_keeps_the_starts_own_demonstrator(tmp_path: Path) -> None:
    from slate.config import load_config, save_config

    compare = _compare_module()
    start = tmp_path / "start"
    start.mkdir()
    save_config(load_config(REPO_ROOT / "configs" / "tiny.yaml", ["sft.give_up_rate=0.25", "sft.skip_hop_rate=0.3"]),
                start / "slate_config.yaml")
    config = compare.continued_sft_config(start, tmp_path / "world", seed=2, wall_s=90.0)
    assert (config.sft.give_up_rate, config.sft.skip_hop_rate) == (0.25, 0.3)  # the start's habit, not the preset's
    assert (config.sft.seed, config.sft.time_limit_s, config.world.dir) == (102, 90.0, str(tmp_path / "world"))
    without_recipe = compare.continued_sft_config(tmp_path / "bare", tmp_path / "world", seed=0, wall_s=0.0)
    assert without_recipe.sft.give_up_rate == load_config(REPO_ROOT / "configs" / "tiny.yaml").sft.give_up_rate
    assert without_recipe.sft.time_limit_s == 1.0


def _sweep_row(arm: str, lr: float, seed: int, em: float) -> dict:
    hops = {h: {"em": em} for h in ("1", "2", "3", "4")}
    return {"arm": f"{arm}@lr{lr:g}", "seed": seed, "sweep_arm": arm, "sweep_lr": lr,
            "dev_final": {"em": em, "by_hops": hops}, "test": {"em": 0.0}}


def test_the_sweep_picks_the_best_final_dev_em_and_breaks_ties_downwards() -> None:
    compare = _compare_module()
    rows = [_sweep_row("slate", 2e-5, 0, 0.50), _sweep_row("slate", 5e-5, 0, 0.62), _sweep_row("slate", 1e-4, 0, 0.61),
            # a tie between 5e-5 and 1e-4 goes to the lower rate
            _sweep_row("searchr1", 1e-4, 0, 0.70), _sweep_row("searchr1", 5e-5, 0, 0.70),
            _sweep_row("searchr1", 2e-5, 0, 0.40),
            # two seeds: their mean decides (0.55 at 2e-5 against 0.60 at 1e-4)
            _sweep_row("stepsearch", 2e-5, 0, 0.90), _sweep_row("stepsearch", 2e-5, 1, 0.20),
            _sweep_row("stepsearch", 1e-4, 0, 0.60), _sweep_row("stepsearch", 1e-4, 1, 0.60),
            {"arm": "slate", "seed": 0, "test": {"em": 0.99}}]  # a comparison row is not a sweep point
    assert compare.pick_learning_rates(rows) == {"slate": 5e-5, "searchr1": 5e-5, "stepsearch": 1e-4}
    table = compare.sweep_table(rows).splitlines()
    assert table[2] == "| searchr1 | 2e-05 | 1 | 0.400 | 0.400 | 0.400 | 0.400 | 0.400 |  |"
    assert "| stepsearch | 2e-05 | 2 | 0.550 | 0.550 | 0.550 | 0.550 | 0.550 |  |" in table
    assert sum("**yes**" in line for line in table) == 3


def _arm_args(lr_of: dict[str, float]):
    """The command-line values ``compare.arm_config`` reads, for a tiny comparison."""
    import argparse

    return argparse.Namespace(token_budget=1200, eval_every=1, dev_questions=10, checkpoint_every=1, override=[],
                              lr_of=lr_of, eval_every_tokens=0, setting=[])


def test_the_comparison_reuses_the_sweeps_run_only_when_its_config_is_the_same(monkeypatch) -> None:
    compare = _compare_module()
    monkeypatch.chdir(REPO_ROOT)
    args = _arm_args({"slate": 5e-5})
    world = Path("runs/world")
    swept = {**_sweep_row("slate", 5e-5, 0, 0.6), "config": compare.arm_config("slate", 0, args, world, lr=5e-5)
             .model_dump(mode="json")}
    other_lr = {**_sweep_row("slate", 1e-4, 0, 0.7), "config": compare.arm_config("slate", 0, args, world, lr=1e-4)
                .model_dump(mode="json")}
    rows = [other_lr, swept]
    adopted = compare.adopt_sweep_row(rows, "slate", 0, compare.arm_config("slate", 0, args, world))
    assert adopted["arm"] == "slate" and adopted["adopted_from"] == "slate@lr5e-05"
    assert "sweep_lr" not in adopted and adopted["config"]["trainer"]["lr"] == 5e-5
    assert compare.adopt_sweep_row(rows, "slate", 1, compare.arm_config("slate", 1, args, world)) is None  # seed
    args.lr_of = {"slate": 2e-5}
    assert compare.adopt_sweep_row(rows, "slate", 0, compare.arm_config("slate", 0, args, world)) is None  # rate


def test_a_comparison_run_at_a_swept_rate_is_that_point_of_the_sweep(monkeypatch) -> None:
    compare = _compare_module()
    monkeypatch.chdir(REPO_ROOT)
    args = _arm_args({"igpo": 2e-5})
    world = Path("runs/world")
    seed_row = {"arm": "igpo", "seed": 0, "dev_final": {"em": 0.86}, "test": {"em": 0.85},
                "config": compare.arm_config("igpo", 0, args, world).model_dump(mode="json")}
    rows = [seed_row, {**seed_row, "seed": 1}]
    point = compare.reuse_as_sweep_point(rows, "igpo", 0, 2e-5, compare.arm_config("igpo", 0, args, world, 2e-5))
    assert point["arm"] == "igpo@lr2e-05" and (point["sweep_arm"], point["sweep_lr"]) == ("igpo", 2e-5)
    assert point["adopted_from"] == "igpo" and point["dev_final"]["em"] == 0.86
    assert compare.pick_learning_rates([point]) == {"igpo": 2e-5}
    # a row written before a config field existed is the same run when the field's default is this config's value
    older = {**seed_row, "config": {**seed_row["config"], "judge": dict(seed_row["config"]["judge"])}}
    del older["config"]["judge"]["max_reasoning_chars"]
    config = compare.arm_config("igpo", 0, args, world, 2e-5)
    assert compare.reuse_as_sweep_point([older], "igpo", 0, 2e-5, config)["adopted_from"] == "igpo"
    assert compare.reuse_as_sweep_point([older], "igpo", 0, 2e-5, config.model_copy(
        update={"judge": config.judge.model_copy(update={"max_reasoning_chars": 160})})) is None
    renamed = {**older, "config": {**older["config"], "judge": {**older["config"]["judge"], "reasoning_cap": 400}}}
    assert compare.reuse_as_sweep_point([renamed], "igpo", 0, 2e-5, config) is None  # a field this version lacks
    # another rate or seed is another run
    assert compare.reuse_as_sweep_point(rows, "igpo", 0, 5e-5, compare.arm_config("igpo", 0, args, world, 5e-5)) \
        is None
    assert compare.reuse_as_sweep_point(rows, "igpo", 2, 2e-5, compare.arm_config("igpo", 2, args, world, 2e-5)) \
        is None


def test_swept_rates_give_each_slate_variant_the_slate_pick() -> None:
    compare = _compare_module()
    picks = {"slate": 1e-4, "searchr1": 5e-5, "slate_em": 2e-5}
    arms = ["searchr1", "stepsearch", "slate", "slate_full", "slate_em", "slate_noise0.1", "continued_sft"]
    assert compare.swept_rates(picks, arms) == {"searchr1": 5e-5, "slate": 1e-4, "slate_full": 1e-4,
                                                "slate_em": 2e-5, "slate_noise0.1": 1e-4}


def test_rows_at_another_rate_leave_the_report_but_not_the_file() -> None:
    compare = _compare_module()
    rows = [{"arm": "start", "seed": 0},
            {"arm": "slate", "seed": 0, "config": {"trainer": {"lr": 5e-5}}},
            {"arm": "slate", "seed": 1, "config": {"trainer": {"lr": 2e-5}}},
            {"arm": "searchr1", "seed": 0, "config": {"trainer": {"lr": 5e-5}}},
            {"arm": "continued_sft", "seed": 0}]
    out = compare.supersede_other_rates(rows, "slate", 2e-5)
    assert [r["arm"] for r in out] == ["start", "slate (lr 5e-05, superseded)", "slate", "searchr1", "continued_sft"]
    assert "superseded" in out[1] and out[1]["seed"] == 0 and out[1]["config"] == rows[1]["config"]
    assert all("superseded" not in r for r in out[2:])
    assert compare.supersede_other_rates(out, "slate", 2e-5) == out  # idempotent


def test_dense_evaluation_marks_and_a_setting_reach_every_arms_config(monkeypatch) -> None:
    import argparse

    compare = _compare_module()
    monkeypatch.chdir(REPO_ROOT)
    args = argparse.Namespace(token_budget=100_000, eval_every=0, dev_questions=96, checkpoint_every=5, override=[],
                              lr_of={}, eval_every_tokens=16_000, dense_until=50_000, eval_every_tokens_after=20_000,
                              setting=[Path("configs/hardness/hard.yaml")])
    # every 16k up to 50k (16k, 32k, 48k), then every 20k from the last dense mark up to the budget
    assert compare.eval_marks(args) == [16_000, 32_000, 48_000, 68_000, 88_000]
    for arm in ("searchr1", "slate_ig", "slate_noise0.2"):
        config = compare.arm_config(arm, 1, args, Path("runs/world-hops6"))
        assert config.trainer.eval_at_tokens == compare.eval_marks(args)
        assert config.rollout.budget_slack == 2 and config.trainer.questions_per_step == 16  # the setting's
        assert config.world.dir == "runs/world-hops6" and config.trainer.seed == 1
    assert compare.swept_rates({"slate": 1e-5, "slate_ig": 2e-5}, ["slate_noise0.2", "slate_ig", "slate_full"]) == \
        {"slate_noise0.2": 1e-5, "slate_ig": 2e-5, "slate_full": 1e-5}


def test_a_run_is_claimed_by_one_process_and_a_dead_claim_is_taken_over(tmp_path: Path) -> None:
    import subprocess
    import sys

    compare = _compare_module()
    runs = tmp_path / "runs"
    assert compare.claim(runs, "slate", 0)  # this process holds it
    assert not compare.claim(runs, "slate", 0)  # a live holder: no second claim
    compare.release(runs, "slate", 0)
    assert compare.claim(runs, "slate", 0)
    compare.release(runs, "slate", 0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (runs / "searchr1_seed1.claim").write_text(dead.stdout.strip())  # the PID of a process that has exited
    assert compare.claim(runs, "searchr1", 1)
    assert (runs / "searchr1_seed1.claim").read_text() == str(__import__("os").getpid())
