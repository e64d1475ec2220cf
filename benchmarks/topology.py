"""The production topology in miniature: a retrieval server, a vLLM rollout server, a vLLM judge server and two
trainer processes (accelerate, gloo), started together, trained through, checked, and stopped.

    python benchmarks/topology.py --out runs/topology            # make cluster-demo
    python benchmarks/topology.py --out runs/topology --quick    # what `make test` runs (tests/integration)

| process | here | on 8 x H100 (docs/gpu.md) |
|---|---|---|
| retrieval | `slate serve-retriever` over a BM25 index of the world | E5 over wiki-18 behind `/retrieve` |
| rollouts | `slate serve-policy --lora` (vLLM CPU, float32) | vLLM servers, one per GPU set aside |
| judge | `slate serve-judge` (SmolLM2-135M-Instruct from its GGUF, vLLM) | Gemma-3-27B on vLLM |
| trainer | `accelerate launch` with `configs/accelerate/cpu.yaml` (2 processes) | `configs/accelerate/ddp.yaml` (8) |

Stages: a world and a short warm start (a policy whose head size vLLM's CPU kernels take), the three servers (each
printed with where it listens), then the runs, their output streamed with a prefix:
1. SLATE with LoRA sync and the judge server, 2 RL steps at a learning rate large enough that one step moves the
   policy's log-probs by more than 0.1 nats (``rollout/update_shift``): the next step's ``rollout/logprob_gap``, far
   below it, shows the server holds the adapter just trained, not the base model.
2. Search-R1 with full sync (``--searchr1-steps``), dev EM of the start and of the result, in-process and greedy.
3. The Search-R1 run again, stopped after its first step and resumed through the servers: the same parameters and
   metrics as without the stop.
4. ``--faults``: the judge, the retrieval and the rollout server each killed in the middle of a step of a
   two-process run, in turn: both ranks stop with one clear error, within bounded time, the last checkpoint intact.

Every process it started is stopped at the end, on Ctrl-C and on a failure. ``OUT/summary.json`` holds what the
runs showed: ranks, params_equal, policy_versions, logprob_gap_max (the largest step's mean gap between the server's
and the trainer's log-probs; logprob_gap_token_max: its worst token), update_shift, judge_calls, judge_failures,
weight pushes per rank, disjoint questions, dev_em_before / dev_em_after, and the faults.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SLATE = [PYTHON, "-m", "slate.cli.main"]
ACCELERATE = [str(Path(PYTHON).parent / "accelerate"), "launch", "--config_file",
              str(REPO / "configs" / "accelerate" / "cpu.yaml")]
# the warm start: a head size of 32 (vLLM's CPU attention has kernels for it), a give-up habit on the last hop of
# 2-4-hop questions (headroom Search-R1 can win back), 200 steps (--quick) to 2,000
SFT = ["model.source=tiny", "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
       "model.tiny.intermediate_size=128", "model.tiny.max_positions=1024", "sft.lr=0.01", "sft.warmup_steps=10",
       "sft.bf16_autocast=false", "sft.redraw_demonstrations=true", "sft.give_up_rate=0.6", "sft.give_up_min_hops=2",
       "rollout.max_steps=5", "rollout.max_step_tokens=64", "rollout.max_information_tokens=240"]
RUN = ["rollout.backend=vllm", "rollout.measure_update_shift=true", "trainer.num_processes=2",
       "trainer.checkpoint_every=1", "trainer.collective_timeout_s=300", "trainer.bf16_autocast=false",
       "rollout.server_timeout_s=60", "rollout.server_retries=2", "retrieval.max_retries=2", "retrieval.timeout_s=10",
       "judge.timeout_s=180", "judge.max_retries=2", "judge.max_new_tokens=192",
       "judge.max_reasoning_chars=160", "trainer.eval_every=0",
       "trainer.log_episodes_every=0"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Processes:
    """Every process this command starts, each in its own process group, stopped together (``stop_all``)."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("w")
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env or os.environ.copy(),
                                   start_new_session=True, cwd=REPO)
        self.running[name] = process
        return process

    def stop(self, name: str, kill: bool = False) -> None:
        """SIGTERM (the server stops its vLLM engine itself), or ``kill``: SIGKILL to the process and everything it
        started, as a crash looks (``serve-policy`` runs vLLM in a session of its own, which a killed parent
        would leave behind)."""
        process = self.running.pop(name, None)
        if process is None or process.poll() is not None:
            return
        tree = [process.pid, *descendants(process.pid)]
        for pid in tree if kill else [process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        for pid in tree:  # whatever is left: a server that ignored SIGTERM, an engine process
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def wait_ready(url: str, process: subprocess.Popen, name: str, log: Path, timeout_s: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process.poll() is not None:
            raise SystemExit(f"the {name} exited with code {process.returncode} before it was ready; its log: {log}")
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(1.0)
    raise SystemExit(f"the {name} was not ready at {url} after {timeout_s:.0f} s; its log: {log}")


def run_streamed(argv: list[str], prefix: str, log: Path, env: dict[str, str], timeout_s: float,
                 on_line=None) -> tuple[int, float]:
    """Run ``argv`` (its own process group), print its lines with ``prefix`` and keep them in ``log``; kill the
    group past ``timeout_s``. Returns (exit code, seconds)."""
    start = time.monotonic()
    with log.open("w") as sink:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                   cwd=REPO, start_new_session=True)
        timer = threading.Timer(timeout_s, lambda: os.killpg(process.pid, signal.SIGKILL))
        timer.start()
        try:
            for line in process.stdout:
                sink.write(line)
                sink.flush()
                print(f"[{prefix}] {line.rstrip()}", flush=True)
                if on_line is not None:
                    on_line(line)
            process.wait()
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        finally:
            timer.cancel()
    return process.returncode, time.monotonic() - start


def metrics_of(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def rank_reports(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((run / "ranks").glob("rank*.json"))]


def error_lines(log: Path) -> list[str]:
    """The one-line errors the ranks printed (``error: …``), in order."""
    return [line.strip() for line in log.read_text().splitlines() if line.strip().startswith("error:")]


def warm_start(out: Path, steps: int) -> tuple[Path, Path]:
    from slate.config import load_config, save_config
    from slate.data.records import read_qa_jsonl
    from slate.retrieval.bm25 import Bm25Retriever
    from slate.trainer.sft import train_sft
    from slate.world.build import build_world, write_world

    world, sft = out / "world", out / "sft"
    if not (world / "corpus.jsonl").is_file():
        write_world(build_world(seed=0, size="tiny"), world, seed=0, size="tiny")
    index = out / "index"
    if not (index / "params.index.json").exists() and not any(index.glob("*")):
        Bm25Retriever.from_corpus(world / "corpus.jsonl").save(index)
    if not (sft / "model.safetensors").is_file():
        config = load_config(REPO / "configs" / "tiny.yaml", [f"world.dir={world}", f"sft.max_steps={steps}", *SFT])
        print(f"[topology] warm start: {steps} SFT steps on {world}", flush=True)
        train_sft(config, read_qa_jsonl(world / "train.jsonl"), Bm25Retriever.from_corpus(world / "corpus.jsonl"),
                  world, sft)
        save_config(config, sft / "slate_config.yaml")
    return world, sft


def dev_em(policy: Path, world: Path, questions: int) -> dict:
    from slate.config import load_config
    from slate.data.records import read_qa_jsonl
    from slate.eval.evaluate import evaluate
    from slate.retrieval.bm25 import Bm25Retriever
    from slate.rollout.engine import RolloutEngine
    from slate.rollout.policy import load_hf_policy

    config = load_config(REPO / "configs" / "searchr1-tiny.yaml", [f"world.dir={world}"])
    engine = RolloutEngine(load_hf_policy(policy), Bm25Retriever.from_corpus(world / "corpus.jsonl"), config.rollout,
                           config.retrieval.top_k)
    result, _ = evaluate(engine, read_qa_jsonl(world / "dev.jsonl")[:questions])
    return {"em": result["em"], "by_hops": {h: r["em"] for h, r in result.get("by_hops", {}).items()},
            "questions": result["n"]}


class Topology:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = args.out
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.processes = Processes(self.logs)
        self.ports = {name: free_port() for name in ("retriever", "policy", "judge")}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": "local", "PYTHONUNBUFFERED": "1"}

    # -- the servers ---------------------------------------------------------------------------------------------
    def start_retriever(self) -> None:
        process = self.processes.start("retriever", [*SLATE, "serve-retriever", "--index", str(self.out / "index"),
                                                     "--port", str(self.ports["retriever"])], self.env)
        wait_ready(f"{self.urls['retriever']}/health", process, "retrieval server", self.logs / "retriever.log", 120)

    def start_servers(self, sft: Path) -> dict[str, float]:
        judge_model = self.args.judge_model
        if judge_model == "smollm2":  # exported once from the offline GGUF, kept for the next run
            judge_model = str(self.out / "judge_model")
            if not (Path(judge_model) / "config.json").is_file():
                subprocess.run([*SLATE, "export-model", "smollm2", "--out", judge_model], check=True, env=self.env,
                               cwd=REPO)
        policy = self.processes.start("policy", [*SLATE, "serve-policy", "--policy", str(sft), "--lora",
                                                 "--port", str(self.ports["policy"]), "--max-lora-rank", "16"],
                                      self.env)
        judge = self.processes.start("judge", [*SLATE, "serve-judge", "--model", judge_model,
                                               "--port", str(self.ports["judge"]),
                                               "--served-model-name", "smollm2-judge"], self.env)
        self.start_retriever()
        ready = {"policy": wait_ready(f"{self.urls['policy']}/v1/models", policy, "rollout server",
                                      self.logs / "policy.log", 900),
                 "judge": wait_ready(f"{self.urls['judge']}/v1/models", judge, "judge server",
                                     self.logs / "judge.log", 900)}
        for name, url in self.urls.items():
            print(f"[topology] {name} server listening at {url} (log: {self.logs / (name + '.log')})", flush=True)
        return ready

    # -- the runs ------------------------------------------------------------------------------------------------
    def train_argv(self, preset: str, sft: Path, world: Path, run: Path, extra: list[str]) -> list[str]:
        urls = self.urls
        return [*ACCELERATE, "--main_process_port", str(free_port()), "-m", "slate.cli.main", "train",
                "--config", str(REPO / "configs" / preset), "--init", str(sft), "--out", str(run), "--world",
                str(world), *RUN, f"rollout.server_urls=[{urls['policy']}]", "retrieval.backend=http",
                f"retrieval.url={urls['retriever']}/retrieve", "judge.backend=openai",
                f"judge.base_url={urls['judge']}/v1", "judge.model=smollm2-judge", "judge.structured_output=vllm",
                *extra]

    def slate_lora(self, sft: Path, world: Path) -> dict:
        run = self.out / "slate_lora"
        argv = self.train_argv("slate-tiny.yaml", sft, world, run, [
            "rollout.weight_sync=lora", "trainer.lora_rank=8", "trainer.lora_alpha=16", "trainer.lr=0.05",
            f"rollout.group_size={self.args.group_size}",
            "trainer.steps=2", f"trainer.questions_per_step={self.args.questions}", "trainer.warmup_steps=0"])
        code, seconds = run_streamed(argv, "slate", self.logs / "slate_lora.log", self.env, self.args.run_timeout)
        if code != 0:
            raise SystemExit(f"the SLATE run through the topology failed (exit {code}); log: "
                             f"{self.logs / 'slate_lora.log'}")
        return {"seconds": seconds, **self.describe(run)}

    def searchr1_full(self, sft: Path, world: Path) -> dict:
        run = self.out / "searchr1_full"
        argv = self.train_argv("searchr1-tiny.yaml", sft, world, run, [
            "rollout.weight_sync=full", f"trainer.steps={self.args.searchr1_steps}", f"trainer.lr={self.args.lr}",
            f"trainer.questions_per_step={self.args.questions}", "trainer.warmup_steps=0"])
        code, seconds = run_streamed(argv, "searchr1", self.logs / "searchr1_full.log", self.env,
                                     self.args.run_timeout)
        if code != 0:
            raise SystemExit(f"the Search-R1 run through the topology failed (exit {code}); log: "
                             f"{self.logs / 'searchr1_full.log'}")
        return {"seconds": seconds, **self.describe(run)}

    def resumed(self, sft: Path, world: Path, reference: Path) -> dict:
        """Search-R1 through the servers again, stopped after step 1 and resumed (``--resume``) to the same end as
        the uninterrupted ``reference`` run: the same parameters (digest) and the same non-timing metrics."""
        run = self.out / "searchr1_resumed"
        base = ["rollout.weight_sync=full", f"trainer.lr={self.args.lr}", "trainer.warmup_steps=0",
                f"trainer.questions_per_step={self.args.questions}"]
        for steps, resume in ((1, []), (self.args.searchr1_steps, ["--resume"])):
            argv = self.train_argv("searchr1-tiny.yaml", sft, world, run, [*base, f"trainer.steps={steps}"])
            argv[argv.index("train") + 1:argv.index("train") + 1] = resume
            code, _ = run_streamed(argv, "resume", self.logs / f"searchr1_resumed_{steps}.log", self.env,
                                   self.args.run_timeout)
            if code != 0:
                raise SystemExit(f"the resumed Search-R1 run failed (exit {code}); log: {self.logs}")
        ours, theirs = metrics_of(run), metrics_of(reference)
        timing = ("time/", "rollout/synced_version")  # seconds differ; the versions pushed are the same
        differing = sorted({key for a, b in zip(ours, theirs, strict=False) for key in a
                            if not key.startswith(timing) and key in b and a[key] != b[key]})
        return {"params_equal_to_uninterrupted": {r["params_sha256"] for r in rank_reports(run)}
                == {r["params_sha256"] for r in rank_reports(reference)},
                "steps": [m["step"] for m in ours], "metrics_differing": differing}

    @staticmethod
    def describe(run: Path) -> dict:
        steps, ranks = metrics_of(run), rank_reports(run)
        questions = [set(r["questions"]) for r in ranks]
        return {"ranks": len(ranks), "steps": len(steps),
                "params_equal": len({r["params_sha256"] for r in ranks}) == 1 and len(ranks) > 1,
                "questions_disjoint": all(not (a & b) for i, a in enumerate(questions) for b in questions[i + 1:]),
                "weight_pushes": [r["weight_pushes"] for r in ranks],
                "policy_versions": [int(m["rollout/policy_version"]) for m in steps],
                "synced_versions": [int(m["rollout/synced_version"]) for m in steps],
                # per step: the mean |server - trainer| log-prob over the step's sampled tokens (the gap), and the
                # worst single token (float32 kernels of vLLM and torch differ by ~1e-5 on a few tokens)
                "logprob_gap": [m["rollout/logprob_gap"] for m in steps],
                "logprob_gap_max": max((m["rollout/logprob_gap"] for m in steps), default=None),
                "logprob_gap_token_max": max((m["rollout/logprob_gap_max"] for m in steps), default=None),
                "update_shift": [m.get("rollout/update_shift") for m in steps],
                "judge_calls": sum(m.get("judge/calls", 0.0) for m in steps),
                "judge_failures": sum(m.get("judge/failures", 0.0) for m in steps),
                "judge_failed_verdicts": sum(m.get("judge/failed_verdicts", 0.0) for m in steps),
                "searches": sum(m.get("retrieval/searches", 0.0) for m in steps),
                "failed_searches": sum(m.get("retrieval/failed_searches", 0.0) for m in steps),
                "server_retries": sum(m.get("rollout/server_retries", 0.0) for m in steps)}

    # -- the faults ----------------------------------------------------------------------------------------------
    def fault(self, server: str, preset: str, sft: Path, world: Path, extra: list[str]) -> dict:
        """A two-process run whose ``server`` is killed once step 2 has started (after step 1's checkpoint)."""
        run = self.out / f"fault_{server}"
        argv = self.train_argv(preset, sft, world, run, ["trainer.steps=4", f"trainer.questions_per_step="
                                                                            f"{self.args.questions}", *extra])
        killed: dict[str, float] = {}

        def kill_when_step_two_runs(line: str) -> None:
            if not killed and (run / "checkpoints" / "step-000001" / "trainer_state.pt").is_file():
                time.sleep(2.0)  # inside step 2: its requests are in flight
                self.processes.stop(server, kill=True)
                killed["at"] = time.monotonic()
                print(f"[topology] killed the {server} server during step 2", flush=True)

        watcher = threading.Thread(target=self._watch_checkpoint, args=(run, kill_when_step_two_runs), daemon=True)
        watcher.start()
        code, _ = run_streamed(argv, f"fault:{server}", self.logs / f"fault_{server}.log", self.env,
                               self.args.run_timeout)
        watcher.join(timeout=5)
        errors = error_lines(self.logs / f"fault_{server}.log")
        checkpoints = sorted(p.name for p in (run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() \
            else []
        # the kill lands in step 2; whether that step's searches were already made decides if the error comes at
        # step 2 or 3: either way every step trained (logged) has its checkpoint, the failed one neither
        return {"server": server, "exit_code": code, "killed": bool(killed),
                "seconds_after_kill": round(time.monotonic() - killed["at"], 1) if killed else None,
                "rank_errors": errors, "checkpoints": checkpoints, "steps_logged": len(metrics_of(run)),
                "last_checkpoint_intact": bool(checkpoints)
                and (run / "checkpoints" / checkpoints[-1] / "trainer_state.pt").is_file()}

    @staticmethod
    def _watch_checkpoint(run: Path, act) -> None:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            if (run / "checkpoints" / "step-000001" / "trainer_state.pt").is_file():
                act("")
                return
            time.sleep(0.5)

    def faults(self, sft: Path, world: Path) -> list[dict]:
        """The judge first (SLATE needs it), then the retriever and the rollout server under Search-R1; the
        retriever is started again between the last two (it is cheap; vLLM is not)."""
        # one retry per failed search or rollout request: the run still rides out a blip, and a dead server is
        # declared in seconds, not after every search of the step has waited through three backoffs (~50 s); the
        # retries themselves are tested in tests/reliability/test_outages.py
        lora = ["rollout.weight_sync=lora", "trainer.lora_rank=8", "retrieval.max_retries=1",
                "rollout.server_retries=1"]
        results = [self.fault("judge", "slate-tiny.yaml", sft, world,
                              [*lora, f"rollout.group_size={self.args.group_size}"])]
        results.append(self.fault("retriever", "searchr1-tiny.yaml", sft, world, lora))
        self.start_retriever()
        results.append(self.fault("policy", "searchr1-tiny.yaml", sft, world, lora))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true",
                        help="the test's size: a shorter warm start, 2 Search-R1 steps, the faults")
    parser.add_argument("--faults", action="store_true", help="kill each server in the middle of a run, in turn")
    parser.add_argument("--sft-steps", type=int, default=2000,
                        help="warm-start SFT steps: 2,000 solve one hop (dev EM 0.9) and leave 2-4 hops to the "
                             "give-up habit, which Search-R1 can unlearn (600 solved 3 of 10 one-hop questions and "
                             "left Search-R1 nothing to find)")
    parser.add_argument("--searchr1-steps", type=int, default=12)
    parser.add_argument("--questions", type=int, default=8, help="questions per RL step (both ranks together)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Search-R1's learning rate")
    parser.add_argument("--group-size", type=int, default=5,
                        help="SLATE's siblings per prefix (k): every sibling is judged on the CPU judge server")
    parser.add_argument("--dev-questions", type=int, default=40)
    parser.add_argument("--judge-model", default="smollm2", help="a model directory, or smollm2 (exported)")
    parser.add_argument("--run-timeout", type=float, default=3600)
    args = parser.parse_args()
    if args.quick:
        args.sft_steps, args.searchr1_steps, args.questions, args.faults = 200, 2, 2, True
        args.group_size = 3
    args.out.mkdir(parents=True, exist_ok=True)
    topology = Topology(args)

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds into the finally below, which stops every process

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = time.monotonic()
    summary: dict = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        world, sft = warm_start(args.out, args.sft_steps)
        summary["servers_ready_s"] = topology.start_servers(sft)
        summary["servers"] = topology.urls
        summary["slate_lora"] = topology.slate_lora(sft, world)
        summary["searchr1_full"] = topology.searchr1_full(sft, world)
        summary["resumed"] = topology.resumed(sft, world, args.out / "searchr1_full")
        if args.faults:
            summary["faults"] = topology.faults(sft, world)
    finally:
        topology.processes.stop_all()
    from slate.runtime import describe_cpu

    slate, searchr1 = summary["slate_lora"], summary["searchr1_full"]
    summary |= {
        "ranks": slate["ranks"], "params_equal": slate["params_equal"] and searchr1["params_equal"],
        "policy_versions": slate["policy_versions"],
        "logprob_gap_max": max(slate["logprob_gap_max"], searchr1["logprob_gap_max"]),
        "logprob_gap_token_max": max(slate["logprob_gap_token_max"], searchr1["logprob_gap_token_max"]),
        "update_shift": slate["update_shift"][0], "judge_calls": slate["judge_calls"],
        "judge_failures": slate["judge_failures"],
        "dev_em_before": dev_em(sft, world, args.dev_questions),
        "dev_em_after": dev_em(args.out / "searchr1_full" / "policy", world, args.dev_questions),
        "seconds": round(time.monotonic() - started), "machine": {**describe_cpu(), "processor": platform.processor()}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({key: summary[key] for key in ("ranks", "params_equal", "policy_versions", "logprob_gap_max",
                                                     "update_shift", "judge_calls", "judge_failures")}))
    print(f"dev EM {summary['dev_em_before']['em']:.3f} -> {summary['dev_em_after']['em']:.3f}; summary: "
          f"{args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
