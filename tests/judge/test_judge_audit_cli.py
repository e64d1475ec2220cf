from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import typer
from judge_chat_server import ScriptedChatServer, user_prompt
from typer.testing import CliRunner

from slate.cli.judge import register
from slate.data.records import QARecord
from slate.judge.items import items_from_episodes
from slate.judge.types import JudgeItem, JudgeVerdict
from slate.retrieval.base import Hit
from slate.rewards.judged import JudgedStepReward
from slate.rollout.actions import parse_step
from slate.rollout.episode import Episode, Step

CHAIN = [
    {"sub_question": "Who founded Velmora Labs?", "entity": "Velmora Labs", "relation": "founded_by",
     "answer": "Kesh Fenn", "doc_id": "d1"},
    {"sub_question": "Where was Kesh Fenn born?", "entity": "Kesh Fenn", "relation": "born_in",
     "answer": "Port Dalvin", "doc_id": "d2"},
]
RECORD = QARecord(id="q", question="Where was the founder of Velmora Labs born?", golden_answers=("Port Dalvin",),
                  metadata={"hops": 2, "chain": CHAIN})
FIRST = "<think> I need the founder of Velmora Labs. </think><search> Who founded Velmora Labs? </search>"
BROKEN = "<think> no action"
SECOND = "<think> Kesh Fenn founded it. </think><search> Where was Kesh Fenn born? </search>"
ANSWER = "<think> So the answer is Port Dalvin. </think><answer> Port Dalvin </answer>"


def _step(text: str, hits: list[Hit] | None = None, forced: bool = False) -> Step:
    return Step(text=text, parsed=parse_step(text), token_ids=[1], logprobs=[0.0], hits=hits or [],
                is_forced=forced)


def _episodes() -> list[Episode]:
    solved = Episode(record=RECORD, prompt_ids=[0], steps=[
        _step(FIRST, [Hit("d1", "Velmora Labs", "Founded by Kesh Fenn.", 1.0)]),
        _step(BROKEN),  # invalid: nothing to judge
        _step(SECOND, [Hit("d2", "Kesh Fenn", "Born in Port Dalvin.", 1.0), Hit("d9", "Other", "x", 0.5)]),
        _step(ANSWER)])
    forced = Episode(record=RECORD, prompt_ids=[0], steps=[_step("<answer> Port Dalvin </answer>", forced=True)])
    return [solved, forced]


def test_items_from_hand_built_episodes() -> None:
    items = items_from_episodes(_episodes())
    # steps 1, 3 and 4 of the first episode, two items each; the invalid step and the forced answer give none
    assert [(i.kind, i.text) for i in items] == [
        ("think", "I need the founder of Velmora Labs."), ("query", "Who founded Velmora Labs?"),
        ("think", "Kesh Fenn founded it."), ("query", "Where was Kesh Fenn born?"),
        ("think", "So the answer is Port Dalvin."), ("answer", "Port Dalvin")]
    # what was retrieved before each step; the step's own hits are not yet known to the judge
    assert [i.retrieved_ids for i in items] == [(), (), ("d1",), ("d1",), ("d1", "d2", "d9"), ("d1", "d2", "d9")]
    # step 3's context: step 1, its <information> block, then the invalid step 2, as the policy saw them
    assert items[2].context == (FIRST + "\n<information>Doc 1(Title: Velmora Labs) Founded by Kesh Fenn."
                                "</information>\n" + BROKEN)
    assert items[0].context == ""
    assert items[3].think == "Kesh Fenn founded it." and items[2].think == ""
    assert items[5].golden_answers == ("Port Dalvin",) and items[4].golden_answers == ()
    assert all(i.question == RECORD.question and i.chain == tuple(RECORD.chain) for i in items)


class RecordingJudge:
    name = "recording"

    def __init__(self) -> None:
        self.items: list[JudgeItem] = []

    def score(self, items: list[JudgeItem]) -> list[JudgeVerdict]:
        self.items += items
        return [JudgeVerdict(0, "") for _ in items]

    def metrics(self) -> dict[str, float]:
        return {}


def test_items_are_those_the_slate_reward_sends_to_its_judge() -> None:
    judge = RecordingJudge()
    expected = items_from_episodes(_episodes())
    JudgedStepReward(judge, max_steps=4).score_episodes(_episodes())
    assert judge.items == expected


runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from slate.world.build import build_world, write_world

    out = tmp_path_factory.mktemp("audit_world")
    write_world(build_world(7, "tiny"), out, seed=7, size="tiny")
    return out


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _audit(tmp_path: Path, world: Path, noise: float) -> tuple[str, dict[str, tuple[int, float, float]]]:
    """Run the audit on 40 scripted dev questions; returns stdout and {kind: (items, accuracy, kappa)}."""
    config = tmp_path / "judge.yaml"
    config.write_text(f"judge:\n  backend: oracle\n  noise: {noise}\n")
    report = tmp_path / "audit.md"
    result = runner.invoke(_app(), ["judge", "audit", "--judge", str(config), "--world", str(world), "--n", "40",
                                    "--out", str(report)])
    assert result.exit_code == 0, result.output
    rows = re.findall(r"^\| (think|query|answer) \| (\d+) \| ([\d.]+) \| ([-\d.]+) \| 0 \|$", report.read_text(),
                      re.MULTILINE)
    return result.output, {kind: (int(count), float(acc), float(kappa)) for kind, count, acc, kappa in rows}


def test_audit_of_the_exact_oracle_agrees_perfectly(tmp_path: Path, world: Path) -> None:
    output, table = _audit(tmp_path, world, noise=0.0)
    assert set(table) == {"think", "query", "answer"}
    assert all(acc == 1.0 and kappa == 1.0 for _, acc, kappa in table.values())
    assert table["answer"][0] == 40  # every scripted demonstration ends with one answer
    assert "1.000" in output and "oracle vs oracle" in output


def test_audit_of_a_noisy_oracle_matches_its_noise_rate(tmp_path: Path, world: Path) -> None:
    _, table = _audit(tmp_path, world, noise=0.3)
    assert all(acc < 1.0 and kappa < 1.0 for _, acc, kappa in table.values())
    # Each score is redrawn with p = 0.3 from {-1, 0, 1} and so changes with p·2/3 = 0.2: expected accuracy 0.8.
    # The draws are independent per item, so the pooled accuracy over N items has std sqrt(0.2·0.8/N) (N = 264 on
    # this world: std 0.025). 3 std fails a correct audit for 0.3% of noise seeds, yet rejects a judge never
    # redrawn (accuracy 1) and one whose redraws always change the score (0.7, 4 std away).
    total = sum(count for count, _, _ in table.values())
    pooled = sum(count * acc for count, acc, _ in table.values()) / total
    assert abs(pooled - (1 - 0.3 * 2 / 3)) <= 3 * math.sqrt(0.2 * 0.8 / total)


def test_audit_bad_inputs_exit_1_with_a_clear_message(tmp_path: Path, world: Path) -> None:
    missing = tmp_path / "no_such_judge.yaml"
    result = runner.invoke(_app(), ["judge", "audit", "--judge", str(missing), "--world", str(world)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())  # rich wraps long lines
    assert "no such config file" in text and "no_such_judge.yaml" in text and "Traceback" not in text
    config = tmp_path / "judge.yaml"
    config.write_text("judge:\n  backend: oracle\n  nosie: 0.1\n")  # misspelt key: an error, not a default
    result = runner.invoke(_app(), ["judge", "audit", "--judge", str(config), "--world", str(world)])
    assert result.exit_code == 1 and "nosie" in result.output
    config.write_text("judge:\n  backend: oracle\n")
    result = runner.invoke(_app(), ["judge", "audit", "--judge", str(config), "--world", str(world),
                                    "--policy", str(tmp_path / "no_policy")])
    assert result.exit_code == 1 and "no such policy directory" in " ".join(result.output.split())


def _openai_config(tmp_path: Path, base_url: str, extra: str = "", timeout_s: float = 2.0,
                   max_retries: int = 0) -> Path:
    config = tmp_path / "judge.yaml"
    config.write_text(f"judge:\n  backend: openai\n  base_url: {base_url}\n  model: m\n  api_key_env: "
                      f"SLATE_TEST_JUDGE_KEY\n  max_retries: {max_retries}\n  timeout_s: {timeout_s}\n"
                      f"  retry_base_delay_s: 0.1\n  max_concurrency: 4\n{extra}")
    return config


def test_audit_stops_when_the_judge_server_dies_mid_run(tmp_path: Path, world: Path, chat_server: ScriptedChatServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLATE_TEST_JUDGE_KEY", "k")
    chat_server.responder = lambda body: (200, "Fine. <score>1</score>", 0.0)
    chat_server.die_after = 10  # of about 100 items: the server is killed early in the audit
    report = tmp_path / "audit.md"
    result = runner.invoke(_app(), ["judge", "audit", "--judge", str(_openai_config(tmp_path, chat_server.base_url)),
                                    "--world", str(world), "--n", "15", "--out", str(report)])
    text = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "judge unavailable" in text and "judge.max_failure_share=0.5" in text and "Traceback" not in text
    assert "accuracy" not in text and not report.exists()  # no report counts the failed items as scores


def test_audit_with_a_model_the_server_does_not_serve_is_one_error(tmp_path: Path, world: Path,
                                                                   chat_server: ScriptedChatServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLATE_TEST_JUDGE_KEY", "k")
    chat_server.served_models = ["smollm2-judge"]  # the config asks for model m
    result = runner.invoke(_app(), ["judge", "audit", "--judge", str(_openai_config(tmp_path, chat_server.base_url)),
                                    "--world", str(world), "--n", "3"])
    text = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in text
    assert f"judge server {chat_server.base_url} does not serve judge.model='m'" in text
    assert "Set judge.model=smollm2-judge" in text and chat_server.request_count == 0


def test_audit_leaves_failed_items_out_of_the_agreement(tmp_path: Path, world: Path, chat_server: ScriptedChatServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLATE_TEST_JUDGE_KEY", "k")
    # Every think item gets a reply without a score (a failure); query and answer items are scored +1.
    chat_server.responder = lambda body: (200, "I am unsure." if "<<<BEGIN_THINKING>>>" in user_prompt(body)
                                          else "Fine. <score>1</score>", 0.0)
    report = tmp_path / "audit.md"
    # a generous timeout and retries: on a busy machine a slow reply must not add a failure to the count below
    config = _openai_config(tmp_path, chat_server.base_url, "  max_failure_share: 0.9\n", timeout_s=30.0,
                            max_retries=2)
    result = runner.invoke(_app(), ["judge", "audit", "--judge", str(config), "--world", str(world), "--n", "15",
                                    "--out", str(report)])
    assert result.exit_code == 0, result.output  # about half failed: below judge.max_failure_share=0.9
    rows = dict((kind, (int(n), acc, int(failed))) for kind, n, acc, failed in re.findall(
        r"^\| (think|query|answer) \| (\d+) \| ([\w.]+) \| [-\w.]+ \| (\d+) \|$", report.read_text(), re.MULTILINE))
    assert rows["think"][0] == 0 and rows["think"][1] == "nan" and rows["think"][2] > 0  # no score, not 0.3-ish
    assert rows["query"][2] == 0 and rows["answer"] == (15, rows["answer"][1], 0)


def test_audit_compares_agreement_with_and_without_the_prefix_budget(tmp_path: Path, world: Path) -> None:
    config = tmp_path / "judge.yaml"
    config.write_text("judge:\n  backend: oracle\n  max_context_chars: 20\n")
    report = tmp_path / "audit.md"
    result = runner.invoke(_app(), ["judge", "audit", "--judge", str(config), "--world", str(world), "--n", "10",
                                    "--out", str(report)])
    assert result.exit_code == 0, result.output
    text = report.read_text()
    passages = int(re.search(r"With judge.max_context_chars=20: (\d+) retrieved passages", text).group(1))
    assert passages > 0
    # the oracle reads gold chains, not passages: cutting them changes nothing, which the comparison shows
    assert re.search(r"^\| query \| 1.000 \| 1.000 \| 1.000 \| 1.000 \| 0 / 0 \|$", text, re.MULTILINE)
